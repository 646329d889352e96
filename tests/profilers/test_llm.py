"""profilers.llm: bytes and times by hand on toy shapes, tensor parallelism, serving, errors."""

from __future__ import annotations

import math

import pytest

from profilers import ConfigError, llm
from profilers.hardware import DeviceSpec
from profilers.parallel import TransformerShape
from profilers.projection import CLASSES, kernel_time

# 1 TFLOP/s fp16, 1 GB/s, 10 GB; NVLink 1 GB/s per direction, 8 per node
TOY = DeviceSpec(name="ToyGPU", kind="gpu", vendor="test", peak_tflops={"fp16": 1.0, "int8": 2.0}, memory_gb=10,
                 memory_bandwidth_gbps=1.0, intra_node_gbps=1.0, devices_per_node=8, generation="toygen",
                 source="test fixture", date="2026-12-01")
# one Llama block: hidden 64, 4 heads of 16 (2 KV heads), MLP 128, vocabulary 100
SHAPE = TransformerShape(layers=1, hidden=64, heads=4, kv_heads=2, ffn_hidden=128, vocab=100, seq_len=256,
                         layout="llama", tied_embeddings=False, name="toy")
ONE = dict.fromkeys(CLASSES, 1.0)


def test_kv_bytes_per_token_of_llama_2_70b():
    # 2 (K, V) x 80 layers x 8 KV heads x 128 head dim x 2 bytes (bf16) = 327,680 bytes per token (GQA);
    # without GQA (64 heads) it would be 8x that
    shape = llm.shape_of("llama-2-70b")
    assert llm.kv_bytes_per_token(shape, "bf16") == 2 * 80 * 8 * 128 * 2 == 327_680
    assert llm.kv_bytes_per_token(shape, "fp8") == 163_840


def test_weight_bytes_by_format():
    # block matrices: qkv 64 x (64 + 2 x 32) + out 64 x 64 + 3 x 64 x 128 = 8192 + 4096 + 24576 = 36,864
    # rest in fp16: 2 norms x 64 + embedding 6400 + final norm 64 + head 6400 = 12,992 parameters
    assert llm.weight_bytes(SHAPE, "fp16") == (36_864 + 12_992) * 2
    assert llm.weight_bytes(SHAPE, "int8_weight_only") == 36_864 * 1 + 12_992 * 2
    # int4, groups of 128: 0.5 B + 4 B of fp16 scale and zero per 128 weights = 0.53125 B per weight
    assert llm.weight_bytes(SHAPE, "int4_weight_only") == pytest.approx(36_864 * 0.53125 + 12_992 * 2)
    with pytest.raises(ConfigError, match=r"^llm.weights must be one of 'fp32', 'bf16'"):
        llm.weight_bytes(SHAPE, "nf4")


def test_decode_step_by_hand_at_batch_1_and_8():
    # batch 1, context 10, fp16 on ToyGPU, every kernel memory-bound (1 TFLOP/s vs 1 GB/s):
    #   qkv      weights 64 x 128 x 2 B = 16,384 + activations (64 + 128) x 2 = 384  -> 16,768 B
    #   attn_out 64 x 64 x 2 = 8,192 + (64 + 64) x 2 = 256                          ->  8,448 B
    #   mlp_up   64 x 256 x 2 = 32,768 + (64 + 256) x 2 = 640                        -> 33,408 B
    #   mlp_down 128 x 64 x 2 = 16,384 + (128 + 64) x 2 = 384                        -> 16,768 B
    #   attention: K and V of 11 positions x 2 KV heads x 16 x 2 B x 2 = 1,408 + q and out 2 x 4 x 16 x 2 = 256
    #              -> 1,664 B
    #   LM head 100 x 64 x 2 = 12,800 + 100 x 2 = 200                                 -> 13,000 B
    # total 90,056 B at 1 GB/s = 90.056 us (at efficiency 1, no overhead)
    k1 = llm.decode_kernels(SHAPE, TOY, weights="fp16", batch=1, context=10)
    assert kernel_time(k1, ONE, 0.0) == pytest.approx(90_056e-9)
    assert {c for c, *_ in k1} == {"gemv", "attention"}
    # batch 8: weights are read once, activations and K/V per sequence:
    #   qkv 16,384 + 8 x 384 = 19,456; out 8,192 + 8 x 256 = 10,240; up 32,768 + 8 x 640 = 37,888;
    #   down 16,384 + 8 x 384 = 19,456; attention 8 x 1,664 = 13,312; head 12,800 + 8 x 200 = 14,400
    #   -> 114,752 B = 114.752 us: 8 tokens for 1.27x the time of one
    k8 = llm.decode_kernels(SHAPE, TOY, weights="fp16", batch=8, context=10)
    assert kernel_time(k8, ONE, 0.0) == pytest.approx(114_752e-9)
    # the overhead floor: 6 kernels per step, none faster than it
    assert kernel_time(k1, ONE, 1e-3) == pytest.approx(6e-3)


def test_tensor_parallel_splits_weights_and_adds_two_all_reduces_per_layer():
    # tp 2, batch 8 decode: each all-reduce moves 8 tokens x 64 x 2 B = 1,024 B; a ring all-reduce
    # over 2 ranks sends 2 x (2 - 1) / 2 x 1,024 = 1,024 B at 1 GB/s = 1.024 us, twice per layer
    k = llm.decode_kernels(SHAPE, TOY, weights="fp16", batch=8, context=10, tp=2)
    comm = [x for x in k if x[0] == "comm"]
    assert comm == [("comm", 2, 0.0, pytest.approx(1.024e-6))]
    # the qkv weights per GPU are half: 8,192 B + 8 x (64 + 64) x 2 = 10,240 B
    qkv = k[0]
    assert qkv[3] == pytest.approx(10_240e-9)


def test_prefill_counts_causal_attention_and_the_last_token_head():
    # prefill of 16 tokens, batch 1: attention pairs 16 x 17 / 2 = 136, FLOPs 4 x 4 heads x 16 x 136 = 34,816
    k = llm.prefill_kernels(SHAPE, TOY, weights="fp16", batch=1, tokens=16)
    att = next(x for x in k if x[0] == "attention")
    assert att[2] == pytest.approx(34_816 / 1e12)
    head = k[-1]
    assert head[2] == pytest.approx(2 * 1 * 6400 / 1e12)  # one token per sequence through the LM head


def test_estimate_and_max_batch():
    e = llm.estimate("llama-2-7b", "A100-80GB", weights="fp16", batch=4, input_tokens=512, output_tokens=128)
    # fp16 Llama-2-7B: 6.74e9 x 2 B = 13.5 GB of weights; KV 2 x 32 x 4096 x 2 = 524,288 B per token
    assert e.memory_bytes["weights"] == pytest.approx(llm.weight_bytes(llm.shape_of("llama-2-7b"), "fp16"))
    assert e.memory_bytes["kv"] == 4 * 640 * 524_288
    assert e.fits_memory and e.max_batch > 100
    assert e.output_tokens_per_s == pytest.approx(4 * 128 / (e.ttft_s + 128 * e.tpot_s))
    assert e.ttft_band_s[0] <= e.ttft_s <= e.ttft_band_s[1] and e.calibration_rows
    assert "profilers.llm" in e.provenance and "measured" not in e.provenance.split(";")[0]
    # 70B in fp16 does not fit one 80 GB GPU; tp 4 does
    assert llm.estimate("llama-2-70b", "A100-80GB", weights="fp16").fits_memory is False
    assert llm.estimate("llama-2-70b", "A100-80GB", weights="fp16", tp=4).fits_memory is True


@pytest.mark.parametrize("kw, message", [
    (dict(weights="fp8"), r"^llm.weights must be a format A100-80GB can run \(it has no fp8 peak\): 'fp32', 'bf16'"),
    (dict(kv="fp8"), r"^llm.kv must be a format A100-80GB can run \(it has no fp8 peak\)"),
    (dict(tp=16), r"^llm.tp must be <= devices_per_node of A100-80GB \(8\)"),
    (dict(tp=3), r"^llm.tp must be a divisor of the model's 32 attention heads; got 3."),
    (dict(input_tokens=4000, output_tokens=200), r"^llm.tokens must be an integer in \[1, 4096\]"),
    (dict(batch=0), r"^llm.batch must be an integer >= 1; got 0."),
])
def test_bad_deployments_name_the_field(kw, message):
    with pytest.raises(ConfigError, match=message):
        llm.estimate("llama-2-7b", "A100-80GB", **kw)


def test_serving_steady_state():
    mix = llm.RequestMix.fixed(512, 128)
    s = llm.serve("llama-2-7b", "H100-SXM", mix, weights="fp8", batch=32, ttft_slo_s=2.0, tpot_slo_s=0.1)
    assert s.meets_slo and s.fits_memory and s.why == ""
    assert s.output_tokens_per_s == pytest.approx(32 / s.tpot_p50_s)
    assert s.requests_per_s == pytest.approx(s.output_tokens_per_s / 128)
    assert 0 < s.prefill_share < 1
    tight = llm.serve("llama-2-7b", "H100-SXM", mix, weights="fp8", batch=32, tpot_slo_s=1e-4)
    assert not tight.meets_slo and "TPOT p90" in tight.why
    # a histogram: p90s from its upper lengths
    hist = llm.RequestMix(((128, 64, 5), (2048, 512, 1)))
    assert hist.quantile(0.5, 0) == 128 and hist.quantile(0.9, 0) == 2048
    h = llm.serve("llama-2-7b", "H100-SXM", hist, weights="fp8", batch=8)
    assert h.ttft_p90_s > h.ttft_p50_s and h.tpot_p90_s >= h.tpot_p50_s
    with pytest.raises(ConfigError, match=r"RequestMix.pairs\[0\] must be \(input_tokens >= 1"):
        llm.RequestMix(((0, 5, 1),))


def test_request_mix_from_a_csv(tmp_path):
    p = tmp_path / "mix.csv"
    p.write_text("input_tokens,output_tokens,count\n100,20,3\n1000,200,1\n")
    m = llm.RequestMix.read(p)
    assert m.mean() == (pytest.approx(325.0), pytest.approx(65.0))
    (tmp_path / "bad.csv").write_text("input_tokens,output_tokens\n100,abc\n")
    with pytest.raises(ConfigError, match=r"RequestMix.read\(bad.csv\).row 2 must be integers"):
        llm.RequestMix.read(tmp_path / "bad.csv")


def test_format_cost_keys_are_the_quantize_modes():
    from profilers.techniques import Quantize

    keys = {m.name: m.cost_key for m in Quantize.SPECS}
    for name, f in llm.FORMATS.items():
        if f.technique:
            assert keys[name] == f.technique, name
    assert math.isclose(llm.FORMATS["int4_weight_only"].weight_bytes, 0.5)
