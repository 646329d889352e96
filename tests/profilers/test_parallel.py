"""profilers.parallel: formulas against hand arithmetic, validation messages, the planner vs brute force."""

from __future__ import annotations

import math
import random
import time

import pytest

from profilers import hardware
from profilers.config import ConfigError, dumps, loads
from profilers.hardware import DeviceSpec
from profilers.parallel import (
    MemoryModel, ParallelConfig, TimeModel, TransformerShape, activation_bytes_per_layer, all_gather_s,
    enumerate_configs, group_bandwidth, layer_time, megatron_flops, memory_per_device, p2p_s, plan,
    reduce_scatter_s, ring_all_reduce_s, step_time, training_flops,
)

# A hand-built node: 8 devices, 100 TFLOP/s bf16, 80 GB, 2 TB/s HBM, 300 GB/s NVLink, 25 GB/s NIC.
NODE = DeviceSpec(name="test-gpu", kind="gpu", vendor="test", peak_tflops={"bf16": 100.0, "fp32": 10.0},
                  memory_gb=80, memory_bandwidth_gbps=2000, intra_node_gbps=300, network_gbps=25,
                  devices_per_node=8, source="test", date="2026-01-01")
GPT3 = TransformerShape(layers=96, hidden=12288, heads=96, vocab=51200, seq_len=2048)
TINY = TransformerShape(layers=2, hidden=64, heads=4, vocab=100, seq_len=16)


# ---- collectives ---------------------------------------------------------------------------
def test_collective_costs_hand_arithmetic():
    # 2*(4-1)/4 * 1e9 B / 300e9 B/s = 5 ms
    assert ring_all_reduce_s(1e9, 4, 300e9) == pytest.approx(5e-3)
    # (4-1)/4 * 1e9 B / 300e9 B/s = 2.5 ms
    assert all_gather_s(1e9, 4, 300e9) == pytest.approx(2.5e-3)
    assert reduce_scatter_s(1e9, 4, 300e9) == pytest.approx(2.5e-3)
    # 1e9 B / 50e9 B/s = 20 ms
    assert p2p_s(1e9, 50e9) == pytest.approx(20e-3)
    assert ring_all_reduce_s(1e9, 1, 300e9) == 0.0


def test_collective_latency_ring_and_hierarchical_hand_arithmetic():
    from profilers.parallel.comm import NCCL_LATENCY, collective_s, group_nodes

    # toy size: 1 MB all-reduce over 4 ranks in one node (NVLink 300 GB/s):
    # 2*(3/4)*1e6/300e9 = 5 us of bandwidth + 8.4 us base + 2*3 hops * 3.4 us = 33.4 us
    assert collective_s("all_reduce", 1e6, NODE, 4) == pytest.approx(5e-6 + 8.4e-6 + 6 * 3.4e-6)
    # all-gather of 1 MB over 16 ranks on 2 nodes (8 per node: min(300, 8*25) = 200 GB/s):
    # (15/16)*1e6/200e9 = 4.6875 us + 8.4 us + 15 steps of which 1 crosses: 14*3.4 + 9.6 = 65.6 us
    assert group_nodes(NODE, 16) == 2
    assert collective_s("all_gather", 1e6, NODE, 16) == pytest.approx(4.6875e-6 + 8.4e-6 + 14 * 3.4e-6 + 9.6e-6)
    # all-reduce over 64 ranks on 8 nodes, 1 GB. Flat ring: 2*(63/64)*1e9/200e9 = 9.84375 ms
    # + 8.4 + (126-14)*3.4 + 14*9.6 us = 0.5492 ms -> 10.39295 ms.
    # Hierarchical: intra RS + AG of 1 GB over 8 (2 * ((7/8)*1e9/300e9 + 8.4 us + 7*3.4 us) = 5.89773 ms)
    # + inter all-reduce of 1e9/8 B over 8 nodes on the 25 GB/s NIC (2*(7/8)*1.25e8/25e9 = 8.75 ms
    # + 8.4 us + 14*9.6 us) = 14.79... ms: the flat ring is faster here.
    flat = 2 * 63 / 64 * 1e9 / 200e9 + 8.4e-6 + 112 * 3.4e-6 + 14 * 9.6e-6
    assert collective_s("all_reduce", 1e9, NODE, 64) == pytest.approx(flat)
    # small message over many ranks: latency-bound, the hierarchical algorithm wins.
    # 4 KB over 512 ranks (64 nodes): flat = 2*(511/512)*4096/200e9 + 8.4 + (1022-126)*3.4 + 126*9.6 us;
    # hierarchical = 2*((7/8)*4096/300e9 + 8.4e-6 + 7*3.4e-6) + 2*(63/64)*512/25e9 + 8.4e-6 + 126*9.6e-6
    flat = 2 * 511 / 512 * 4096 / 200e9 + 8.4e-6 + 896 * 3.4e-6 + 126 * 9.6e-6
    hier = 2 * (7 / 8 * 4096 / 300e9 + 8.4e-6 + 7 * 3.4e-6) + 2 * 63 / 64 * 512 / 25e9 + 8.4e-6 + 126 * 9.6e-6
    assert hier < flat
    assert collective_s("all_reduce", 4096, NODE, 512) == pytest.approx(hier)
    assert NCCL_LATENCY.ring_s(0, 0) == 0.0 and collective_s("all_gather", 1e6, NODE, 1) == 0.0
    with pytest.raises(ConfigError, match="kind"):
        collective_s("broadcast", 1e6, NODE, 4)


def test_zero3_prefetch_exposes_only_the_excess_per_layer():
    # ZeRO-3 over 16 ranks (2 nodes), no latency, TINY-ish layers: per layer the gather (bytes
    # (15/16) * 2 B * layer params / 200 GB/s) hides behind the previous layer's forward when it is
    # shorter; with overlap off all of it is exposed.
    shp = TransformerShape(layers=4, hidden=1024, heads=16, vocab=1000, seq_len=2048)
    cfg = ParallelConfig(dp=16, zero_stage=3, micro_batch=1, global_batch=16)
    off = step_time(shp, cfg, NODE, TimeModel(overlap_dp_comm=False, latency=False, jitter=0.0, step_overhead_s=0.0))
    on = step_time(shp, cfg, NODE, TimeModel(latency=False, jitter=0.0, step_overhead_s=0.0))
    layer_p = sum(shp.layer_parameters())
    ag = 15 / 16 * 2 * layer_p / 200e9
    rs = 15 / 16 * 2 * layer_p / 200e9  # bf16 gradients reduce-scattered
    rest = shp.parameters() - 4 * layer_p
    rest_t = 3 * 15 / 16 * 2 * rest / 200e9
    assert off.dp_comm_s == pytest.approx(4 * (2 * ag + rs) + rest_t)
    # compute per layer is far longer than its gather here, so only the first gather and the
    # embedding/head traffic stay exposed
    assert on.dp_comm_s == pytest.approx(ag + rest_t)
    # DeepSpeed-style per-module gathers: the same bytes, more collectives: more latency
    lat1 = step_time(shp, cfg, NODE, TimeModel(overlap_dp_comm=False, jitter=0.0, step_overhead_s=0.0))
    lat6 = step_time(shp, cfg, NODE, TimeModel(overlap_dp_comm=False, jitter=0.0, step_overhead_s=0.0,
                                               zero3_gathers_per_layer=6))
    assert lat6.dp_comm_s > lat1.dp_comm_s > off.dp_comm_s


def test_group_bandwidth_intra_inter_hierarchical():
    assert group_bandwidth(NODE, 8, 1) == 300e9  # one node: NVLink
    assert group_bandwidth(NODE, 4, 8) == 25e9  # one member per node: its NIC
    # 16 ranks, 8 per node: min(300, 8 * 25) GB/s = 200 GB/s
    assert group_bandwidth(NODE, 16, 1) == 200e9
    # stride 2 (tp=2), 8 ranks over 2 nodes, 4 per node: min(300, 4 * 25) = 100 GB/s
    assert group_bandwidth(NODE, 8, 2) == 100e9
    assert group_bandwidth(NODE, 1, 1) == math.inf


# ---- FLOPs ---------------------------------------------------------------------------------
def test_training_flops_hand_arithmetic_and_megatron_formula():
    # TINY, 1 sequence of 16 tokens: dense fwd/layer = 2*16*(64*192 + 64*64 + 2*64*256) = 1,572,864;
    # attention core = 4*16*16*64 = 65,536; LM head fwd = 2*16*64*100 = 204,800.
    f = training_flops(TINY, 1, "full")
    assert f.model == 3 * (2 * (1_572_864 + 65_536) + 204_800) == 10_444_800
    assert f.recompute == 2 * (1_572_864 + 65_536) == 3_276_800
    # Narayanan eq. 3: 96*1*16*2*64^2*(1 + 16/384 + 100/2048) = 13,721,600
    assert megatron_flops(2, 64, 100, 16, 1) == pytest.approx(13_721_600)
    assert f.hardware == pytest.approx(13_721_600)
    sel = training_flops(TINY, 1, "selective")
    assert sel.recompute == 2 * 65_536
    # GPT-3 scale: equality holds for any GPT shape
    assert training_flops(GPT3, 8, "full").hardware == pytest.approx(megatron_flops(96, 12288, 51200, 2048, 8))


# ---- parameters ------------------------------------------------------------------------------
def test_parameters_match_megatron_formula_and_transformers():
    # Narayanan: P = 12*l*h^2*(1 + 13/(12h) + (V+s)/(12*l*h)) (+ the final LayerNorm, 2h)
    l, h, v, s = 128, 25600, 51200, 2048
    one_t = TransformerShape(layers=l, hidden=h, heads=160, vocab=v, seq_len=s)
    assert one_t.parameters() == pytest.approx(12 * l * h * h * (1 + 13 / (12 * h) + (v + s) / (12 * l * h)) + 2 * h)
    assert round(one_t.parameters() / 1e9, 1) == 1008.0  # Table 1's 1008.0 B

    torch = pytest.importorskip("torch")
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    cases = [
        (GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32), GPT2LMHeadModel),
        (LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=100, max_position_embeddings=32), LlamaForCausalLM),
        (LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=8,
                     num_key_value_heads=8, vocab_size=50, tie_word_embeddings=True), LlamaForCausalLM),
    ]
    for cfg, cls in cases:
        with torch.device("meta"):
            model = cls(cfg)
        assert TransformerShape.from_hf_config(cfg).parameters() == sum(p.numel() for p in model.parameters())
        assert TransformerShape.from_hf_config(cfg.to_dict()).parameters() == sum(p.numel() for p in model.parameters())


def test_from_hf_config_llama_values():
    cfg = dict(model_type="llama", num_hidden_layers=32, hidden_size=4096, num_attention_heads=32,
               num_key_value_heads=32, intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096)
    shp = TransformerShape.from_hf_config(cfg)
    assert (shp.layers, shp.hidden, shp.kv_heads, shp.ffn_hidden, shp.seq_len, shp.layout) == (32, 4096, 32, 11008, 4096, "llama")
    assert shp.parameters() == 6_738_415_616  # Llama-2-7B's published count
    with pytest.raises(ConfigError, match=r"^TransformerShape.from_hf_config.model_type must be one of 'gpt2', 'llama', 'mistral'; got 'bert'.$"):
        TransformerShape.from_hf_config({"model_type": "bert"})


# ---- activation memory (Korthikanti Table 2) ---------------------------------------------------
def test_activation_bytes_korthikanti_table2():
    sbh = 2048 * 1 * 12288  # s*b*h = 25,165,824 for GPT-3, b=1; 5*a*s/h = 5*96*2048/12288 = 80
    assert activation_bytes_per_layer(GPT3, 1) == sbh * (34 + 80)  # 2,868,903,936
    assert activation_bytes_per_layer(GPT3, 1, tp=8) == sbh * (10 + 24 / 8 + 80 / 8)  # 578,813,952
    assert activation_bytes_per_layer(GPT3, 1, tp=8, sequence_parallel=True) == sbh * (34 / 8 + 80 / 8)
    assert activation_bytes_per_layer(GPT3, 1, tp=8, recompute="selective") == sbh * (10 + 24 / 8)
    assert activation_bytes_per_layer(GPT3, 1, tp=8, sequence_parallel=True, recompute="selective") == sbh * 34 / 8
    assert activation_bytes_per_layer(GPT3, 1, tp=8, recompute="full") == sbh * 2
    assert activation_bytes_per_layer(GPT3, 1, tp=8, sequence_parallel=True, recompute="full") == sbh * 2 / 8
    assert activation_bytes_per_layer(GPT3, 2, bytes_per_element=4) == 4 * sbh * 114  # b=2 and fp32: x2 x2


# ---- model states and ZeRO ----------------------------------------------------------------------
@pytest.mark.parametrize("zero, per_param", [(0, 16.0), (1, 2 + 2 + 12 / 8), (2, 2 + 14 / 8), (3, 16 / 8)])
def test_zero_stage_bytes_per_parameter(zero, per_param):
    # mixed-precision Adam, dp=8: ZeRO-0 16 B/param, ZeRO-1 4 + 12/8 = 5.5, ZeRO-2 2 + 14/8 = 3.75, ZeRO-3 16/8 = 2
    cfg = ParallelConfig(dp=8, zero_stage=zero, global_batch=8)
    m = memory_per_device(TINY, cfg, NODE)
    states = m.parameters_bytes + m.gradients_bytes + m.optimizer_bytes
    assert states == pytest.approx(per_param * TINY.parameters())


def test_pipeline_activations_in_flight():
    shp = TransformerShape(layers=16, hidden=1024, heads=16, vocab=1000, seq_len=512)
    per_layer = activation_bytes_per_layer(shp, 1, tp=2, recompute="selective")
    one_f_one_b = ParallelConfig(dp=1, tp=2, pp=4, global_batch=8, recompute="selective")
    # 1F1B: stage 0 holds min(pp, m) = 4 micro-batches x 16/4 layers = 16 layers' worth
    assert memory_per_device(shp, one_f_one_b).activations_bytes == pytest.approx(16 * per_layer)
    inter = ParallelConfig(dp=1, tp=2, pp=4, global_batch=8, interleave=2, recompute="selective")
    # interleaved: L * (1 + (p-1)/(p*v)) = 16 * (1 + 3/8) = 22 layers' worth
    assert memory_per_device(shp, inter).activations_bytes == pytest.approx(22 * per_layer)


def test_fits_verdict_against_device():
    small = memory_per_device(TINY, ParallelConfig(), NODE)
    assert small.fits is True and small.usable_bytes == 0.9 * 80e9
    big = memory_per_device(GPT3, ParallelConfig(dp=1), NODE)  # 175B x 16 B on one 80 GB device
    assert big.fits is False and big.total_bytes > 16 * 174e9
    assert memory_per_device(TINY, ParallelConfig()).fits is None  # no device: no verdict


# ---- time ----------------------------------------------------------------------------------
def test_single_device_time_is_flops_over_rate_plus_memory_bound():
    cfg = ParallelConfig(global_batch=4, micro_batch=4)
    tm = TimeModel(efficiency=0.5, step_overhead_s=0.0)
    st = step_time(TINY, cfg, NODE, tm)
    gemm = training_flops(TINY, 4).hardware / (100e12 * 0.5)  # FLOPs / (100 TFLOP/s * 0.5)
    assert st.compute_s - st.memory_bound_s == pytest.approx(gemm)
    # memory-bound: 4 passes over the stored activations per layer / 2 TB/s; with FlashAttention
    # (the default) the s x s scores are not among them: the selective set
    assert st.memory_bound_s == pytest.approx(2 * 4 * activation_bytes_per_layer(TINY, 4, recompute="selective") / 2000e9)
    eager = step_time(TINY, cfg, NODE, TimeModel(efficiency=0.5, flash_attention=False))
    assert eager.memory_bound_s == pytest.approx(2 * 4 * activation_bytes_per_layer(TINY, 4) / 2000e9)
    # Adam: 28 B/param / 2 TB/s
    assert st.optimizer_s == pytest.approx(TINY.parameters() * 28 / 2000e9)
    assert st.total_s == pytest.approx(st.compute_s + st.optimizer_s)
    assert st.bubble_s == st.tp_comm_s == st.pp_comm_s == st.dp_comm_s == st.straggler_s == 0
    # left at None, the per-step overhead is the training calibration's (a GPU-like device)
    from profilers.parallel.calibration import training

    cal = step_time(TINY, cfg, NODE, TimeModel(efficiency=0.5))
    assert cal.framework_s == pytest.approx(training().step_overhead_s) and cal.total_s == pytest.approx(st.total_s + cal.framework_s)


def test_tensor_parallel_comm_hand_arithmetic():
    shp = TransformerShape(layers=4, hidden=1024, heads=16, vocab=1000, seq_len=1024)
    cfg = ParallelConfig(tp=4, micro_batch=2, global_batch=2)
    st = step_time(shp, cfg, NODE, TimeModel(overlap_tp_comm="none"))
    # per layer 4 all-reduces of 2*1024*1024 elements * 2 B = 4 MiB: 2*(3/4)*4,194,304 B / 300e9 B/s = 20.97 us,
    # plus NCCL's ring latency inside a node: 8.4 us + 2*(4-1) NVLink hops * 3.4 us = 28.8 us
    one = 2 * 3 / 4 * 4_194_304 / 300e9 + 28.8e-6
    assert st.tp_comm_s == pytest.approx(4 * 4 * one)
    st_b = step_time(shp, cfg, NODE, TimeModel(overlap_tp_comm="backward"))
    assert st_b.tp_comm_s == pytest.approx(4 * 2 * one)  # the backward two are hidden
    full = step_time(shp, ParallelConfig(tp=4, micro_batch=2, global_batch=2, recompute="full"), NODE,
                     TimeModel(overlap_tp_comm="none"))
    assert full.tp_comm_s == pytest.approx(4 * 6 * one)
    no_lat = step_time(shp, cfg, NODE, TimeModel(overlap_tp_comm="none", latency=False))
    assert no_lat.tp_comm_s == pytest.approx(4 * 4 * (one - 28.8e-6))


def test_pipeline_bubble_and_data_parallel_comm():
    shp = TransformerShape(layers=8, hidden=512, heads=8, vocab=1000, seq_len=256)
    cfg = ParallelConfig(dp=2, pp=4, global_batch=16, micro_batch=1)  # m = 16 / (1*2) = 8
    st = step_time(shp, cfg, NODE, TimeModel(overlap_dp_comm=False, latency=False, jitter=0.0, step_overhead_s=0.0))
    stage_mb = (st.compute_s + st.tp_comm_s + st.pp_comm_s) / 8
    assert st.bubble_s == pytest.approx((4 - 1) * stage_mb)  # (p-1)/(m*v) of the m micro-batches
    inter = step_time(shp, ParallelConfig(dp=2, pp=4, global_batch=16, interleave=2), NODE)
    assert inter.bubble_s < st.bubble_s
    # dp=2 inside a node, ZeRO-0: ring all-reduce of 2 B x the largest stage's parameters
    layers = 2 * sum(shp.layer_parameters())
    last = layers + 2 * 512 + 1000 * 512  # final LayerNorm + the tied embedding's copy on the last stage
    first = layers + 1000 * 512 + 256 * 512  # token + position embedding
    assert st.dp_comm_s == pytest.approx(2 * (1 / 2) * 2 * max(first, last) / 300e9)
    assert st.total_s == pytest.approx(st.compute_s + st.bubble_s + st.tp_comm_s + st.pp_comm_s + st.dp_comm_s + st.optimizer_s)
    # stragglers and a per-step overhead add to the total: 8 devices, jitter 0.01 ->
    # 0.01 * sqrt(2 ln 8) = 0.0204 of the compute time; + 0.05 s per step
    jit = step_time(shp, cfg, NODE, TimeModel(overlap_dp_comm=False, latency=False, jitter=0.01, step_overhead_s=0.05))
    assert jit.straggler_s == pytest.approx(0.01 * math.sqrt(2 * math.log(8)) * st.compute_s)
    assert jit.total_s == pytest.approx(st.total_s + jit.straggler_s + 0.05)


def test_flops_per_step_input_rescales_compute():
    cfg = ParallelConfig(global_batch=2)
    base = step_time(TINY, cfg, NODE)
    doubled = step_time(TINY, cfg, NODE, flops_per_step=2 * training_flops(TINY, 2).model)
    gemm = base.compute_s - base.memory_bound_s
    assert doubled.compute_s - doubled.memory_bound_s == pytest.approx(2 * gemm)
    assert doubled.model_flops == pytest.approx(2 * base.model_flops)


def test_layer_time_recompute_ordering():
    shp = TransformerShape(layers=48, hidden=6144, heads=64, vocab=51200, seq_len=2048)
    t = {rc: layer_time(shp, ParallelConfig(tp=8, micro_batch=4, global_batch=4, recompute=rc), NODE).total_s
         for rc in ("none", "selective", "full")}
    assert t["none"] < t["selective"] < t["full"]
    assert 1.3 < t["full"] / t["none"] < 1.5  # ~ +1 forward: 4/3 plus the repeated all-reduces


# ---- validation messages ---------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(dp=3, global_batch=2), "ParallelConfig.global_batch must be >= micro_batch * dp = 3 (every replica runs at "
                                 "least one micro-batch); got 2."),
    (dict(zero_stage=4), "ParallelConfig.zero_stage must be one of 0, 1, 2, 3; got 4."),
    (dict(pp=2, zero_stage=2), "ParallelConfig.zero_stage must be 0 or 1 with pipeline parallelism (pp > 1); got 2."),
    (dict(interleave=2), "ParallelConfig.interleave must be 1 without pipeline parallelism (pp == 1); got 2."),
    (dict(pp=4, interleave=2, global_batch=6), "ParallelConfig.interleave must be 1 unless the micro-batches per pipeline (6) are a multiple of pp = 4; got 2."),
    (dict(recompute="some"), "ParallelConfig.recompute must be one of 'none', 'selective', 'full'; got 'some'."),
    (dict(sequence_parallel=True), "ParallelConfig.sequence_parallel must be False when tp == 1 (it shards over the tensor-parallel group); got True."),
    (dict(precision="int8"), "ParallelConfig.precision must be one of 'bf16', 'fp16', 'fp32', 'fp8'; got 'int8'."),
    (dict(tp=0), "ParallelConfig.tp must be an integer >= 1; got 0."),
])
def test_parallel_config_messages(kwargs, message):
    with pytest.raises(ConfigError) as e:
        ParallelConfig(**kwargs)
    assert str(e.value) == message


def test_validate_for_shape_and_devices():
    shp = TransformerShape(layers=12, hidden=768, heads=12, kv_heads=4, vocab=1000, seq_len=1024)
    with pytest.raises(ConfigError, match=r"^ParallelConfig.devices must be the device count 8 \(dp \* tp \* pp\); got 4.$"):
        ParallelConfig(dp=4).validate_for(shp, devices=8)
    with pytest.raises(ConfigError, match=r"^ParallelConfig.tp must be a divisor of heads=12; got 8.$"):
        ParallelConfig(tp=8).validate_for(shp)
    with pytest.raises(ConfigError, match=r"^ParallelConfig.tp must be a divisor of kv_heads=4; got 3.$"):
        ParallelConfig(tp=3).validate_for(shp)
    with pytest.raises(ConfigError, match=r"^ParallelConfig.pp must be such that pp \* interleave = 5\*2 divides "
                       r"layers=12 \(uneven stages are modelled without interleaving\); got 5.$"):
        ParallelConfig(pp=5, interleave=2, global_batch=10).validate_for(shp)
    assert ParallelConfig(pp=5).validate_for(shp).stage_layers(shp) == (3, 2)  # 12 layers on 5 stages
    with pytest.raises(ConfigError, match=r"^ParallelConfig.pp must be <= layers=12 \(every stage holds a layer\); got 16.$"):
        ParallelConfig(pp=16).validate_for(shp)
    assert ParallelConfig(dp=2, tp=4, pp=1).validate_for(shp, devices=8).devices == 8
    with pytest.raises(ConfigError, match=r"^TransformerShape.heads must be a divisor of hidden=100; got 3.$"):
        TransformerShape(layers=1, hidden=100, heads=3, vocab=10, seq_len=8)
    with pytest.raises(ConfigError, match=r"^TimeModel.overlap_tp_comm must be one of 'none', 'backward', 'all'; got 'yes'.$"):
        TimeModel(overlap_tp_comm="yes")


def test_json_round_trip():
    cfg = ParallelConfig(dp=2, tp=2, pp=2, micro_batch=2, global_batch=16, interleave=2, recompute="selective",
                         sequence_parallel=True)
    assert loads(dumps(cfg)) == cfg
    assert loads(dumps(GPT3)) == GPT3
    assert loads(dumps(TimeModel(efficiency=0.4))) == TimeModel(efficiency=0.4)
    assert loads(dumps(MemoryModel(usable_fraction=0.8))) == MemoryModel(usable_fraction=0.8)
    shp = TransformerShape(layers=8, hidden=512, heads=8, vocab=1000, seq_len=256, name="t")
    res = plan(shp, NODE, 8, 16)
    back = loads(dumps(res))
    assert back == res and back.fastest.config == res.fastest.config


# ---- planner -------------------------------------------------------------------------------
def _brute_force(shp, device, n, gb):
    best = None
    for cfg in enumerate_configs(shp, n, gb, max_tp=device.devices_per_node):
        m = memory_per_device(shp, cfg, device)
        if m.fits:
            t = step_time(shp, cfg, device).total_s
            best = t if best is None else min(best, t)
    return best


def test_planner_matches_brute_force_on_random_instances():
    rng = random.Random(5)
    for _ in range(6):
        heads = rng.choice([8, 16])
        shp = TransformerShape(layers=rng.choice([8, 12, 16]), hidden=heads * rng.choice([64, 128, 256]), heads=heads,
                               kv_heads=heads // rng.choice([1, 2]), vocab=rng.choice([1000, 32000]),
                               seq_len=rng.choice([512, 2048]), layout=rng.choice(["gpt", "llama"]))
        n, gb = rng.choice([4, 8, 16]), rng.choice([16, 32, 64])
        res = plan(shp, NODE, n, gb)
        assert res.status == "ok"
        best = res.fastest
        assert best.memory.fits and best.config.devices == n
        assert best.time.total_s == pytest.approx(_brute_force(shp, NODE, n, gb))
        assert res.evaluated == sum(1 for _ in enumerate_configs(shp, n, gb, max_tp=8))


def test_planner_cheapest_over_a_range_and_dollars():
    shp = TransformerShape(layers=16, hidden=2048, heads=16, vocab=32000, seq_len=2048)
    res = plan(shp, NODE, [4, 8, 16], 64, usd_per_device_hour=2.0)
    fits = []
    for n in (4, 8, 16):
        for cfg in enumerate_configs(shp, n, 64, max_tp=8):
            if memory_per_device(shp, cfg, NODE).fits:
                fits.append(n * step_time(shp, cfg, NODE).total_s)
    assert res.cheapest.device_seconds_per_step == pytest.approx(min(fits))
    assert res.cheapest.cost_usd_per_step == pytest.approx(min(fits) / 3600 * 2.0)
    assert res.fastest.time.total_s <= res.cheapest.time.total_s


def test_planner_infeasible_is_a_result():
    res = plan(GPT3, NODE, 8, 8)  # 175B x 16 B >> 8 x 80 GB
    assert res.status == "infeasible" and res.fastest is None
    assert "To fix:" in res.message and res.closest
    assert [c.memory.total_bytes for c in res.closest] == sorted(c.memory.total_bytes for c in res.closest)
    with pytest.raises(ConfigError, match=r"^plan.global_batch must be an integer >= 1 \(sequences per step\); got 0.$"):
        plan(GPT3, NODE, 8, 0)


def test_planner_70b_on_64_h100_is_fast():
    h100 = hardware.get("H100-SXM")
    shp = TransformerShape(layers=80, hidden=8192, heads=64, kv_heads=8, ffn_hidden=28672, vocab=32000,
                           seq_len=4096, layout="llama", tied_embeddings=False, dropout=False)
    t0 = time.perf_counter()
    res = plan(shp, h100, 64, 1024)
    elapsed = time.perf_counter() - t0
    assert res.status == "ok" and res.fastest.memory.fits
    assert elapsed < 5.0, elapsed


# ---- what people run: uneven stages, an accumulation remainder, fp8 (issue 14) -------------------


def test_uneven_pipeline_stages_run_at_the_slowest_stage():
    from profilers import hardware
    from profilers.parallel import layer_time, step_time

    h100 = hardware.get("H100-SXM")
    shp = TransformerShape(layers=10, hidden=1024, heads=16, vocab=32000, seq_len=1024, layout="llama")
    tm = TimeModel(efficiency=0.5)
    even = ParallelConfig(pp=5, micro_batch=1, global_batch=10)
    uneven = ParallelConfig(pp=4, micro_batch=1, global_batch=10)
    # 10 layers on 4 stages: 3, 3, 2, 2 layers; the first stage (3 layers) sets the pace unless the
    # last (2 layers + the LM head) is slower; per micro-batch: 3 x t_layer vs 2 x t_layer + head
    from profilers.parallel.flops import lm_head_forward_flops

    lt = layer_time(shp, uneven, h100, tm)
    head = 3.0 * lm_head_forward_flops(shp, 1 * 1024) / (h100.peak_flops_per_s("bf16") * 0.5)
    t = step_time(shp, uneven, h100, tm)
    assert uneven.stage_layers(shp) == (3, 2) and uneven.micro_batches == 10
    # tp = 1: no tensor-parallel time; the pace is the slower of the two stage kinds, 10 micro-batches
    assert t.compute_s == pytest.approx(10 * max(3 * lt.total_s, 2 * lt.total_s + head), rel=1e-9)
    assert step_time(shp, even, h100, tm).total_s > 0


def test_a_gradient_accumulation_remainder_rounds_up():
    # global batch 10 on dp 4 with micro-batch 1: 2.5 rounds per replica -> 3, the last partly filled
    cfg = ParallelConfig(dp=4, micro_batch=1, global_batch=10)
    assert cfg.micro_batches == 3


def test_fp8_training_uses_the_fp8_peak_and_an_fp8_weight_copy():
    from profilers import hardware
    from profilers.parallel import MemoryModel, layer_time

    h100, a100 = hardware.get("H100-SXM"), hardware.get("A100-80GB")
    shp = TransformerShape(layers=2, hidden=4096, heads=32, vocab=32000, seq_len=4096, layout="llama")
    tm = TimeModel(efficiency=0.5)
    bf, f8 = ParallelConfig(precision="bf16"), ParallelConfig(precision="fp8")
    lb, l8 = layer_time(shp, bf, h100, tm), layer_time(shp, f8, h100, tm)
    # the GEMMs run at the fp8 peak (1978.9 vs 989.4 TFLOP/s dense on H100-SXM): half the GEMM time
    gemm_b = lb.forward_s - lb.forward_memory_s - lb.forward_tp_s
    gemm_8 = l8.forward_s - l8.forward_memory_s - l8.forward_tp_s
    assert gemm_8 == pytest.approx(gemm_b * h100.peak_tflops["bf16"] / h100.peak_tflops["fp8"], rel=1e-9)
    assert l8.forward_memory_s == pytest.approx(lb.forward_memory_s)  # bf16 outside the GEMMs
    # weights: bf16 (2 B) + the fp8 copy (1 B) per parameter
    assert MemoryModel().state_bytes("fp8")[0] == 3.0 and MemoryModel().state_bytes("bf16")[0] == 2.0
    with pytest.raises(ConfigError, match=r"DeviceSpec\['A100-80GB'\].dtype must be one of"):
        layer_time(shp, f8, a100, tm)


def test_bloom_176b_published_384_gpu_layout_is_expressible():
    # BLOOM-176B (BigScience 2022): 70 layers, hidden 14336, 112 heads, tp 4 x pp 12 x dp 8 = 384 A100s
    from profilers import hardware
    from profilers.parallel import plan, step_time

    shp = TransformerShape(layers=70, hidden=14336, heads=112, vocab=250880, seq_len=2048, layout="gpt")
    cfg = ParallelConfig(dp=8, tp=4, pp=12, micro_batch=2, global_batch=2048, recompute="full")
    cfg.validate_for(shp, devices=384)
    assert cfg.stage_layers(shp) == (6, 5)
    assert step_time(shp, cfg, hardware.get("A100-80GB")).total_s > 0
    res = plan(shp, hardware.get("A100-80GB"), 384, 2048)
    assert res.evaluated > 0
