"""profilers.workloads (the bundled digits workload) and Workload validation."""

from __future__ import annotations

import math

import pytest
import torch

from profilers import ConfigError, Workload, workloads
from profilers.workloads import digits


def _wl(**kw) -> Workload:
    base = dict(name="w", model=lambda: torch.nn.Linear(2, 2), inputs=lambda b: torch.randn(b, 2))
    base.update(kw)
    return Workload(**base)


# ---- the registry ------------------------------------------------------------------------------------


def test_names():
    names = workloads.names()
    assert "digits" in names and names == sorted(names)


@pytest.mark.parametrize("name", ["mnist", "Digits", "", None])
def test_unknown_workload_lists_the_known_ones(name):
    with pytest.raises(ConfigError) as info:
        workloads.get(name)
    allowed = ", ".join(repr(n) for n in workloads.names())  # 'digits', ...
    assert "'digits'" in allowed
    assert str(info.value) == f"workloads.name must be one of {allowed}; got {name!r}."


# ---- digits -------------------------------------------------------------------------------------------


def test_digits_workload_fields():
    wl = workloads.get("digits")
    assert isinstance(wl, Workload)
    assert wl.name == "digits-cnn" and wl.batch_size == 64 and wl.quality_metric
    x = wl.inputs(5)
    assert x.shape == (5, 1, 8, 8) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    y = wl.targets(5)
    assert y.shape == (5,) and y.dtype == torch.int64
    # more than the 450 held-out images: the split is repeated
    assert wl.inputs(1000).shape[0] == 1000 and wl.targets(1000).shape[0] == 1000


def test_digits_split_is_fixed():
    d = digits.data()
    # 1797 images, 25 % held out (stratified, seed 0): 1347 / 450
    assert d["x_train"].shape == (1347, 1, 8, 8) and d["x_test"].shape == (450, 1, 8, 8)
    assert d["y_train"].shape == (1347,) and d["y_test"].shape == (450,)


def test_digits_baseline_accuracy():
    wl = workloads.get("digits")
    m = wl.build()
    acc = wl.evaluate(m)
    assert acc >= 0.95, acc
    assert acc <= 1.0


def test_digits_build_returns_independent_copies():
    wl = workloads.get("digits")
    a, b = wl.build(), wl.build()
    assert a is not b
    with torch.no_grad():
        next(a.parameters()).add_(1.0)
    pa, pb = next(a.parameters()), next(b.parameters())
    assert not torch.equal(pa, pb)  # mutating one copy leaves the cached baseline alone
    assert torch.equal(next(wl.build().parameters()), pb)
    assert not a.training


def test_digits_loss_runs():
    wl = workloads.get("digits")
    m = wl.build()
    loss = wl.loss(m(wl.inputs(8)), wl.targets(8))
    assert loss.ndim == 0 and float(loss.detach()) >= 0


# ---- Workload validation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", None, 3])
def test_workload_name(name):
    with pytest.raises(ConfigError) as info:
        _wl(name=name)
    assert str(info.value) == f"Workload.name must be a non-empty string; got {name!r}."


@pytest.mark.parametrize("field", ["model", "inputs"])
def test_workload_required_callables(field):
    with pytest.raises(ConfigError, match=rf"^Workload\.{field} must be a callable; got "):
        _wl(**{field: "not callable"})


@pytest.mark.parametrize("field", ["targets", "loss", "evaluate"])
def test_workload_optional_callables(field):
    _wl(**{field: None})  # fine
    with pytest.raises(ConfigError, match=rf"^Workload\.{field} must be a callable or None; got 5\.$"):
        _wl(**{field: 5})


@pytest.mark.parametrize("bs", [0, -3, 1.5, "64"])
def test_workload_batch_size(bs):
    with pytest.raises(ConfigError) as info:
        _wl(batch_size=bs)
    assert str(info.value) == f"Workload.batch_size must be an integer >= 1; got {bs!r}."


@pytest.mark.parametrize("qr", [(1, 0), (0, math.inf), (0,), "01", (True, 2)])
def test_workload_quality_range(qr):
    assert _wl(quality_range=(0, 1)).quality_range == (0.0, 1.0)
    with pytest.raises(ConfigError) as info:
        _wl(quality_range=qr)
    assert str(info.value) == (f"Workload.quality_range must be None or (low, high): two finite numbers, low < high; "
                               f"got {qr!r}.")


def test_builtin_workloads_declare_their_quality_range_without_building():
    # read without importing torch-heavy modules: the registry declares them
    assert workloads.quality_range("digits") == (0.0, 1.0) and workloads.quality_metric("digits") == "accuracy"
    assert workloads.quality_range("minilm") == (-1.0, 1.0)  # mean cosine similarity
    assert workloads.get("digits").quality_range == (0.0, 1.0)  # the built workload carries it
    with pytest.raises(ConfigError):
        workloads.quality_range("mnist")


def test_workload_build_calls_the_factory():
    calls = []

    def factory():
        calls.append(1)
        return torch.nn.Linear(2, 2)

    wl = _wl(model=factory)
    assert isinstance(wl.build(), torch.nn.Linear) and isinstance(wl.build(), torch.nn.Linear)
    assert len(calls) == 2


def test_workload_is_frozen():
    with pytest.raises(AttributeError):
        _wl().name = "x"  # type: ignore[misc]
