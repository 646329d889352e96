"""analyze(): every accepted model spec, the memory formulas by hand, inputs left untouched, errors.

Hand arithmetic uses a 6 -> 5 -> 3 MLP (Linear, ReLU, Linear) on a [4, 6] input:
parameters 6*5 + 5 + 5*3 + 3 = 53; forward 4*6*5*2 + 4*5*3*2 = 240 + 120 = 360 FLOPs;
train 360 + backward (grad W2 120 + grad h 120 + grad W1 240; no grad of the input) = 840.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import pytest
import torch
import torch.nn as nn

from profilers import ConfigError, Profile, analyze, count_flops

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*bos_token_id.*|.*eos_token_id.*")

N_PARAMS = 53  # 6*5 + 5 + 5*3 + 3
FWD, TRAIN = 360, 840


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def bundled_configs() -> list[str]:
    return sys.modules[analyze.__module__].bundled_configs()


TINY_GPT2 = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100,
             "n_positions": 64, "bos_token_id": 0, "eos_token_id": 0}
# GPT2Model parameters: wte 100*64 + wpe 64*64 + ln_f 2*64 + 2 layers * (ln 2*64 + c_attn 64*192 + 192
# + attn c_proj 64*64 + 64 + ln 2*64 + c_fc 64*256 + 256 + mlp c_proj 256*64 + 64) = 6400 + 4096 + 128
# + 2 * 49984 = 110592; the LM head is tied to wte (no new parameters)
TINY_GPT2_PARAMS = 110_592
# forward at s=16: 2 layers * 2 * 16 tokens * (4*64^2 + 2*64*256) + attention 4 * 2 * 16 * 16 * 64
TINY_GPT2_FWD = 2 * 2 * 16 * (4 * 64 * 64 + 2 * 64 * 256) + 4 * 2 * 16 * 16 * 64
LM_HEAD = 2 * 16 * 64 * 100  # s * d * V * 2


def test_factory_with_inputs():
    p = analyze(mlp, inputs=torch.randn(4, 6))
    assert isinstance(p, Profile)
    assert (p.source, p.device, p.model, p.dtype, p.batch_size) == ("analyzed", "meta", "mlp", "bf16", 1)
    assert p.parameters == N_PARAMS
    assert p.parameter_bytes == p.gradient_bytes == 2 * N_PARAMS  # bf16: 2 B each = 106
    assert p.forward_flops == FWD and p.train_flops == TRAIN
    assert p.optimizer_state_bytes == 12 * N_PARAMS  # adamw + bf16: 8 B moments + 4 B fp32 master = 636
    assert "analyzed on the meta device" in p.provenance
    assert sum(r.total_flops for r in p.ops) == FWD
    assert sum(r.total_flops for r in p.train_ops) == TRAIN


def test_factory_with_inputs_callable_of_batch_size():
    p = analyze(mlp, inputs=lambda b: torch.randn(b, 6), batch_size=3, dtype="fp32")
    assert p.batch_size == 3
    assert p.forward_flops == 3 * 6 * 5 * 2 + 3 * 5 * 3 * 2 == 270
    assert p.parameter_bytes == 4 * N_PARAMS


def test_activation_bytes_by_hand():
    # saved for backward: the input x (grad of W1 needs it) and the ReLU output (ReLU's backward and
    # grad of W2 share that one tensor); parameters excluded. fp32: 4*6*4 + 4*5*4 = 96 + 80 = 176
    assert analyze(mlp, inputs=torch.randn(4, 6), dtype="fp32").activation_bytes == 176
    # bf16 model with bf16 inputs: 4*6*2 + 4*5*2 = 88
    assert analyze(mlp, inputs=torch.randn(4, 6, dtype=torch.bfloat16), dtype="bf16").activation_bytes == 88


def test_activation_bytes_follow_dtype_with_fp32_example_inputs():
    assert analyze(mlp, inputs=torch.randn(4, 6), dtype="bf16").activation_bytes == 88


def test_module_with_real_weights_is_not_mutated():
    torch.manual_seed(0)
    m = mlp().eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(4, 6)
    x0 = x.clone()
    p = analyze(m, inputs=x, dtype="bf16", train=True)
    assert p.model == "Sequential"
    assert p.forward_flops == FWD == count_flops(m, x).total
    assert p.train_flops == TRAIN
    for k, v in m.state_dict().items():
        assert v.device.type == "cpu" and v.dtype == torch.float32
        assert torch.equal(v, before[k])
    assert all(q.grad is None for q in m.parameters())
    assert m.training is False  # analyze(train=True) ran a copy in train mode, not the caller's module
    assert torch.equal(x, x0) and x.device.type == "cpu"


def test_meta_module_is_not_mutated():
    with torch.device("meta"):
        m = mlp().eval()
    analyze(m, inputs=torch.randn(4, 6), dtype="bf16", train=True)
    assert m[0].weight.dtype == torch.float32 and m.training is False


def test_bundled_name():
    assert bundled_configs() == ["bert-base-uncased", "gpt2", "llama-2-70b", "llama-2-7b"]
    p = analyze("gpt2", batch_size=2, seq_len=8, train=False)
    assert p.model == "gpt2" and p.seq_len == 8 and p.parameters == 124_439_808
    # 2 * 8 tokens * (2 * 12 layers * 768 * 9216 matmul weights + 2 * 768 * 50257 LM head)
    # + attention 4 * 12 layers * 8 keys * 768 * 16 tokens
    tokens = 16
    assert p.forward_flops == 2 * tokens * (12 * 768 * 9216 + 768 * 50257) + 4 * 12 * 8 * 768 * tokens
    assert p.train_flops is None and p.optimizer_state_bytes is None and p.activation_bytes is None


def test_config_dict():
    p = analyze(dict(TINY_GPT2), seq_len=16)  # no "architectures": the bare GPT2Model, no LM head
    assert p.parameters == TINY_GPT2_PARAMS
    assert p.forward_flops == TINY_GPT2_FWD == 3_276_800
    assert p.train_flops == 3 * TINY_GPT2_FWD


def test_config_json_path(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(TINY_GPT2, architectures=["GPT2LMHeadModel"])))
    for spec in (path, str(path)):
        p = analyze(spec, seq_len=16, train=False)
        assert p.parameters == TINY_GPT2_PARAMS  # tied LM head
        assert p.forward_flops == TINY_GPT2_FWD + LM_HEAD == 3_481_600


def test_pretrained_config_object():
    import transformers

    cfg = transformers.GPT2Config(**{k: v for k, v in TINY_GPT2.items() if k != "model_type"})
    p = analyze(cfg, seq_len=16, train=False)
    assert p.parameters == TINY_GPT2_PARAMS and p.forward_flops == TINY_GPT2_FWD


@pytest.mark.parametrize("optimizer,dtype,per_param", [
    ("adamw", "bf16", 12),  # m and v in fp32 (4 + 4) + fp32 master weights (4)
    ("adamw", "fp16", 12),
    ("adamw", "fp32", 8),  # m and v only: the weights are already fp32
    ("adam", "bf16", 12),
    ("sgd_momentum", "fp32", 4),  # one fp32 momentum buffer
    ("sgd_momentum", "bf16", 8),  # momentum + fp32 master weights
    ("sgd", "bf16", 0),  # nothing
    ("sgd", "fp32", 0),
])
def test_optimizer_state_bytes(optimizer, dtype, per_param):
    p = analyze(mlp, inputs=torch.randn(4, 6), dtype=dtype, optimizer=optimizer)
    assert p.optimizer_state_bytes == per_param * N_PARAMS  # e.g. 12 * 53 = 636
    assert p.gradient_bytes == {"bf16": 2, "fp16": 2, "fp32": 4}[dtype] * N_PARAMS


def test_profile_json_round_trip():
    p = analyze(mlp, inputs=torch.randn(4, 6))
    back = Profile.from_json(p.to_json())
    assert back == p


# ---- errors ------------------------------------------------------------------------------------


def test_unknown_name_lists_bundled_configs():
    with pytest.raises(ConfigError) as info:
        analyze("llama-3-8b", seq_len=8)
    msg = str(info.value)
    assert msg.startswith("analyze.model must be ") and msg.endswith("; got 'llama-3-8b'.")
    for name in bundled_configs():
        assert name in msg


def test_missing_seq_len():
    with pytest.raises(ConfigError, match=r"^analyze\.seq_len must be an integer >= 1 .*; got None\.$"):
        analyze("gpt2")


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(dtype="int3"), r"^analyze\.dtype must be one of fp32, bf16, fp16; got 'int3'\.$"),
    (dict(optimizer="lion"), r"^analyze\.optimizer must be one of adamw, adam, sgd_momentum, sgd; got 'lion'\.$"),
    (dict(batch_size=0), r"^analyze\.batch_size must be an integer >= 1; got 0\.$"),
    (dict(seq_len=0), r"^analyze\.seq_len must be an integer >= 1; got 0\.$"),
])
def test_bad_arguments(kwargs, pattern):
    args = dict(seq_len=8) | kwargs
    with pytest.raises(ConfigError, match=pattern):
        analyze("gpt2", **args)


def test_non_transformers_model_needs_inputs():
    with pytest.raises(ConfigError, match=r"^analyze\.inputs must be example inputs .*; got None\.$"):
        analyze(mlp)


def test_bad_specs():
    with pytest.raises(ConfigError, match=r"^analyze\.model must be .*; got 'int'\.$"):
        analyze(42)
    with pytest.raises(ConfigError, match=r"^analyze\.config\.model_type must be present"):
        analyze({"n_embd": 64}, seq_len=4)

    def broken():
        raise RuntimeError("boom")

    with pytest.raises(ConfigError, match="broken.*RuntimeError: boom"):
        analyze(broken, inputs=torch.randn(1))
    with pytest.raises(ConfigError, match=r"Sequential raised RuntimeError on inputs Tensor\[4, 7\]"):
        analyze(mlp, inputs=torch.randn(4, 7))
