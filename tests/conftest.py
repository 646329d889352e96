"""Fixtures shared across the test packages."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module (restored after): its models are small, and on 2 shared
    cores two spinning OpenMP threads per process made these modules several times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
