"""CostModel: a scenario and a price book; prices model figures into a :class:`CostBreakdown`.

    >>> from cost_models import CostModel, Scenario, ServingPlan, ModelFigures
    >>> model = CostModel(Scenario(serving=ServingPlan(avg_requests_per_s=50, horizon_months=1)))
    >>> fig = ModelFigures("H100-SXM", "bf16", 8, 0.02, None, 2 * 10**9, None, 10**9, "by hand")
    >>> round(model.estimate(fig).total_usd, 2)      # 1 replica x 730 h x $6.88 + artifact storage
    5022.42
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from profilers.config import invalid, serializable

from .breakdown import CostBreakdown
from .components import all_items
from .figures import ModelFigures, figures_from
from .prices import PriceBook
from .scenario import Scenario
from .usage import Infeasible, compute_usage

__all__ = ["CostModel"]


def _name_of(obj: Any, figures: ModelFigures) -> str:
    for attr in ("model_name", "model", "name"):
        v = getattr(obj, attr, None)
        if isinstance(v, str) and v:
            return v
    return f"the model ({figures.provenance})"


@serializable("cost_models.cost_model")
@dataclass(frozen=True)
class CostModel:
    """Prices model figures for one :class:`Scenario` using one :class:`PriceBook`."""

    scenario: Scenario = field(default_factory=Scenario)
    prices: PriceBook = field(default_factory=PriceBook.default)

    def __post_init__(self) -> None:
        if not isinstance(self.scenario, Scenario):
            raise invalid("CostModel", "scenario", "a Scenario", type(self.scenario).__name__)
        if not isinstance(self.prices, PriceBook):
            raise invalid("CostModel", "prices", "a PriceBook", type(self.prices).__name__)

    def estimate(self, figures: Any, train_figures: Any = None, *, model_name: str | None = None) -> CostBreakdown:
        """Price ``figures`` (serving; also training unless ``train_figures`` is given).

        ``figures`` may be a :class:`ModelFigures`, a Profile, a Projection or any object with the
        same attributes. A plan that cannot run (latency above the SLO, model larger than the
        device) comes back with ``status == "infeasible"`` and a message saying how to fix it;
        call ``.raise_for_status()`` to turn that into an exception. Bad inputs (negative or
        missing prices, unknown devices) raise ConfigError straight away.
        """
        fig = figures_from(figures)
        tfig = figures_from(train_figures) if train_figures is not None else None
        name = model_name or _name_of(figures, fig)
        prov = [f"serving figures: {fig.provenance}"]
        if tfig is not None:
            prov.append(f"training figures: {tfig.provenance}")
        try:
            usage = compute_usage(fig, self.scenario, tfig, model_name=name)
        except Infeasible as e:
            return CostBreakdown(self.scenario.name, name, fig.device, (tfig or fig).device, status="infeasible",
                                 message=str(e), provenance=tuple(prov))
        items = all_items(usage, self.scenario, self.prices)
        low, high = self._band(fig, tfig, name)
        return CostBreakdown(self.scenario.name, name, usage.serve_device, usage.train_device, items,
                             requests=usage.requests, training_runs=usage.training_runs, replicas=usage.replicas,
                             provenance=tuple(prov), low_usd=low, high_usd=high)

    def _band(self, fig: ModelFigures, tfig: ModelFigures | None, name: str) -> tuple[float | None, float | None]:
        """Totals with every projected time at the low and at the high end of its band (None, None
        when no figure has a band). The high end may miss the latency SLO: then it is infinite."""
        t = tfig if tfig is not None else fig
        if fig.latency_band_s is None and t.train_step_band_s is None:
            return None, None
        out = []
        for end in (0, 1):
            f = replace(fig, latency_s=fig.latency_band_s[end]) if fig.latency_band_s else fig
            tf = None
            if tfig is not None:
                tf = replace(tfig, train_step_s=tfig.train_step_band_s[end]) if tfig.train_step_band_s else tfig
            elif fig.train_step_band_s and fig.train_step_s is not None:
                f = replace(f, train_step_s=fig.train_step_band_s[end])
            try:
                usage = compute_usage(f, self.scenario, tf, model_name=name)
            except Infeasible:
                out.append(math.inf)
                continue
            out.append(sum(it.cost_usd for it in all_items(usage, self.scenario, self.prices)))
        return out[0], out[1]

    def total_usd(self, figures: Any, train_figures: Any = None) -> float:
        """Shorthand for ``estimate(...).total_usd`` (inf when infeasible)."""
        return self.estimate(figures, train_figures).total_usd

    def with_scenario(self, **changes: Any) -> "CostModel":
        """A copy with ``Scenario.replace(**changes)`` applied."""
        return CostModel(self.scenario.replace(**changes), self.prices)

    def with_prices(self, prices: PriceBook) -> "CostModel":
        return CostModel(self.scenario, prices)
