"""Fixtures shared by the optimizer tests."""

import pytest

from cost_models import CostModel, Scenario, ServingPlan, TrainingPlan
from profilers import workloads


@pytest.fixture(scope="module")
def wl():
    return workloads.get("digits")


@pytest.fixture(scope="module")
def cost_model():
    # bulk scanning: 100 digits a request at 100k requests/s at peak, so serving needs several
    # GPUs and compression can pay for its engineering hours
    return CostModel(Scenario(
        serving=ServingPlan(avg_requests_per_s=50_000, peak_requests_per_s=100_000, samples_per_request=100,
                            latency_slo_s=0.05, horizon_months=12),
        training=TrainingPlan(samples_per_epoch=1347, epochs=15)))
