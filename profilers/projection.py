"""Project a profile onto a device we don't have: a roofline over the profile's op records, run by a
runtime, at an efficiency calibrated against published measurements.

Torch-free. For each op signature recorded by :func:`profilers.count_flops` (FLOPs, bytes read +
written per call, and the dtype it computes in), on device D, each kernel ``runtime`` launches costs

    t_op     = max(flops / peak_D(op dtype), bytes / bandwidth_D)           (the roofline)
    t_kernel = max(t_op / e[D, op class, runtime], o[runtime])              (per call)
    t        = sum over kernels of calls * t_kernel

**Runtime** (:func:`kernel_table`): ``"eager"`` (PyTorch eager) launches a kernel per op with
arithmetic or traffic (element-wise ops, norms and casts included) and runs attention as the model
does (score matrices written to and read from memory); ``"fused"`` (TensorRT, torch.compile,
FlashAttention) launches only matmuls, convolutions and attention: element-wise work is fused into
its producer, and an attention matmul keeps its score matrix on chip (``OpRecord.onchip_bytes``).
``o`` is the per-kernel launch and framework overhead, so no projection beats kernels x ``o``.

**Precision**: each op is priced at **its own dtype**: a CNN whose only Linear was quantized to int8
keeps its convolutions at their fp32 peak, and the bytes are each operand's real bytes (int8 weights
+ fp32 activations for weight-only int8). ``dtype=`` is the explicit "cast everything" what-if:
every op at that dtype's peak, bytes scaled by the dtype's byte ratio, and the provenance says so.
Arithmetic-free ops (views) take no time. A device without a peak for an op's dtype cannot run the
model as profiled (the error names the dtype), except element-wise work, which falls back to its
fp32 peak (it is bandwidth-bound), and a CPU, which computes any dtype through fp32.

**Efficiency** ``e`` and overhead ``o``:

* a GPU (default): :mod:`profilers.calibration`, fitted per (device, op class, runtime) to published
  measured figures, with an 80 % band from its leave-one-out errors (``latency_band_s``); a device
  without rows of its own takes its generation's fit and says so; the provenance names the rows;
* this machine's CPU, for a profile measured on it (default): ``"calibrated"``, e = roofline time on
  the host's *measured* spec / the measured median time, separately for inference and training;
* a number you give (e.g. from a measurement on the real device): every op class at it (a GPU keeps
  the calibrated overhead floor); no band;
* another CPU: :data:`DEFAULT_EFFICIENCY`, an assumption stated in the provenance.

Memory is carried over from the profile (scaled by the dtype's byte ratio for a cast what-if).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .config import invalid, serializable
from .hardware import DeviceSpec, get
from .profile import DTYPE_BYTES, OpRecord, Profile

__all__ = ["Projection", "project", "roofline_time", "kernel_table", "kernel_time", "RUNTIMES", "CLASSES", "calibrate", "at_batch", "DEFAULT_EFFICIENCY", "op_dtypes",
           "unsupported_dtypes", "COMPUTE_CLASSES"]

#: Assumed fraction of the roofline reached when nothing was calibrated. Source: Narayanan et al.
#: 2021 (Megatron-LM, SC'21) report 44-52 % of peak for GPT models of 1.7B-1T parameters on A100s.
DEFAULT_EFFICIENCY = 0.5


def _dtype_scale(profile_dtype: str, dtype: str) -> float:
    return DTYPE_BYTES[dtype] / DTYPE_BYTES.get(profile_dtype, 4)


RUNTIMES = ("eager", "fused")
#: op classes a kernel is priced in: matmul (compute-bound on the device), gemv (a matmul whose
#: bytes outweigh its FLOPs on the device: small batches, LLM decode), conv, attention (a fused
#: attention kernel; eager attention runs as matmuls and element-wise "memory" kernels), memory,
#: comm (a collective between devices, profilers.llm)
CLASSES = ("matmul", "gemv", "conv", "attention", "memory", "comm")

#: op classes whose compute needs the device's peak for their dtype (the others are bandwidth-bound
#: element-wise work, which runs through the fp32 units where a dtype has no peak of its own)
COMPUTE_CLASSES = ("matmul", "conv", "attention")


def op_dtypes(ops: Sequence[OpRecord], default: str) -> dict[str, int]:
    """Op signatures per compute dtype (``default`` for records that do not say), free ops left out."""
    out: dict[str, int] = {}
    for r in ops:
        if r.op_class != "free":
            d = r.dtype or default
            out[d] = out.get(d, 0) + 1
    return out


def unsupported_dtypes(profile: Profile, device: DeviceSpec) -> list[str]:
    """The compute dtypes of ``profile``'s matmuls, convolutions and attention that ``device`` has no
    peak for (empty: it can run the model as profiled)."""
    if device.kind == "cpu":
        return []
    ds = {r.dtype or profile.dtype for r in (*profile.ops, *profile.train_ops) if r.op_class in COMPUTE_CLASSES}
    return sorted(d for d in ds if not device.supports(d))


def _op_peak(r: OpRecord, device: DeviceSpec, dtype: str) -> float:
    if device.supports(dtype):
        return device.peak_flops_per_s(dtype)
    if (device.kind == "cpu" or r.op_class not in COMPUTE_CLASSES) and device.supports("fp32"):
        return device.peak_flops_per_s("fp32")
    return device.peak_flops_per_s(dtype)  # raises, naming the device and the dtypes it supports


def kernel_table(ops: Sequence[OpRecord], device: DeviceSpec, runtime: str, dtype: str | None = None, *,
                 bytes_scale: float = 1.0, default: str = "fp32") -> list[tuple[str, int, float, float]]:
    """The kernels one pass over ``ops`` launches in ``runtime``: (class, calls, compute s, memory s)
    per op signature, at 100 % of the roofline.

    ``"eager"``: every op with arithmetic or traffic is a kernel, paying its bytes (attention as the
    model runs it, score matrices included). ``"fused"``: only matmuls, convolutions and attention
    launch kernels; element-wise ops, norms and casts are fused into their producer and add no time;
    an attention matmul (``onchip_bytes`` > 0) is a fused-attention kernel that keeps its score /
    probability matrix on chip. A matmul whose bytes outweigh its FLOPs on this device is class
    ``"gemv"`` (its efficiency is that of a bandwidth-bound kernel)."""
    if runtime not in RUNTIMES:
        raise invalid("project", "runtime", "one of " + ", ".join(map(repr, RUNTIMES)), runtime)
    bw = device.memory_bandwidth_bytes_per_s
    out = []
    for r in ops:
        if r.op_class == "free":
            continue
        cls = r.op_class
        nbytes = r.bytes
        if runtime == "fused":
            if cls not in COMPUTE_CLASSES:
                continue
            if r.onchip_bytes:
                cls, nbytes = "attention", r.bytes - r.onchip_bytes
        tc = r.flops / _op_peak(r, device, dtype or r.dtype or default)
        tm = nbytes * bytes_scale / bw
        if cls == "matmul" and tm > tc:
            cls = "gemv"
        out.append((cls, r.calls, tc, tm))
    return out


def kernel_time(kernels: Sequence[tuple[str, int, float, float]], efficiency: Mapping[str, float],
                overhead_s: float) -> float:
    """Seconds of one pass: sum over kernels of calls x max(roofline / e[class], overhead)."""
    return sum(n * max(max(tc, tm) / efficiency[c], overhead_s) for c, n, tc, tm in kernels)


def roofline_time(ops: Sequence[OpRecord], device: DeviceSpec, dtype: str | None = None, *,
                  bytes_scale: float = 1.0, default: str = "fp32") -> tuple[float, dict[str, dict[str, float]]]:
    """(seconds at 100 % efficiency, per op class {"time_s", "compute_s", "memory_s", "bound"}).

    ``dtype`` None: each op at its own dtype (``default`` for records without one); a dtype: every op
    at that dtype's peak (a cast what-if; scale the bytes with ``bytes_scale``)."""
    total = 0.0
    classes: dict[str, dict[str, Any]] = {}
    for cls, n, tc, tm in kernel_table(ops, device, "eager", dtype, bytes_scale=bytes_scale, default=default):
        t = n * max(tc, tm)
        total += t
        c = classes.setdefault(cls, {"time_s": 0.0, "compute_s": 0.0, "memory_s": 0.0})
        c["time_s"] += t
        c["compute_s"] += n * tc
        c["memory_s"] += n * tm
    for c in classes.values():
        c["bound"] = "compute" if c["compute_s"] >= c["memory_s"] else "memory"
    return total, classes


def calibrate(profile: Profile, device: DeviceSpec | None = None) -> dict[str, float]:
    """Efficiencies {"inference", "train"} of a measured profile against its own device's roofline."""
    if profile.source != "measured" or profile.latency is None:
        raise invalid("calibrate", "profile.source", "'measured' (a profile with timings)", profile.source)
    if device is None:
        if profile.device != "host":
            raise invalid("calibrate", "device", f"the DeviceSpec of {profile.device!r} (only the host CPU is "
                          "looked up automatically)", None)
        device = get("host")
    out = {}
    # each op at its own dtype; a CPU without a peak for one (bf16 on AVX2, int8 without VNNI)
    # computes it through fp32, whose peak is then the roof
    t, _ = roofline_time(profile.ops, device, default=profile.dtype)
    out["inference"] = min(1.0, t / profile.latency.median_s)
    if profile.train_step is not None and profile.train_ops:
        t, _ = roofline_time(profile.train_ops, device, default=profile.dtype)
        out["train"] = min(1.0, t / profile.train_step.median_s)
    return out


@serializable("projection")
@dataclass(frozen=True)
class Projection:
    """Projected figures of a profile on one device (same field names as a Profile's plain figures)."""

    model: str
    device: str
    dtype: str
    batch_size: int
    latency_s: float | None
    train_step_s: float | None
    peak_memory_bytes: int | None
    train_peak_memory_bytes: int | None
    parameter_bytes: int
    forward_flops: int
    train_flops: int | None
    efficiency: dict[str, float]
    efficiency_source: str
    bound: dict[str, str]  # op class -> "compute" | "memory" (inference)
    fits_memory: bool
    memory_capacity_bytes: int
    provenance: str
    notes: tuple[str, ...] = ()
    runtime: str = "eager"
    overhead_s: float = 0.0  # per kernel (launch and framework)
    kernels: int = 0  # kernels one forward pass launches in this runtime
    #: 80 % band (low, high) of the time from the calibration's validation errors; None: not calibrated
    latency_band_s: tuple[float, float] | None = None
    train_step_band_s: tuple[float, float] | None = None
    calibration_rows: tuple[int, ...] = ()  # published_measurements.csv lines the efficiency was fitted on

    @property
    def throughput_per_s(self) -> float | None:
        return self.batch_size / self.latency_s if self.latency_s else None


def _memory(profile: Profile, scale: float) -> tuple[int | None, int | None, str]:
    if profile.source in ("measured", "derived"):
        inf = int(profile.peak_memory_bytes * scale) if profile.peak_memory_bytes is not None else None
        tr = int(profile.train_peak_memory_bytes * scale) if profile.train_peak_memory_bytes is not None else None
        what = "measured peaks" if profile.source == "measured" else \
            "peaks derived from a measurement at another batch (weights kept, the rest scaled)"
        return inf, tr, what + ("" if scale == 1 else f" x {scale:g} (dtype byte ratio)")
    largest = max((r.bytes for r in profile.ops), default=0)
    inf = int((profile.parameter_bytes + profile.buffer_bytes) * scale + largest * scale)
    tr = None
    if profile.activation_bytes is not None:
        tr = int(profile.parameter_bytes * scale + (profile.gradient_bytes or 0) * scale
                 + (profile.optimizer_state_bytes or 0) + profile.activation_bytes * scale)
    return inf, tr, ("inference: weights + the largest op's operands (a lower bound); training: weights + "
                     "gradients + optimizer state + activations saved for backward")


def at_batch(profile: Profile, flops: Any, batch_size: int) -> Profile:
    """``profile`` re-expressed at another batch size, for projection: ``flops`` is
    :func:`profilers.count_flops` of the same model at ``batch_size`` (its op records replace the
    profile's); timings are dropped (they were measured at the profile's batch); peak memory is
    derived: weights and buffers stay, everything else scales linearly with the batch."""
    from dataclasses import replace

    if not isinstance(batch_size, int) or batch_size < 1:
        raise invalid("at_batch", "batch_size", "an integer >= 1", batch_size)
    s = batch_size / profile.batch_size
    fixed = profile.parameter_bytes + profile.buffer_bytes

    def scale(peak: int | None, extra_fixed: int = 0) -> int | None:
        if peak is None:
            return None
        base = fixed + extra_fixed
        return int(base + max(0, peak - base) * s)

    if profile.source == "analyzed":
        raise invalid("at_batch", "profile.source", "'measured' or 'derived' (analyze() the model at the batch "
                      "instead)", profile.source)
    return replace(
        profile, source="derived", batch_size=batch_size, forward_flops=int(flops.total), ops=tuple(flops.ops),
        train_flops=None if profile.train_flops is None else int(profile.train_flops * s), train_ops=tuple(
            replace(r, flops=int(r.flops * s), bytes=int(r.bytes * s)) for r in profile.train_ops),
        latency=None, train_step=None, peak_memory_bytes=scale(profile.peak_memory_bytes),
        train_peak_memory_bytes=scale(profile.train_peak_memory_bytes, (profile.optimizer_state_bytes or 0)),
        notes=profile.notes + (f"re-expressed at batch {batch_size} from batch {profile.batch_size}: forward ops "
                               f"counted at this batch; training ops and memory above the weights scaled x{s:g}",),
    )


def _mix(profile: Profile) -> str:
    n = op_dtypes(profile.ops, profile.dtype)
    return ", ".join(f"{d} x {k} op signature{'s' if k != 1 else ''}" for d, k in sorted(n.items(), key=lambda kv: -kv[1]))


def _band(t: float | None, band: tuple[float, float] | None) -> tuple[float, float] | None:
    return None if t is None or band is None else (t * band[0], t * band[1])


def project(profile: Profile, device: str | DeviceSpec, dtype: str | None = None, *, runtime: str = "eager",
            efficiency: float | str | dict | None = None, efficiency_source: str | None = None) -> Projection:
    """Project ``profile`` onto ``device`` (a catalog name or a DeviceSpec): each op at its own dtype,
    or, with ``dtype``, every op cast to it (a what-if), run by ``runtime`` (``"eager"``: PyTorch
    eager, every op a kernel; ``"fused"``: TensorRT / torch.compile / FlashAttention, element-wise
    work fused, attention without its score matrix in memory). See the module docstring.

        >>> from profilers import analyze, project                 # doctest: +SKIP
        >>> project(analyze("llama-2-7b", seq_len=4096), "H100-SXM", "bf16").train_step_s
    """
    from . import calibration

    if not isinstance(profile, Profile):
        raise invalid("project", "profile", "a Profile (from measure() or analyze())", type(profile).__name__)
    spec = get(device)
    if runtime not in RUNTIMES:
        raise invalid("project", "runtime", "one of " + ", ".join(map(repr, RUNTIMES)), runtime)
    # the catalog name other packages look up ("host" for this machine's CPU, whose spec is
    # named after its model)
    name = "host" if spec.kind == "cpu" and spec.name.startswith("host") else spec.name
    cast = dtype is not None  # the "cast everything" what-if; None: each op at its own dtype
    if cast and dtype not in DTYPE_BYTES:
        raise invalid("project", "dtype", "None (each op at its own dtype) or one of " + ", ".join(DTYPE_BYTES), dtype)
    if cast:
        spec.peak_flops_per_s(dtype)  # raises naming the device and the dtypes it supports
    else:
        for d in unsupported_dtypes(profile, spec):
            spec.peak_flops_per_s(d)  # raises naming the device, the dtype and those it supports
    scale = _dtype_scale(profile.dtype, dtype) if cast else 1.0

    gpu = spec.kind != "cpu"
    lk = calibration.load().lookup(spec, runtime) if gpu else None
    band: tuple[float, float] | None = None
    rows: tuple[int, ...] = ()
    if efficiency is None:
        # a measurement on this CPU calibrates this CPU; a GPU reads the calibration against published
        # measurements (profile, search, whatif and the parallel model all do)
        here = profile.source == "measured" and profile.device == "host" and not gpu
        efficiency = "calibrated" if here else (lk if gpu else DEFAULT_EFFICIENCY)
    overhead = lk.overhead_s if lk else 0.0
    if isinstance(efficiency, calibration.Lookup):
        eff_inf = eff_tr = efficiency.efficiency
        eff_src, band, rows = efficiency.source, efficiency.band, efficiency.rows
    elif efficiency == "calibrated":
        e = calibrate(profile)
        eff_inf = dict.fromkeys(CLASSES, e["inference"])
        eff_tr = dict.fromkeys(CLASSES, e.get("train", e["inference"]))
        eff_src = f"calibrated on {profile.device_description}"
        overhead = 0.0  # the measured time includes it
    elif isinstance(efficiency, dict) and set(efficiency) >= {"inference"} and all(
            isinstance(v, (int, float)) and 0 < v <= 1 for v in efficiency.values()):
        eff_inf = dict.fromkeys(CLASSES, float(efficiency["inference"]))
        eff_tr = dict.fromkeys(CLASSES, float(efficiency.get("train", efficiency["inference"])))
        eff_src = efficiency_source or "given by the caller"
    elif isinstance(efficiency, (int, float)) and not isinstance(efficiency, bool) and 0 < efficiency <= 1:
        eff_inf = eff_tr = dict.fromkeys(CLASSES, float(efficiency))
        eff_src = efficiency_source or ("assumed default (Narayanan et al. 2021 report 44-52 % of peak; no "
                                        "calibration rows for a CPU other than this one)"
                                        if efficiency == DEFAULT_EFFICIENCY and not gpu else "given by the caller")
    else:
        raise invalid("project", "efficiency", "a number in (0, 1], {'inference': e, 'train': e}, 'calibrated' "
                      "or None", efficiency)

    kern = kernel_table(profile.ops, spec, runtime, dtype, bytes_scale=scale, default=profile.dtype)
    latency = kernel_time(kern, eff_inf, overhead) if profile.ops else None
    _, classes = roofline_time(profile.ops, spec, dtype, bytes_scale=scale, default=profile.dtype)
    train_s = None
    if profile.train_ops:
        kt = kernel_table(profile.train_ops, spec, runtime, dtype, bytes_scale=scale, default=profile.dtype)
        train_s = kernel_time(kt, eff_tr, overhead)
    n_kernels = sum(n for _, n, _, _ in kern)
    inf_mem, tr_mem, mem_note = _memory(profile, scale)
    need = max(m for m in (inf_mem, tr_mem, 0) if m is not None)
    used = {c for c, *_ in kern}
    eff_txt = ", ".join(f"{k} {v:.3g}" for k, v in eff_inf.items() if k in used or not used)
    if eff_tr != eff_inf:
        eff_txt += " (training step: " + ", ".join(f"{k} {v:.3g}" for k, v in eff_tr.items() if k in used) + ")"
    if cast:
        precision = f"every op cast to {dtype} (a what-if: the profile's ops compute in " + _mix(profile) + ")"
    else:
        precision = "each op at its own dtype: " + _mix(profile)
    notes = [f"memory: {mem_note}"]
    if latency is not None and overhead > 0:
        floor = n_kernels * overhead
        notes.append(f"{runtime} runtime: {n_kernels} kernels per forward pass x {overhead * 1e6:.3g} us launch "
                     f"overhead = {floor * 1e3:.3g} ms floor ({floor / latency:.0%} of the projected latency)")
    if band is None:
        notes.append("no error band: the efficiency was " + ("measured here" if efficiency == "calibrated" else
                                                              "not calibrated against published measurements"))
    return Projection(
        model=profile.model, device=name, dtype=dtype or profile.dtype, batch_size=profile.batch_size,
        latency_s=latency, train_step_s=train_s, peak_memory_bytes=inf_mem, train_peak_memory_bytes=tr_mem,
        parameter_bytes=int(profile.parameter_bytes * scale), forward_flops=profile.forward_flops,
        train_flops=profile.train_flops, efficiency={k: v for k, v in eff_inf.items() if k in used or not used},
        efficiency_source=eff_src, bound={k: v["bound"] for k, v in classes.items()},
        fits_memory=need <= spec.memory_bytes, memory_capacity_bytes=int(spec.memory_bytes),
        provenance=(f"projected for {spec.name} ({dtype or profile.dtype}, {runtime} runtime) from the "
                    f"{profile.source} profile of {profile.model} ({profile.provenance}), roofline over "
                    f"{len(profile.ops)} op signatures, {precision}, efficiency {eff_txt} ({eff_src}); device "
                    f"figures: {spec.source}, {spec.date}"),
        notes=tuple(notes), runtime=runtime, overhead_s=overhead, kernels=n_kernels,
        latency_band_s=_band(latency, band), train_step_band_s=_band(train_s, band), calibration_rows=rows,
    )
