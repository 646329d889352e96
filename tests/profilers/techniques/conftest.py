"""Shared fixtures of the technique tests."""

import pytest
import torch

from profilers import workloads
from profilers.workload import Workload


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread per test module (restored after): these models are tiny, and on 2 shared
    cores two spinning OpenMP threads per process made these files several times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def wl() -> Workload:
    return workloads.get("digits")


@pytest.fixture(scope="module")
def base(wl):
    """The trained digits baseline (trained once per process)."""
    return wl.build()
