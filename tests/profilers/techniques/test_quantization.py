"""Quantization, measured with the real profilers: an MLP of nn.Linear layers and the digits CNN.

The MLP is Linear(512->1024) ReLU Linear(1024->1024) ReLU Linear(1024->10): 1,583,104 weights
(524,288 + 1,048,576 + 10,240) and 2,058 biases, so 6.3 MB in fp32.
"""

from __future__ import annotations

import io
import re

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from profilers import count_flops, measure
from profilers.host import host_device_name
from profilers.techniques import Quantize, TechniqueCache, UnsupportedTechnique, apply, quality, records
from profilers.techniques.quantization import MODES


def make_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)).eval()


@pytest.fixture(scope="module")
def mlp() -> nn.Module:
    return make_mlp()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(8, 512, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def digits_base(wl):
    return wl.build()


@pytest.fixture(scope="module")
def digits_fp32_accuracy(digits_base, wl) -> float:
    return quality(digits_base, wl)


def quantize(model, mode, wl=None, **kw):
    return apply(model, Quantize(mode, **kw), wl, device="cpu", cache=False)


def saved_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def profile(model, inputs):
    return measure(model, inputs, train=False, device="cpu", min_runs=3, warmup=1, time_cap_s=0.2)


def cast_like(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    p = next(model.parameters())
    return x.to(p.dtype) if type(p.data) is torch.Tensor else x


# ---------------------------------------------------------------------------------------------
# size: the done-when figure "int8 state dict about 4x smaller than fp32"
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["int8_weight_only", "int8_dynamic"])
def test_int8_state_dict_is_about_4x_smaller_than_fp32(mlp, x, mode):
    q = quantize(mlp, mode)
    p32, p8 = profile(mlp, x), profile(q, x)
    # 1,583,104 int8 weights + one fp32 scale per output row (2,058) + fp32 biases (2,058):
    # 6.34 MB / 1.60 MB = 3.95x, a little under 4 because scales and biases stay fp32
    ratio = p32.serialized_bytes / p8.serialized_bytes
    assert 3.5 <= ratio <= 4.2, ratio
    assert 3.5 <= saved_bytes(mlp) / saved_bytes(q) <= 4.2
    assert 3.5 <= p32.parameter_bytes / p8.parameter_bytes <= 4.2
    assert p8.dtype == "int8" and p32.dtype == "fp32"


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_16_bit_state_dict_is_2x_smaller(mlp, x, mode):
    q = quantize(mlp, mode)
    p32, p16 = profile(mlp, x), profile(q, x)
    assert p16.parameter_bytes * 2 == p32.parameter_bytes  # every parameter is exactly half as wide
    assert p32.serialized_bytes / p16.serialized_bytes == pytest.approx(2.0, rel=0.01)  # plus pickle headers
    assert p16.dtype == mode
    assert all(p.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[mode] for p in q.parameters())


# ---------------------------------------------------------------------------------------------
# the deployed model is really quantized
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["int8_weight_only", "int8_dynamic"])
def test_int8_weights_are_torchao_tensors_not_a_masked_fp32_copy(mlp, x, mode):
    q = quantize(mlp, mode)
    for name, m in q.named_modules():
        if isinstance(m, nn.Linear):
            w = m.weight.data if type(m.weight) is nn.Parameter else m.weight
            assert is_traceable_wrapper_subclass(w), (name, type(w))
            assert type(w).__module__.startswith("torchao"), type(w)
            assert w.qdata.dtype == torch.int8 and w.qdata.shape == m.weight.shape
    # the outputs stay close to fp32
    with torch.no_grad():
        cos = nn.functional.cosine_similarity(q(x), mlp(x), dim=-1)
    assert float(cos.min()) > 0.99


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_16_bit_outputs_stay_close_to_fp32(mlp, x, mode):
    q = quantize(mlp, mode)
    with torch.no_grad():
        cos = nn.functional.cosine_similarity(q(cast_like(q, x)).float(), mlp(x), dim=-1)
    assert float(cos.min()) > 0.99


def test_int8_flops_equal_the_fp32_count(mlp, x):
    """Quantization changes numerics, not arithmetic: 2 * 8 * (512*1024 + 1024*1024 + 1024*10)."""
    expected = 2 * 8 * (512 * 1024 + 1024 * 1024 + 1024 * 10)  # = 25,329,664
    assert count_flops(mlp, x).total == expected
    for mode in ("int8_dynamic", "int8_weight_only"):
        q = quantize(mlp, mode)
        assert count_flops(q, x).total == expected, mode
        assert profile(q, x).forward_flops == expected, mode


def test_input_model_is_not_mutated(mlp, x):
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    quantize(mlp, "int8_dynamic")
    quantize(mlp, "bf16")
    after = mlp.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert type(after[k]) is torch.Tensor and after[k].dtype == torch.float32
        assert torch.equal(v, after[k]), k
    assert records(mlp) == ()


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------


def test_record_counts_linear_layers_and_cpu_int8_dynamic_is_not_accelerated_without_compile(mlp):
    (rec,) = records(quantize(mlp, "int8_dynamic"))
    assert rec.technique == Quantize("int8_dynamic").label()
    assert rec.accelerated is False
    assert any(re.search(r"\b3 nn\.Linear layer", n) for n in rec.notes), rec.notes
    assert any("compile=True" in n for n in rec.notes), rec.notes
    assert rec.optimizer_steps == 0 and rec.samples == 0 and rec.seconds > 0


def test_record_accelerated_true_with_compile_on_cpu(mlp):
    """compile wraps lazily (nothing runs here): the record says it is the fast path."""
    q = quantize(mlp, "int8_dynamic", compile=True)
    (rec,) = records(q)
    assert rec.accelerated is True
    assert any("torch.compile" in n for n in rec.notes)


def test_weight_only_and_16_bit_records_do_not_claim_acceleration(mlp):
    assert records(quantize(mlp, "int8_weight_only"))[0].accelerated is None
    (rec,) = records(quantize(mlp, "bf16"))
    assert rec.accelerated is None and any("bf16" in n for n in rec.notes)


# ---------------------------------------------------------------------------------------------
# unsupported here: explicit, never a silent fallback
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["int4_weight_only", "fp8"])
def test_int4_and_fp8_are_unsupported_on_this_cpu_naming_device_and_reason(mlp, mode):
    cache = TechniqueCache()
    result = "no model"
    with pytest.raises(UnsupportedTechnique) as info:
        result = apply(mlp, Quantize(mode), None, device="cpu", cache=cache)
    assert result == "no model"  # nothing returned, nothing substituted
    e = info.value
    assert e.device == host_device_name()
    assert e.reason and e.reason in str(e)
    assert str(e).startswith(f"{Quantize(mode).label()} is unsupported on {host_device_name()}: ")
    assert cache._memory == {}  # nothing cached either
    assert type(next(mlp.parameters())) is nn.Parameter and next(mlp.parameters()).dtype == torch.float32


def test_fp8_reason_says_what_hardware_it_needs(mlp):
    with pytest.raises(UnsupportedTechnique) as info:
        quantize(mlp, "fp8")
    assert re.search(r"CUDA|8\.9|MI300", info.value.reason), info.value.reason


@pytest.mark.parametrize("mode", ["int8_dynamic", "int8_weight_only"])
def test_model_without_linear_is_unsupported(mode):
    convs = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    with pytest.raises(UnsupportedTechnique, match="no nn.Linear layer"):
        quantize(convs, mode)


def test_model_without_linear_error_names_the_device_not_the_model_class():
    convs = nn.Sequential(nn.Conv2d(1, 4, 3))
    with pytest.raises(UnsupportedTechnique) as info:
        quantize(convs, "int8_dynamic")
    assert info.value.device == host_device_name()


def test_16_bit_cast_of_a_model_without_linear_is_fine():
    convs = nn.Sequential(nn.Conv2d(1, 4, 3))
    q = quantize(convs, "bf16")
    assert q[0].weight.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------
# digits: "bf16 costs digits less than 1 point of accuracy"
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["bf16", "fp16", "int8_dynamic", "int8_weight_only"])
def test_digits_accuracy_within_1_point_of_fp32(digits_base, wl, digits_fp32_accuracy, mode):
    q = quantize(digits_base, mode, wl)
    acc = quality(q, wl)
    assert digits_fp32_accuracy >= 0.95
    assert acc > digits_fp32_accuracy - 0.01, (mode, acc, digits_fp32_accuracy)


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_digits_16_bit_structure_copy_counts_and_measures_on_workload_inputs(digits_base, wl, mode):
    """What pricing does with the conv digits model cast to 16 bits: count FLOPs at another batch
    on the workload's fp32 inputs (forward and training step) and measure both paths."""
    s = apply(digits_base, Quantize(mode), wl, structure_only=True, cache=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]
    assert s.features[0].bias.dtype == s.classifier[1].weight.dtype == dtype
    for train in (False, True):
        fp32 = count_flops(digits_base, wl.inputs(16), train=train)
        assert count_flops(s, wl.inputs(16), train=train).total == fp32.total  # numerics change, not arithmetic
    p = measure(s, wl, train=True, device="cpu", min_runs=3, warmup=1, time_cap_s=0.2)
    assert p.dtype == mode and p.train_step is not None and p.latency is not None


def test_digits_int8_quantizes_its_two_linear_layers_and_keeps_convs_fp32(digits_base, wl):
    q = quantize(digits_base, "int8_dynamic", wl)
    (rec,) = records(q)
    assert any(re.search(r"\b2 nn\.Linear layer", n) for n in rec.notes), rec.notes
    assert type(q.features[0].weight.data) is torch.Tensor and q.features[0].weight.dtype == torch.float32
    assert is_traceable_wrapper_subclass(q.classifier[1].weight)
    p = measure(q, wl, train=False, device="cpu", min_runs=3, warmup=1, time_cap_s=0.2)
    assert p.dtype == "int8"


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def test_quantize_validation_messages():
    allowed = ", ".join(repr(m) for m in MODES)
    with pytest.raises(ValueError, match=re.escape(f"Quantize.mode must be one of {allowed}; got 'int3'.")):
        Quantize("int3")
    with pytest.raises(ValueError, match=re.escape("Quantize.mode must be one of 'bf16', ")):
        Quantize(None)
    with pytest.raises(ValueError, match=re.escape("Quantize.compile must be True or False; got 'yes'.")):
        Quantize("int8_dynamic", compile="yes")
    assert Quantize().mode == "int8_dynamic" and Quantize().compile is False
    assert Quantize("int4_weight_only").bits == 4 and Quantize("bf16").bits == 16


def test_quantize_compile_must_be_a_bool():
    with pytest.raises(ValueError, match=re.escape("Quantize.compile must be True or False; got 1.")):
        Quantize("int8_dynamic", compile=1)


def test_quantize_is_frozen():
    with pytest.raises(Exception):
        Quantize().mode = "bf16"  # type: ignore[misc]
