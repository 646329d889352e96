"""profilers.measure: a real execution on this machine -> Profile.

Timing assertions are sanity only (> 0, p10 <= median <= p90, run counts, a sleep's lower bound);
nothing depends on how fast this machine is. FLOP counts are exact (2 FLOPs per multiply-add).
"""

from __future__ import annotations

import copy
import time

import pytest
import torch
from torch import nn

from profilers import ConfigError, Profile, Timing, measure, workloads
from profilers.host import host_device_name

FAST = dict(time_cap_s=0.2, min_runs=5, warmup=1)
MIB = 2**20


def two_linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def conv_bn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())


X_LIN = torch.randn(4, 16)
X_CONV = torch.randn(2, 3, 10, 10)


@pytest.fixture(scope="module")
def lin_profile() -> Profile:
    return measure(two_linear(), X_LIN, **FAST)


@pytest.fixture(scope="module")
def conv_profile() -> Profile:
    return measure(conv_bn(), X_CONV, **FAST)


def _check_timing(t: Timing, min_runs: int = 5) -> None:
    assert isinstance(t, Timing)
    assert 0 < t.p10_s <= t.median_s <= t.p90_s
    assert t.runs >= min_runs
    assert t.timed_s >= t.median_s * (t.runs // 2)  # at least half the runs took >= the median
    assert t.ci_rel >= 0
    assert t.method == "time.perf_counter"


# ---- the figures of a Profile ---------------------------------------------------------------------


def test_measured_profile_identity(lin_profile):
    p = lin_profile
    assert p.source == "measured"
    assert p.device == "host"
    assert p.device_description == host_device_name()
    assert p.provenance.startswith("measured on ")
    assert p.provenance == f"measured on {host_device_name()}, torch {torch.__version__}"
    assert p.torch_version == torch.__version__
    assert p.dtype == "fp32"
    assert p.batch_size == 4  # first dimension of the input
    assert p.model == "Sequential"
    assert "inputs Tensor[4, 16]:float32" in p.notes
    assert p.created  # ISO timestamp


def test_linear_stack_flops_exact(lin_profile):
    p = lin_profile
    # forward: 2 * 4 * 16 * 32 + 2 * 4 * 32 * 8 = 4096 + 2048 = 6144
    assert p.forward_flops == 6144
    # backward (the input does not require grad, so layer 1 has no input gradient):
    #   layer 2 weight grad 2*4*32*8 = 2048, layer 2 input grad 2*4*32*8 = 2048, layer 1 weight grad 2*4*16*32 = 4096
    #   train = 6144 + 2048 + 2048 + 4096 = 14336
    assert p.train_flops == 14336
    assert sum(r.total_flops for r in p.ops) == 6144
    assert sum(r.total_flops for r in p.train_ops) == 14336


def test_single_linear_train_is_twice_forward():
    # forward 2 * 4 * 16 * 8 = 1024; backward only the weight gradient (same size) -> 2048
    p = measure(nn.Linear(16, 8), X_LIN, **FAST)
    assert (p.forward_flops, p.train_flops) == (1024, 2048)


def test_parameters_and_bytes_exact(lin_profile):
    # (16*32 + 32) + (32*8 + 8) = 544 + 264 = 808 parameters, 4 bytes each
    assert lin_profile.parameters == 808
    assert lin_profile.parameter_bytes == 808 * 4
    assert lin_profile.buffer_bytes == 0
    assert lin_profile.gradient_bytes == 808 * 4
    # AdamW: two fp32 moments per parameter (+ a tiny step counter per parameter tensor)
    assert 2 * 3232 <= lin_profile.optimizer_state_bytes <= 2 * 3232 + 4 * 8
    assert lin_profile.serialized_bytes > lin_profile.parameter_bytes


def test_conv_bn_flops_params_buffers(conv_profile):
    p = conv_profile
    # conv: output 2 x 8 x 10 x 10 = 1600 values, each 3 * 3 * 3 = 27 multiply-adds: 2 * 1600 * 27 = 86400
    # (BatchNorm in eval and ReLU count 0)
    assert p.forward_flops == 86400
    # backward: weight gradient only (input needs no grad): 86400 more
    assert p.train_flops == 2 * 86400
    # conv 8*3*3*3 + 8 = 224, BN weight + bias 16 -> 240
    assert p.parameters == 240 and p.parameter_bytes == 960
    # BN buffers: running_mean + running_var 8 fp32 each = 64, num_batches_tracked int64 = 8
    assert p.buffer_bytes == 72
    assert p.serialized_bytes > p.parameter_bytes + p.buffer_bytes
    assert any(r.op_class == "conv" and r.flops == 86400 for r in p.ops)


def test_timings_consistent(lin_profile):
    _check_timing(lin_profile.latency)
    _check_timing(lin_profile.train_step)
    assert lin_profile.throughput_per_s == pytest.approx(4 / lin_profile.latency.median_s)


def test_memory_figures(lin_profile, conv_profile):
    for p, input_bytes in ((lin_profile, 4 * 16 * 4), (conv_profile, 2 * 3 * 10 * 10 * 4)):
        resident = p.parameter_bytes + p.buffer_bytes + input_bytes
        assert p.peak_memory_bytes >= resident
        # the output tensor is allocated inside the window
        assert p.peak_memory_bytes > resident
        # training holds gradients and AdamW state on top
        assert p.train_peak_memory_bytes > p.peak_memory_bytes
        assert p.train_peak_memory_bytes >= resident + p.optimizer_state_bytes + p.gradient_bytes
        assert "torch profiler" in p.memory_method


class Temporary(nn.Module):
    """A Linear whose forward may also allocate (and drop) a 64 MiB temporary."""

    def __init__(self, big: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(16, 8)
        self.big = big

    def forward(self, x):
        if self.big:
            t = torch.empty(16 * MIB)  # 16 Mi fp32 = 64 MiB
            t.fill_(1.0)
            del t
        return self.lin(x)


def test_cpu_peak_memory_sees_real_allocations():
    small = measure(Temporary(False), X_LIN, **FAST)
    big = measure(Temporary(True), X_LIN, **FAST)
    assert big.parameter_bytes == small.parameter_bytes
    resident = big.parameter_bytes + 4 * 16 * 4  # parameters + input
    # without the temporary the peak is the resident bytes plus the 4 x 8 fp32 output (128 B), and
    # at most some kernel scratch
    assert resident + 4 * 8 * 4 <= small.peak_memory_bytes < resident + 64 * 1024
    # the 64 MiB temporary must show up in the peak (it is freed before the output is allocated)
    assert big.peak_memory_bytes >= resident + 64 * MIB
    assert big.peak_memory_bytes - small.peak_memory_bytes >= 64 * MIB - 128
    assert big.peak_memory_bytes - small.peak_memory_bytes < 65 * MIB  # and nothing invented on top
    assert big.train_peak_memory_bytes >= 64 * MIB + big.parameter_bytes + big.optimizer_state_bytes
    assert small.peak_memory_bytes < 1 * MIB


def test_train_false_has_no_training_figures():
    p = measure(two_linear(), X_LIN, train=False, **FAST)
    assert p.train_step is None and p.train_flops is None and p.train_peak_memory_bytes is None
    assert p.train_ops == () and p.gradient_bytes is None and p.optimizer_state_bytes is None
    assert p.forward_flops == 6144 and p.latency is not None


def test_callers_model_and_inputs_not_mutated():
    m = conv_bn().train()
    m[1].running_mean.fill_(0.25)
    before = copy.deepcopy(m.state_dict())
    x = X_CONV.clone()
    measure(m, x, train=True, **FAST)
    after = m.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k  # weights and BN running stats untouched
    assert all(p.grad is None for p in m.parameters())
    assert m.training is True  # its mode is the caller's
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in m.parameters())
    assert torch.equal(x, X_CONV)


def test_bf16_profile_halves_parameter_bytes(conv_profile):
    m = conv_bn()
    p = measure(m, X_CONV, dtype="bf16", **FAST)
    assert p.dtype == "bf16"
    assert p.parameters == 240 and p.parameter_bytes == 960 // 2
    # floating buffers are cast (8 * 2 bytes each), num_batches_tracked stays int64
    assert p.buffer_bytes == 2 * 8 * 2 + 8
    assert p.forward_flops == conv_profile.forward_flops  # FLOPs do not depend on the dtype
    assert next(m.parameters()).dtype == torch.float32  # the caller's copy is not cast


def test_tuple_and_dict_inputs():
    class Add(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 8, bias=False)

        def forward(self, a, b):
            return self.lin(a) + self.lin(b)

    a, b = torch.randn(3, 16), torch.randn(3, 16)
    # 2 matmuls of 2 * 3 * 16 * 8 = 768 each
    pt = measure(Add(), (a, b), train=False, **FAST)
    pd = measure(Add(), {"a": a, "b": b}, train=False, **FAST)
    assert pt.forward_flops == pd.forward_flops == 1536
    assert pt.batch_size == pd.batch_size == 3
    assert pd.notes[0] == "inputs {a: Tensor[3, 16]:float32, b: Tensor[3, 16]:float32}"


def test_name_and_batch_size_overrides():
    p = measure(nn.Linear(16, 8), X_LIN, name="my-linear", batch_size=7, train=False, **FAST)
    assert p.model == "my-linear" and p.batch_size == 7


def test_measure_a_workload():
    wl = workloads.get("digits")
    p = measure(wl, batch_size=16, **FAST)
    assert p.model == "digits-cnn" and p.batch_size == 16 and p.source == "measured"
    m = wl.build()
    assert p.parameters == sum(t.numel() for t in m.parameters())
    # conv1 1->16 3x3 on 8x8: 2*16*64*9 = 18432 / sample; conv2 16->32: 2*32*64*144 = 589824;
    # fc 512->64: 2*512*64 = 65536; fc 64->10: 2*64*10 = 1280  -> 675072 per sample
    assert p.forward_flops == 16 * 675072
    assert p.train_step is not None  # the workload's targets and cross-entropy loss make a step
    _check_timing(p.latency)


# ---- the stopping rule -------------------------------------------------------------------------------


class Sleepy(nn.Module):
    """Each forward sleeps 2 ms: a lower bound on its latency that holds on any machine."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        time.sleep(0.002)
        return self.lin(x)


def test_stops_by_the_time_cap_when_the_target_is_unreachable():
    p = measure(Sleepy(), torch.randn(2, 4), train=False, target_ci=1e-12, time_cap_s=0.1, min_runs=5, warmup=0)
    t = p.latency
    assert t.stable is False
    assert t.median_s >= 0.002
    # every run takes >= 2 ms, so the 0.1 s cap allows at most 0.1 / 0.002 + 1 = 51 runs (max_runs is 10,000)
    assert 5 <= t.runs <= 51
    assert t.timed_s >= 0.002 * t.runs


def test_min_runs_respected_even_past_the_cap():
    p = measure(Sleepy(), torch.randn(2, 4), train=False, target_ci=1e-12, time_cap_s=1e-6, min_runs=7, warmup=0)
    assert p.latency.runs == 7 and p.latency.stable is False


def test_stops_at_min_runs_once_stable():
    p = measure(nn.Linear(4, 2), torch.randn(2, 4), target_ci=100.0, time_cap_s=10.0, min_runs=6, warmup=0)
    assert p.latency.runs == 6 and p.latency.stable is True
    assert p.train_step.runs == 6 and p.train_step.stable is True


def test_max_runs_bounds_the_loop():
    p = measure(nn.Linear(4, 2), torch.randn(2, 4), train=False, target_ci=1e-12, time_cap_s=60.0, min_runs=5,
                max_runs=8, warmup=0)
    assert p.latency.runs == 8 and p.latency.stable is False


CALLS: list[int] = []


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        CALLS.append(1)
        return self.lin(x)


def test_warmup_runs_happen_and_are_not_timed():
    def calls(warmup: int) -> tuple[int, int]:
        CALLS.clear()
        p = measure(Counting(), torch.randn(2, 4), train=False, target_ci=100.0, min_runs=5, warmup=warmup)
        return len(CALLS), p.latency.runs

    n0, runs0 = calls(0)
    n4, runs4 = calls(4)
    assert runs0 == runs4 == 5
    assert n4 - n0 == 4


# ---- bad input -------------------------------------------------------------------------------------


def test_not_a_module():
    with pytest.raises(ConfigError, match=r"^measure\.model must be a torch\.nn\.Module; got 'function'\.$"):
        measure(lambda x: x, X_LIN)


def test_missing_inputs():
    with pytest.raises(ConfigError, match=r"^measure\.inputs must be example inputs .*; got None\.$"):
        measure(nn.Linear(16, 8))


def test_wrong_input_shape_names_model_and_shapes():
    with pytest.raises(ConfigError) as info:
        measure(nn.Linear(16, 8), torch.randn(4, 5), **FAST)
    msg = str(info.value)
    assert "Linear" in msg and "Tensor[4, 5]" in msg and "RuntimeError" in msg


class Boom(nn.Module):
    def forward(self, x):
        raise KeyError("kaboom")


def test_model_that_raises_names_the_exception():
    with pytest.raises(ConfigError, match=r"Boom raised KeyError on inputs Tensor\[4, 16\]:float32: 'kaboom'") as info:
        measure(Boom(), X_LIN, **FAST)
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.parametrize("dtype", ["fp64", "float32", "int8", torch.float32])
def test_bad_dtype(dtype):
    with pytest.raises(ConfigError) as info:
        measure(nn.Linear(16, 8), X_LIN, dtype=dtype)
    msg = str(info.value)
    assert msg.startswith("measure.dtype must be ") and "one of fp32, bf16, fp16" in msg
    assert msg.endswith(f"; got {dtype!r}.")


def test_dtype_none_keeps_the_models_own():
    m = nn.Linear(16, 8).to(torch.bfloat16)
    p = measure(m, X_LIN, train=False, **FAST)  # fp32 inputs are cast to the model's dtype
    assert p.dtype == "bf16" and p.parameter_bytes == (16 * 8 + 8) * 2
    assert measure(nn.Linear(16, 8), X_LIN, train=False, **FAST).dtype == "fp32"


@pytest.mark.parametrize("device, allowed", [("gpu0", "'cpu', 'cuda', 'cuda:N' or a torch.device"),
                                             ("meta", "'cpu' or 'cuda[:N]'")])
def test_bad_device(device, allowed):
    with pytest.raises(ConfigError) as info:
        measure(nn.Linear(16, 8), X_LIN, device=device)
    assert str(info.value) == f"measure.device must be {allowed}; got {device!r}."


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_cuda_without_cuda(device):
    with pytest.raises(ConfigError, match=r"^measure\.device must be 'cpu' \(no CUDA device is present here\); got "):
        measure(nn.Linear(16, 8), X_LIN, device=device)


@pytest.mark.parametrize("field, kw", [("time_cap_s", {"time_cap_s": 0}), ("target_ci", {"target_ci": -0.1}),
                                       ("time_cap_s", {"time_cap_s": float("nan")})])
def test_bad_stopping_parameters(field, kw):
    with pytest.raises(ConfigError, match=rf"^measure\.{field} must be a finite number > 0; got "):
        measure(nn.Linear(16, 8), X_LIN, **kw)


@pytest.mark.parametrize("min_runs", [2, 0, 3.5])
def test_bad_min_runs(min_runs):
    with pytest.raises(ConfigError, match=r"^measure\.min_runs must be an integer >= 3; got "):
        measure(nn.Linear(16, 8), X_LIN, min_runs=min_runs)


def test_loss_fn_that_raises_names_train():
    def bad_loss(out):
        raise ValueError("no loss here")

    with pytest.raises(ConfigError) as info:
        measure(nn.Linear(16, 8), X_LIN, loss_fn=bad_loss, **FAST)
    msg = str(info.value)
    assert msg.startswith("measure.train must be False, or inputs/targets/loss_fn that make a training step")
    assert "ValueError: no loss here" in msg and msg.endswith("; got True.")
    # the same model measures fine without the training step
    assert measure(nn.Linear(16, 8), X_LIN, loss_fn=bad_loss, train=False, **FAST).train_step is None


def test_loss_fn_gets_targets_when_given():
    seen = []

    def loss(out, y):
        seen.append(tuple(y.shape))
        return nn.functional.cross_entropy(out, y)

    y = torch.tensor([0, 1, 2, 3])
    p = measure(nn.Linear(16, 8), X_LIN, targets=y, loss_fn=loss, **FAST)
    assert p.train_step is not None and seen and all(s == (4,) for s in seen)


def test_bad_batch_size_is_named_by_measure():
    with pytest.raises(ConfigError, match=r"^measure\.batch_size must be"):
        measure(nn.Linear(16, 8), X_LIN, batch_size=0, **FAST)


# ---- CUDA -------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_measurement_uses_events_and_the_allocator():
    m = two_linear()
    p = measure(m, X_LIN, device="cuda", **FAST)
    assert p.latency.method == "torch.cuda.Event" and p.train_step.method == "torch.cuda.Event"
    assert "CUDA caching allocator" in p.memory_method
    assert p.device == torch.cuda.get_device_name(0)
    assert p.provenance.startswith("measured on cuda: ")
    assert p.forward_flops == 6144 and p.train_flops == 14336
    assert 0 < p.latency.p10_s <= p.latency.median_s <= p.latency.p90_s
    assert p.train_peak_memory_bytes > p.peak_memory_bytes >= p.parameter_bytes
    assert next(m.parameters()).device.type == "cpu"  # the caller's model stays where it was


# ---------------------------------------------------------------------------------------------
# the one sparse-storage rule (measure, layer_profile.deployed_bytes and Prune's notes use it)
# ---------------------------------------------------------------------------------------------


def test_sparse_bytes_is_values_plus_a_one_bit_mask_when_smaller():
    from profilers.layer_profile import deployed_bytes
    from profilers.measurement import sparse_bytes
    from profilers.techniques.pruning import sparse_storage_bytes

    w = torch.zeros(4, 4)
    w.view(-1)[:6] = torch.arange(1.0, 7.0)
    # a 4x4 weight with 6 non-zeros in fp32: 6*4 + ceil(16/8) = 26 bytes (dense: 16*4 = 64)
    assert sparse_bytes(w) == 26
    # fp16: 6*2 + 2 = 14 bytes (dense 32)
    assert sparse_bytes(w.half()) == 14
    # a 3x3 fp32 weight with 8 non-zeros: 8*4 + ceil(9/8) = 34 bytes < 9*4 = 36: sparse
    v = torch.ones(3, 3)
    v[0, 0] = 0
    assert sparse_bytes(v) == 34
    # no zero: 9*4 + 2 = 38 > 36: dense (None)
    assert sparse_bytes(torch.ones(3, 3)) is None
    # 1-D tensors (biases) and integer tensors stay dense whatever their zeros
    assert sparse_bytes(torch.zeros(16)) is None and sparse_bytes(torch.zeros(4, 4, dtype=torch.int64)) is None

    lin = nn.Linear(4, 4)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.zero_()
    # weight 26 B sparse + bias 4*4 = 16 B dense (all zero, but 1-D) = 42 B; dense: 64 + 16 = 80 B
    assert deployed_bytes(lin) == 42
    assert sparse_storage_bytes(lin) == {"dense": 80, "values_plus_bitmask": 42}
    # measure saves the same format: a 64x64 weight half zero, 2048*4 + 4096/8 = 8,704 B instead of 16,384 B
    big = nn.Linear(64, 64)
    with torch.no_grad():
        big.weight[:32] = 0
    p = measure(big, torch.randn(2, 64), train=False, **FAST)
    assert sparse_bytes(big.weight.detach()) == 8_704
    assert p.sparse_serialized_bytes is not None and p.sparse_serialized_bytes < p.serialized_bytes - 7_000
    assert measure(nn.Linear(4, 4), torch.randn(2, 4), train=False, **FAST).sparse_serialized_bytes is None


def test_a_contended_cpu_timing_is_never_reported_tight(monkeypatch):
    """A timed op that gets almost no CPU time for its wall time (here: it sleeps, exactly the
    signature of a process descheduled by another) is retried, then reported contended: the
    interval widened to the lost share, never stable."""
    import time as _time

    import profilers.measurement as m

    monkeypatch.setattr(m, "CONTENTION_RETRIES", 1)
    calls = []

    def idle():
        calls.append(1)
        _time.sleep(0.002)

    t = m._time_runs(idle, torch.device("cpu"), warmup=1, min_runs=5, max_runs=5, time_cap_s=1.0, target_ci=0.02)
    assert t.contended and not t.stable and t.cpu_share < 0.5
    assert t.ci_rel >= 1 - t.cpu_share  # the median may be that much too slow
    assert len(calls) == 2 * 6  # two loops (the retry) of 1 warm-up + 5 timed runs
    assert t.threads == torch.get_num_threads()


def test_a_busy_cpu_timing_is_not_contended():
    import profilers.measurement as m

    x = torch.randn(256, 256)
    t = m._time_runs(lambda: x @ x, torch.device("cpu"), warmup=2, min_runs=10, max_runs=30, time_cap_s=1.0,
                     target_ci=0.5)
    assert t.cpu_share > 0.5 and not t.contended
