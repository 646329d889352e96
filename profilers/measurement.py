"""``measure``: real execution of a model on the present device -> :class:`Profile`.

Timing: warm-up runs first, then repeated runs until the median is stable (the 95 % confidence
interval of the median within ``target_ci`` of it, 2 % by default) or ``time_cap_s`` is spent.
CPU runs are timed with ``time.perf_counter``, with torch's intra-op threads as set in the process
(``Timing.threads`` records them); CUDA runs with CUDA events after synchronization. A CPU loop
whose timing thread got less than half of the wall time as CPU time (it runs the op or spin-waits for
torch's workers, so it is idle only when descheduled: another process held the cores) is contended: it is retried, and if every try is contended the least contended one is reported with
``contended=True``, never ``stable``, its interval widened to the lost share.

Peak memory (never an estimate labelled as measured):

* CUDA: the caching allocator's ``max_memory_allocated`` after ``reset_peak_memory_stats``;
* CPU: the torch profiler's allocation events (``profile_memory=True``), replayed in time order to
  find the peak of bytes allocated during one run, plus the bytes already resident when it
  starts (parameters, buffers, inputs, optimizer state and gradients, counted exactly from the
  live tensors).

The caller's model is never mutated: timings run on a copy (cast to ``dtype`` and moved to the
device), and a training step runs on a further copy with its own optimizer.
"""

from __future__ import annotations

import copy
import datetime as _dt
import io
import time
from typing import Any, Callable

import numpy as np
import torch
from torch.utils._pytree import tree_flatten

from .config import check_positive, invalid
from .flops import (
    call_model,
    cast_inputs,
    check_model,
    count_flops,
    describe_inputs,
    float_dtype,
    run_model,
)
from .profile import Profile, Timing, median_ci_rel
from .workload import Workload

__all__ = ["measure", "TORCH_DTYPES", "resolve_device", "sparse_bytes"]

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: Any) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise invalid("measure", "device", "'cpu', 'cuda', 'cuda:N' or a torch.device", device) from None
    if dev.type not in ("cpu", "cuda"):
        raise invalid("measure", "device", "'cpu' or 'cuda[:N]'", device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise invalid("measure", "device", "'cpu' (no CUDA device is present here)", device)
    return dev


def _device_description(dev: torch.device) -> tuple[str, str]:
    """(catalog name, human description) of the device that runs."""
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        return name, f"cuda: {name}"
    from .host import host_device_name

    return "host", host_device_name()


def tensor_leaves(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors holding ``t``'s data (a tensor subclass such as torchao's Int8Tensor
    stores its data in inner tensors: quantized values and scales)."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if is_traceable_wrapper_subclass(t):
        names, _ = t.__tensor_flatten__()
        return [leaf for n in names for leaf in tensor_leaves(getattr(t, n))]
    return [t]


def _bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (shared storages counted once)."""
    seen, total = set(), 0
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.is_meta:
            continue
        for leaf in tensor_leaves(t):
            key = (leaf.untyped_storage().data_ptr(), leaf.device)
            if key not in seen:
                seen.add(key)
                total += leaf.untyped_storage().nbytes()
    return total


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


#: timing loops a contended CPU sample is retried with (then the least contended one is reported,
#: marked contended, with its interval widened; see :class:`~profilers.profile.Timing`)
CONTENTION_RETRIES = 2


def _time_runs(fn: Callable[[], Any], dev: torch.device, *, warmup: int, min_runs: int, max_runs: int,
               time_cap_s: float, target_ci: float) -> Timing:
    """Time ``fn``; on CPU, a loop whose process got too little of its wall time (contention) is
    retried, up to :data:`CONTENTION_RETRIES` times, after a short pause."""
    best: Timing | None = None
    for attempt in range(1 + (CONTENTION_RETRIES if dev.type == "cpu" else 0)):
        if attempt:
            time.sleep(0.05 * attempt)  # let whatever held the cores move on
        t = _time_loop(fn, dev, warmup=warmup, min_runs=min_runs, max_runs=max_runs, time_cap_s=time_cap_s,
                       target_ci=target_ci)
        if not t.contended:
            return t
        if best is None or (t.cpu_share or 0) > (best.cpu_share or 0):
            best = t
    assert best is not None
    return best


def _time_loop(fn: Callable[[], Any], dev: torch.device, *, warmup: int, min_runs: int, max_runs: int,
               time_cap_s: float, target_ci: float) -> Timing:
    for _ in range(warmup):
        fn()
    _sync(dev)
    samples: list[float] = []
    start = time.perf_counter()
    cpu0 = time.thread_time()
    while True:
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            samples.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        n = len(samples)
        if n >= max_runs or (n >= min_runs and time.perf_counter() - start >= time_cap_s):
            break
        # the stability check sorts the samples: do it at min_runs, then every ~10 % more runs
        if n >= min_runs and (n - min_runs) % max(1, n // 10) == 0:
            if median_ci_rel(sorted(samples)) <= target_ci:
                break
    if dev.type == "cuda":
        return Timing.from_samples(samples, target_ci=target_ci, method="torch.cuda.Event")
    wall = time.perf_counter() - start
    share = (time.thread_time() - cpu0) / wall if wall > 0 else 1.0
    return Timing.from_samples(samples, target_ci=target_ci, method="time.perf_counter", cpu_share=share,
                               threads=torch.get_num_threads())


def _peak_bytes(fn: Callable[[], Any], dev: torch.device, resident: Callable[[], int]) -> int:
    """Peak bytes during one call of ``fn`` (see the module docstring for the method)."""
    if dev.type == "cuda":
        _sync(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        _sync(dev)
        return int(torch.cuda.max_memory_allocated(dev))
    from torch.profiler import ProfilerActivity, profile

    base = resident()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    cur = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        cur += e.nbytes()
        peak = max(peak, cur)
    return int(base + peak)


def _serialized_bytes(model: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def sparse_bytes(t: torch.Tensor) -> int | None:
    """The one sparse-storage rule: bytes of ``t`` stored as its non-zero values plus a packed
    1-bit mask, ``nonzeros * element_size + ceil(numel / 8)``, when that is smaller than dense
    (``numel * element_size``); None when ``t`` is kept dense: it is not a plain floating tensor of
    dim >= 2 (biases, norms and other 1-D tensors, integer buffers, torchao's quantized tensors
    stay dense) or it has too few zeros for the mask to pay off (about 1/32 of an fp32 weight).
    E.g. a 4x4 fp32 weight with 6 non-zeros: 6*4 + ceil(16/8) = 26 B instead of 64 B.
    (CSR with int64 indices only pays off above ~67 % sparsity; a bitmask from ~3 %.)"""
    if type(t) is not torch.Tensor or not t.is_floating_point() or t.dim() < 2 or t.is_meta:
        return None
    size = int((t != 0).sum()) * t.element_size() + -(-t.numel() // 8)
    return size if size < t.numel() * t.element_size() else None


def _sparse_serialized_bytes(model: torch.nn.Module) -> int | None:
    """Size of the state_dict with every weight that :func:`sparse_bytes` stores sparsely saved as
    its non-zero values plus a packed 1-bit mask; None when no weight is stored sparsely."""
    state, any_sparse = {}, False
    for k, t in model.state_dict().items():
        if sparse_bytes(t) is not None:
            any_sparse = True
            mask = (t != 0).flatten()
            packed = torch.from_numpy(np.packbits(mask.cpu().numpy()))
            values = t.detach().flatten()[mask]
            state[k] = {"shape": tuple(t.shape), "mask": packed, "values": values}
        else:
            state[k] = t
    if not any_sparse:
        return None
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.tell()


def model_dtype(model: torch.nn.Module) -> tuple[str, torch.dtype]:
    """(label, input dtype): the label names the weights' numeric format ("int8", "fp8" for torchao
    quantized weights, else the first floating parameter's dtype); inputs use that float dtype."""
    label = None
    for p in model.parameters():
        cls = type(p.data).__name__ if type(p) is torch.nn.Parameter else type(p).__name__
        if label is None:
            for key, lab in (("Int8", "int8"), ("Int4", "int4"), ("Float8", "fp8")):
                if key in cls:
                    label = lab
    in_dtype = float_dtype(model) or torch.float32
    names = {v: k for k, v in TORCH_DTYPES.items()}
    return label or names.get(in_dtype, "fp32"), in_dtype


def measure(model: torch.nn.Module | Workload, inputs: Any = None, *, batch_size: int | None = None,
            train: bool = True, targets: Any = None, loss_fn: Callable[..., torch.Tensor] | None = None,
            optimizer: Callable[[Any], torch.optim.Optimizer] | None = None, device: Any = None,
            dtype: str | None = None, name: str | None = None, warmup: int = 3, min_runs: int = 10,
            max_runs: int = 10_000, time_cap_s: float = 10.0, target_ci: float = 0.02) -> Profile:
    """Run ``model`` on this machine and return its measured :class:`Profile`.

    ``model`` is an ``nn.Module`` (then ``inputs`` is required: a tensor, a tuple of positional
    arguments or a dict of keyword arguments, whose first dimension is the batch, or a
    :class:`Workload` whose inputs, targets and loss are used) or a :class:`Workload` (its
    factory too; ``batch_size`` picks the batch). ``train=True`` also times and measures one training step (forward, loss, backward,
    ``optimizer.step()``): ``loss_fn(output, targets)`` when given, else the sum of the output.
    The default optimizer is AdamW. ``time_cap_s`` bounds each of the two timing loops.

        >>> import torch
        >>> p = measure(torch.nn.Linear(64, 10), torch.randn(32, 64), time_cap_s=1)
        >>> p.latency.median_s > 0, p.forward_flops   # 32*64*10 multiply-adds * 2
        (True, 40960)
    """
    if isinstance(model, Workload) or isinstance(inputs, Workload):
        # measure(workload) builds its model; measure(model, workload) measures a variant of it
        wl = model if isinstance(model, Workload) else inputs
        batch_size = wl.batch_size if batch_size is None else batch_size
        model = wl.build() if isinstance(model, Workload) else model
        inputs = wl.inputs(batch_size)
        if targets is None and wl.targets is not None:
            targets = wl.targets(batch_size)
        loss_fn = loss_fn or wl.loss
        name = name or wl.name
    check_model(model, "measure")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise invalid("measure", "batch_size", "an integer >= 1 or None (the inputs' first dimension)", batch_size)
    if inputs is None:
        raise invalid("measure", "inputs", "example inputs for the model (tensor, tuple or dict)", None)
    if dtype is not None and dtype not in TORCH_DTYPES:
        raise invalid("measure", "dtype", "None (the model's own) or one of " + ", ".join(TORCH_DTYPES), dtype)
    for f, v in (("time_cap_s", time_cap_s), ("target_ci", target_ci)):
        check_positive("measure", f, v)
    if not isinstance(min_runs, int) or min_runs < 3:
        raise invalid("measure", "min_runs", "an integer >= 3", min_runs)
    dev = resolve_device(device)
    if batch_size is None:
        leaves = [t for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)]
        batch_size = int(leaves[0].shape[0]) if leaves and leaves[0].dim() > 0 else 1
    catalog_name, description = _device_description(dev)

    net = copy.deepcopy(model).to(device=dev)
    if dtype is not None:
        net = net.to(TORCH_DTYPES[dtype])
    net = net.eval()
    dtype, tdtype = model_dtype(net)
    x = cast_inputs(inputs, dev, tdtype)
    y = cast_inputs(targets, dev, tdtype) if targets is not None else None
    run_model(net, x, "measure")  # a clear error for bad shapes before anything is timed

    params = list(net.parameters())
    n_params = sum(p.numel() for p in params)
    param_bytes = _bytes(params)
    buffer_bytes = _bytes(net.buffers())
    input_bytes = _bytes(tree_flatten(x)[0]) + _bytes(tree_flatten(y)[0])
    flops = count_flops(net, x)

    def infer() -> None:
        with torch.no_grad():
            call_model(net, x)

    timing = dict(warmup=warmup, min_runs=min_runs, max_runs=max_runs, time_cap_s=time_cap_s, target_ci=target_ci)
    latency = _time_runs(infer, dev, **timing)
    peak = _peak_bytes(infer, dev, lambda: param_bytes + buffer_bytes + input_bytes)

    train_flops = train_step = train_peak = None
    grad_bytes = opt_bytes = None
    train_ops: tuple = ()
    if train:
        tnet = copy.deepcopy(net).train()
        opt = (optimizer or (lambda ps: torch.optim.AdamW(ps, lr=1e-4)))(tnet.parameters())
        # a model trained in fp16 autocast (MixedPrecision("fp16")) steps through a GradScaler
        scaler = torch.amp.GradScaler(dev.type, enabled=getattr(tnet, "amp_dtype", None) == "fp16")

        def loss_of(out: Any) -> torch.Tensor:
            if loss_fn is not None:
                return loss_fn(out, y) if y is not None else loss_fn(out)
            leaves = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
            return sum(t.float().sum() for t in leaves)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss_of(call_model(tnet, x))).backward()
            scaler.step(opt)
            scaler.update()

        try:
            step()
        except Exception as e:
            raise invalid("measure", "train", f"False, or inputs/targets/loss_fn that make a training step "
                          f"({type(e).__name__}: {e})", train) from e
        tflops = count_flops(copy.deepcopy(tnet), x, train=True, loss_fn=loss_of)
        train_flops, train_ops = tflops.total, tflops.ops
        train_step = _time_runs(step, dev, **timing)
        opt_bytes = _bytes(t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor))
        grad_bytes = param_bytes  # one gradient per parameter, same dtype
        opt.zero_grad(set_to_none=True)  # gradients are then allocated (and seen) inside the window
        train_peak = _peak_bytes(step, dev, lambda: param_bytes + buffer_bytes + input_bytes + opt_bytes)

    if dev.type == "cuda":
        method = "CUDA caching allocator max_memory_allocated (absolute peak)"
    else:
        method = ("torch profiler CPU allocation events (peak during the run) + resident parameters, "
                  "buffers, inputs and optimizer state")
    return Profile(
        model=name or type(model).__name__,
        source="measured",
        device=catalog_name,
        device_description=description,
        dtype=dtype,
        batch_size=int(batch_size),
        torch_version=torch.__version__,
        parameters=int(n_params),
        parameter_bytes=int(param_bytes),
        buffer_bytes=int(buffer_bytes),
        forward_flops=int(flops.total),
        train_flops=train_flops,
        latency=latency,
        train_step=train_step,
        peak_memory_bytes=peak,
        train_peak_memory_bytes=train_peak,
        memory_method=method,
        serialized_bytes=_serialized_bytes(net),
        sparse_serialized_bytes=_sparse_serialized_bytes(net),
        gradient_bytes=grad_bytes,
        optimizer_state_bytes=opt_bytes,
        ops=flops.ops,
        train_ops=train_ops,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        notes=(f"inputs {describe_inputs(inputs)}",),
    )

