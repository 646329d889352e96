"""measure_generation: prefill / decode timings and the KV cache of a causal LM (the tinylm workload)."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

from profilers import ConfigError, workloads  # noqa: E402
from profilers.config import to_json_dict  # noqa: E402
from profilers.generation import (  # noqa: E402
    GenerationProfile,
    kv_bytes_per_token,
    kv_cache_bytes,
    measure_generation,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(time_cap_s=0.2, min_runs=3, warmup=1)


@pytest.fixture(scope="module")
def wl():
    return workloads.get("tinylm")


@pytest.fixture(scope="module")
def model(wl):
    return wl.build()


@pytest.fixture(scope="module")
def prompt(wl):
    return wl.inputs(8)[:, :64]


@pytest.fixture(scope="module")
def at_batch_1(model, prompt):
    return measure_generation(model, prompt[:1], output_tokens=16, name="tinylm", **FAST)


def test_timings_are_positive_and_consistent(at_batch_1):
    p = at_batch_1
    assert (p.batch, p.input_tokens, p.output_tokens) == (1, 64, 16)
    for t in (p.prefill, p.decode):
        assert 0 < t.p10_s <= t.median_s <= t.p90_s and t.runs >= 3 and t.method == "time.perf_counter"
        assert t.threads == torch.get_num_threads() and t.cpu_share is not None
    assert p.ttft_s == p.prefill.median_s and p.tpot_s == p.decode.median_s
    assert p.output_tokens_per_s == pytest.approx(1 / p.tpot_s)
    assert p.decode.timed_s >= p.decode.runs * p.decode.p10_s * 16 * 0.99  # a run is 16 steps
    assert p.dtype == "fp32" and p.kv_dtype == "fp32" and p.model == "tinylm" and p.device == "host"
    assert p.provenance.startswith("measured on ") and torch.__version__ in p.provenance
    assert p.threads == torch.get_num_threads() and p.parameters > 400_000


def test_kv_bytes_measured_equal_the_analytic_size(model, at_batch_1):
    p = at_batch_1
    cfg = model.config
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4  # fp32, batch 1
    assert p.kv_bytes_per_token == per_token == kv_bytes_per_token(cfg, torch.float32) == 2048
    assert p.kv_bytes_after_prefill == 64 * per_token
    assert p.kv_bytes_after_decode - p.kv_bytes_after_prefill == 16 * per_token  # exactly N tokens' worth
    assert p.kv_bytes_match is True


def test_batch_8_scales_the_cache_and_the_throughput(model, prompt, at_batch_1):
    p = measure_generation(model, prompt, output_tokens=8, **FAST)
    assert p.batch == 8 and p.kv_bytes_per_token == 8 * at_batch_1.kv_bytes_per_token
    assert p.kv_bytes_after_prefill == 8 * at_batch_1.kv_bytes_after_prefill
    assert p.kv_bytes_after_decode == p.kv_bytes_per_token * (64 + 8) and p.kv_bytes_match
    assert p.output_tokens_per_s == pytest.approx(8 / p.tpot_s)


def test_json_round_trip(at_batch_1):
    text = at_batch_1.to_json()
    assert json.loads(text)["type"] == "generation_profile"
    back = GenerationProfile.from_json(text)
    assert back == at_batch_1 and isinstance(back.decode, type(at_batch_1.decode))
    assert to_json_dict(back) == json.loads(text)
    with pytest.raises(ConfigError):
        GenerationProfile.from_json(json.dumps(to_json_dict(at_batch_1.prefill)))  # a Timing


def test_the_callers_model_is_left_alone(model, prompt):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure_generation(model, prompt[:1, :8], output_tokens=2, **FAST)
    after = model.state_dict()
    assert not model.training and all(torch.equal(before[k], after[k]) for k in before)


def test_a_bf16_model_has_a_bf16_cache_of_half_the_bytes(model, prompt):
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    p = measure_generation(bf16, prompt[:1, :16], output_tokens=4, **FAST)
    assert p.dtype == "bf16" and p.kv_dtype == "bf16"
    assert p.kv_bytes_per_token == 1024 and p.kv_bytes_after_decode == 1024 * 20 and p.kv_bytes_match


def test_kv_cache_bytes_of_a_real_cache(model, prompt):
    with torch.no_grad():
        out = model(input_ids=prompt[:2, :10], use_cache=True)
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    assert kv_cache_bytes(cache) == 2 * 2048 * 10


class _NoCache(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(256, 4)

    def forward(self, input_ids, use_cache=False, **kw):
        return self.emb(input_ids)


@pytest.mark.parametrize("kw, field", [
    (dict(input_ids=torch.randn(1, 4)), "input_ids"),
    (dict(input_ids=torch.zeros(4, dtype=torch.long)), "input_ids"),
    (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), "input_ids"),
    (dict(output_tokens=0), "output_tokens"),
    (dict(output_tokens=True), "output_tokens"),
    (dict(output_tokens=250), "output_tokens"),  # 8 + 250 > 256 positions
    (dict(min_runs=2), "min_runs"),
    (dict(time_cap_s=0), "time_cap_s"),
    (dict(device="tpu"), "device"),
])
def test_bad_arguments_are_named(model, kw, field):
    args = dict(input_ids=torch.zeros(1, 8, dtype=torch.long), output_tokens=4, **FAST)
    args.update(kw)
    with pytest.raises(ConfigError, match=rf"measure(_generation)?\.{field} must be"):
        measure_generation(model, **args)


def test_a_model_without_a_kv_cache_is_refused():
    with pytest.raises(ConfigError, match="returns its KV cache"):
        measure_generation(_NoCache(), torch.zeros(1, 4, dtype=torch.long), output_tokens=2, **FAST)
    with pytest.raises(ConfigError, match="model must be a torch.nn.Module"):
        measure_generation(lambda x: x, torch.zeros(1, 4, dtype=torch.long), output_tokens=2, **FAST)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda(model, prompt):
    p = measure_generation(model, prompt[:1], output_tokens=8, device="cuda", **FAST)
    assert p.prefill.method == "torch.cuda.Event" and p.tpot_s > 0 and p.kv_bytes_match and p.threads is None
