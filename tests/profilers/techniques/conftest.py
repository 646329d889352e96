"""Shared fixtures of the technique tests."""

import pytest

from profilers import workloads
from profilers.workload import Workload


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every technique test module runs with one intra-op thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def wl() -> Workload:
    return workloads.get("digits")


@pytest.fixture(scope="module")
def base(wl):
    """The trained digits baseline (trained once per process)."""
    return wl.build()
