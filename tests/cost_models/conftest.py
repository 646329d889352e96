"""Shared fixtures: a test device (so hand-computed numbers do not depend on the catalog) and a
price book with round prices for it."""

from __future__ import annotations

import pytest

from cost_models import ModelFigures, PriceBook
from profilers import hardware
from profilers.hardware import DeviceSpec

TEST_DEVICE = "TestGPU-24"

_SPEC = DeviceSpec(name=TEST_DEVICE, kind="gpu", vendor="test", peak_tflops={"fp16": 100.0}, memory_gb=24,
                   memory_bandwidth_gbps=600, network_gbps=25, devices_per_node=4, tdp_watts=500,
                   source="test fixture", date="2026-11-22")


@pytest.fixture(scope="module", autouse=True)
def test_device():
    """Register TestGPU-24 (24 GB, 4 per node, 500 W) for each test module here, then remove it
    (module scope, so other packages' tests never see it in the catalog)."""
    hardware.names()  # load the catalog first
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(hardware._CATALOG, TEST_DEVICE.lower(), _SPEC)
        yield _SPEC


def round_prices() -> PriceBook:
    """Defaults plus round prices for the test device: $2.00/h on demand, $0.50/h spot,
    $8,760 to buy, $0.10/kWh, $0.02/GB-month, $0.05/GB egress, $0.01/GB between nodes."""
    b = PriceBook.default()
    b = b.with_price("gpu_hour", TEST_DEVICE, 2.00, tier="on_demand", provider="test")
    b = b.with_price("gpu_hour", TEST_DEVICE, 0.50, tier="spot", provider="test")
    b = b.with_price("purchase", TEST_DEVICE, 8760.0, provider="test")
    b = b.with_price("electricity", "grid", 0.10, provider="test")
    b = b.with_price("storage", "object", 0.02, provider="test")
    b = b.with_price("network", "internet_egress", 0.05, provider="test")
    b = b.with_price("network", "inter_node", 0.01, provider="test")
    return b


@pytest.fixture(scope="session")
def prices() -> PriceBook:
    return round_prices()


def figures(batch_size=8, latency_s=0.02, train_step_s=None, peak_memory_bytes=2_000_000_000,
            train_peak_memory_bytes=None, parameter_bytes=0, device=TEST_DEVICE, **bands) -> ModelFigures:
    return ModelFigures(device=device, dtype="fp16", batch_size=batch_size, latency_s=latency_s,
                        train_step_s=train_step_s, peak_memory_bytes=peak_memory_bytes,
                        train_peak_memory_bytes=train_peak_memory_bytes, parameter_bytes=parameter_bytes,
                        provenance="by hand for tests", **bands)
