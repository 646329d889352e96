"""sigmastar cost models: model figures + scenario + prices -> dollars, itemized.

Imports no torch: model figures are read as plain data (see :class:`ModelFigures`).

    from cost_models import CostModel, Scenario, ServingPlan, ModelFigures
    model = CostModel(Scenario(serving=ServingPlan(avg_requests_per_s=50, horizon_months=12)))
    print(model.estimate(figures).to_table())

Heavy dependencies (scipy, pandas, matplotlib) are imported only by the functions that use them.
"""

from .breakdown import CostBreakdown, InfeasibleCostError
from .components import COMPONENTS, LineItem, c_data, c_hardware, c_human, c_train_deploy
from .figures import ModelFigures, devices_that_fit, figures_from, require_fit
from .model import CostModel
from .prices import PriceBook, PriceRow
from .scenario import (DataPlan, Ownership, PeoplePlan, Scenario, ServingPlan, TrainingPlan,
                       technique_defaults)
from .usage import Usage, compute_usage
from .analysis import (BreakEven, Option, SensitivityResult, UncertaintyResult, break_even,
                       sensitivity, uncertainty)
from .knobs import knob_names
from .plots import tornado_plot

__all__ = [
    "Scenario", "TrainingPlan", "ServingPlan", "DataPlan", "PeoplePlan", "Ownership",
    "PriceBook", "PriceRow",
    "CostModel", "CostBreakdown", "LineItem", "InfeasibleCostError", "COMPONENTS",
    "ModelFigures", "figures_from", "devices_that_fit", "require_fit",
    "Usage", "compute_usage", "c_hardware", "c_train_deploy", "c_data", "c_human",
    "technique_defaults",
    "Option", "break_even", "BreakEven", "sensitivity", "SensitivityResult", "uncertainty",
    "UncertaintyResult", "knob_names", "tornado_plot",
]
