"""Mixed-precision training (autocast bf16 / fp16), measured against fp32 on the digits CNN."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from profilers import measure
from profilers.techniques import MixedPrecision, Quantize, apply, quality, records
from profilers.techniques.mixed_precision import AutocastModule


def amp(model, dtype, wl=None):
    return apply(model, MixedPrecision(dtype), wl, device="cpu", cache=False)


def train_profile(model, wl):
    return measure(model, wl, device="cpu", min_runs=3, warmup=1, time_cap_s=0.3)


@pytest.fixture(scope="module")
def fp32_profile(base, wl):
    return train_profile(base, wl)


def test_returns_an_autocast_module_around_a_copy():
    lin = nn.Linear(8, 4)
    m = amp(lin, "bf16")
    assert isinstance(m, AutocastModule) and m.amp_dtype == "bf16"
    assert m.module is not lin and isinstance(m.module, nn.Linear)
    assert m.module.weight.dtype == torch.float32  # weights stay fp32; only the compute is bf16
    (rec,) = records(m)
    assert rec.technique == "MixedPrecision(dtype='bf16')" and rec.optimizer_steps == 0


@pytest.mark.parametrize("dtype, torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_linear_forward_runs_in_the_autocast_dtype(dtype, torch_dtype):
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    m = amp(lin, dtype)
    x = torch.randn(3, 8)
    with torch.no_grad():
        y = m(x)
    assert y.dtype == torch_dtype
    assert torch.allclose(y.float(), lin(x), atol=0.05)
    assert lin(x).dtype == torch.float32  # the input model is untouched


def test_bf16_trains_in_measure_and_keeps_digits_accuracy(base, wl, fp32_profile):
    m = amp(base, "bf16", wl)
    p = train_profile(m, wl)
    assert p.train_step is not None and p.train_step.median_s > 0
    assert p.train_flops and p.train_flops > p.forward_flops
    assert p.forward_flops == fp32_profile.forward_flops  # autocast changes precision, not arithmetic
    # the done-when figure: bf16 costs digits less than 1 point of accuracy
    acc32, acc16 = quality(base, wl), quality(m, wl)
    assert acc32 >= 0.95
    assert acc16 > acc32 - 0.01, (acc16, acc32)


class SpyScaler(torch.amp.GradScaler):
    made: list["SpyScaler"] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = 0
        SpyScaler.made.append(self)

    def step(self, optimizer, *args, **kwargs):
        self.steps += 1
        return super().step(optimizer, *args, **kwargs)


@pytest.mark.parametrize("dtype, scaled", [("fp16", True), ("bf16", False)])
def test_measure_steps_fp16_through_a_grad_scaler(base, wl, monkeypatch, dtype, scaled):
    SpyScaler.made = []
    monkeypatch.setattr(torch.amp, "GradScaler", SpyScaler)
    p = train_profile(amp(base, dtype, wl), wl)
    assert p.train_step is not None and p.train_step.median_s > 0
    assert len(SpyScaler.made) == 1
    scaler = SpyScaler.made[0]
    assert scaler.is_enabled() is scaled
    assert scaler.steps >= 3  # every timed training step went through it
    if scaled:
        assert scaler.get_scale() > 1  # a real loss scale, not a disabled pass-through


def test_train_step_memory_bf16_vs_fp32_is_measured(base, wl, fp32_profile, record_property):
    """The CPU has no bf16 speed-up: report the measured figures, assert only that they exist."""
    pb = train_profile(amp(base, "bf16", wl), wl)
    figures = {"fp32_train_peak_bytes": fp32_profile.train_peak_memory_bytes,
               "bf16_train_peak_bytes": pb.train_peak_memory_bytes,
               "fp32_train_step_s": fp32_profile.train_step.median_s,
               "bf16_train_step_s": pb.train_step.median_s}
    for k, v in figures.items():
        record_property(k, v)
    print(figures)
    assert fp32_profile.train_peak_memory_bytes > 0 and pb.train_peak_memory_bytes > 0
    # parameters, gradients and AdamW state stay fp32 under autocast: identical resident bytes
    assert pb.parameter_bytes == fp32_profile.parameter_bytes
    assert pb.optimizer_state_bytes == fp32_profile.optimizer_state_bytes


def test_fp16_autocast_keeps_digits_accuracy(base, wl):
    assert quality(amp(base, "fp16", wl), wl) > quality(base, wl) - 0.01


def test_mixed_precision_validation():
    with pytest.raises(ValueError, match=re.escape("MixedPrecision.dtype must be one of 'bf16', 'fp16'; got 'fp32'.")):
        MixedPrecision("fp32")
    with pytest.raises(ValueError, match=re.escape("MixedPrecision.dtype must be one of 'bf16', 'fp16'; got None.")):
        MixedPrecision(None)
    assert MixedPrecision().dtype == "bf16"
    assert MixedPrecision.changes_weights is False and MixedPrecision.stage > Quantize.stage


def test_fp16_record_notes_the_grad_scaler():
    (rec,) = records(amp(nn.Linear(4, 2), "fp16"))
    assert any("GradScaler" in n for n in rec.notes)
