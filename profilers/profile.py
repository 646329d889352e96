"""Profile: the figures of one model on one device, measured (``measure``) or derived (``analyze``).

Torch-free plain data, so ``cost_models`` can read it. Every figure says where it came from:
:attr:`Profile.provenance` reads "measured on <device>, torch <ver>" or "analyzed on the meta
device (no execution), torch <ver>".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from .config import dumps, invalid, loads, serializable

__all__ = ["OpRecord", "Timing", "Profile", "DTYPE_BYTES", "CONTENDED_SHARE"]

#: below this share of CPU time over wall time, a CPU timing was contended (descheduled much of the time)
CONTENDED_SHARE = 0.5

#: bytes per element of the dtypes sigmastar names
DTYPE_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int4": 0.5}


@serializable("op_record")
@dataclass(frozen=True)
class OpRecord:
    """One op signature: how often it ran, its FLOPs and bytes per call (inputs + outputs)."""

    op: str
    op_class: str  # matmul, conv, attention, memory (element-wise, norms, reductions), free
    calls: int
    flops: int  # per call, 2 per multiply-add
    bytes: int  # per call: tensor inputs read + outputs written, each in its own dtype (no cache reuse modelled)
    #: the dtype the op computes in (``"fp32"``, ``"bf16"``, ``"fp16"``, ``"fp8"``, ``"int8"``): fp8 when
    #: an input is fp8, else the widest floating input, else int8 for integer (quantized) inputs;
    #: ``""`` when unknown (records written before op dtypes were kept: the profile's dtype applies)
    dtype: str = ""
    #: bytes per call that a fused attention kernel (FlashAttention, TensorRT's fMHA) keeps on chip:
    #: the score / probability matrix that an attention matmul run eagerly writes to or reads from
    #: memory (0 for every other op). The "fused" runtime of :func:`profilers.project` does not pay them.
    onchip_bytes: int = 0

    @property
    def total_flops(self) -> int:
        return self.calls * self.flops

    @property
    def total_bytes(self) -> int:
        return self.calls * self.bytes


@serializable("timing")
@dataclass(frozen=True)
class Timing:
    """Repeated wall-clock runs of one operation (seconds).

    ``ci_rel``: half-width of the distribution-free 95 % confidence interval of the median
    (order statistics n/2 -+ 1.96 sqrt(n)/2), relative to the median. ``stable``: ``ci_rel`` reached
    the target before the time cap, on a sample not contaminated by contention.

    CPU runs also record ``cpu_share``: the timing thread's CPU time over the wall time of the timed
    runs. That thread runs the op (or spin-waits for torch's intra-op workers), so its share is ~1
    unless it was descheduled; a share below :data:`CONTENDED_SHARE` means another process had the
    cores for much of the time, so the sample is ``contended``: the interval is widened to the lost
    share (the median may be up to ``1 - cpu_share`` too slow) and it is never ``stable``.
    ``threads`` says the intra-op threads torch ran with.
    """

    median_s: float
    p10_s: float
    p90_s: float
    runs: int
    ci_rel: float
    stable: bool
    timed_s: float  # sum of the timed runs
    method: str  # "time.perf_counter" or "torch.cuda.Event"
    cpu_share: float | None = None  # timing thread's CPU time / wall time of the timed runs (CPU only)
    contended: bool = False
    threads: int | None = None  # torch intra-op threads (CPU only)

    @staticmethod
    def from_samples(samples: Sequence[float], *, target_ci: float, method: str, cpu_share: float | None = None,
                     threads: int | None = None) -> "Timing":
        xs = sorted(samples)
        n = len(xs)
        if n == 0:
            raise invalid("Timing", "samples", "at least one run", n)
        ci = median_ci_rel(xs)
        contended = cpu_share is not None and cpu_share < CONTENDED_SHARE
        if contended:
            ci = max(ci, 1.0 - cpu_share)  # never a tight interval on a contaminated sample
        return Timing(
            median_s=_quantile(xs, 0.5), p10_s=_quantile(xs, 0.1), p90_s=_quantile(xs, 0.9),
            runs=n, ci_rel=ci, stable=ci <= target_ci and not contended, timed_s=float(sum(xs)), method=method,
            cpu_share=cpu_share, contended=contended, threads=threads,
        )


def _quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted ``xs`` (numpy's default method)."""
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def median_ci_rel(sorted_xs: Sequence[float]) -> float:
    """Relative half-width of the 95 % order-statistic confidence interval of the median."""
    n = len(sorted_xs)
    if n < 3:
        return math.inf
    half = 1.96 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    med = _quantile(sorted_xs, 0.5)
    if med <= 0:
        return math.inf
    return float((sorted_xs[hi] - sorted_xs[lo]) / 2 / med)


@serializable("profile")
@dataclass(frozen=True)
class Profile:
    """Figures of one model at one batch size and dtype on one device.

    ``source`` is "measured" (by :func:`profilers.measure`: timings and peaks come from real runs),
    "analyzed" (by :func:`profilers.analyze`: no execution; no timings; memory derived from
    tensor shapes) or "derived" (by :func:`profilers.projection.at_batch`: a measured profile
    re-expressed at another batch; ops counted at that batch, no timings, memory scaled, and never
    labelled measured). FLOPs are always counted by :func:`profilers.count_flops` (2 per multiply-add).
    """

    model: str
    source: str  # "measured" | "analyzed" | "derived"
    device: str  # catalog name ("host" for this machine's CPU) or "meta"
    device_description: str
    dtype: str
    batch_size: int
    torch_version: str
    parameters: int
    parameter_bytes: int
    buffer_bytes: int
    forward_flops: int
    train_flops: int | None = None
    latency: Timing | None = None  # one forward of batch_size (inference, no_grad)
    train_step: Timing | None = None  # forward + backward + optimizer step of batch_size
    peak_memory_bytes: int | None = None  # inference
    train_peak_memory_bytes: int | None = None
    memory_method: str = ""
    serialized_bytes: int | None = None  # torch.save(state_dict) size
    sparse_serialized_bytes: int | None = None  # same, weights stored as values + bitmask where smaller (None: no weight is)
    gradient_bytes: int | None = None
    optimizer_state_bytes: int | None = None
    activation_bytes: int | None = None  # saved for backward, one training step
    seq_len: int | None = None
    ops: tuple[OpRecord, ...] = ()  # forward op records (for projection)
    train_ops: tuple[OpRecord, ...] = ()  # forward + backward op records
    created: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.source not in ("measured", "analyzed", "derived"):
            raise invalid("Profile", "source", "'measured', 'analyzed' or 'derived'", self.source)
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise invalid("Profile", "batch_size", "an integer >= 1", self.batch_size)

    # ---- plain figures other packages read (duck-typed by cost_models) -------------------------
    @property
    def latency_s(self) -> float | None:
        return self.latency.median_s if self.latency else None

    @property
    def train_step_s(self) -> float | None:
        return self.train_step.median_s if self.train_step else None

    @property
    def throughput_per_s(self) -> float | None:
        """Samples per second at ``batch_size`` (inference)."""
        return self.batch_size / self.latency.median_s if self.latency else None

    @property
    def provenance(self) -> str:
        if self.source == "measured":
            return f"measured on {self.device_description}, torch {self.torch_version}"
        if self.source == "derived":
            return (f"derived at batch {self.batch_size} from a profile measured on {self.device_description}, "
                    f"torch {self.torch_version} (ops counted at this batch; memory scaled; no timings)")
        return f"analyzed on the meta device (no execution), torch {self.torch_version}"

    def with_notes(self, *notes: str) -> "Profile":
        return replace(self, notes=self.notes + tuple(notes))

    # ---- serialization and display ------------------------------------------------------------
    def to_json(self, **kw) -> str:
        return dumps(self, **kw)

    @staticmethod
    def from_json(text: str) -> "Profile":
        obj = loads(text)
        if not isinstance(obj, Profile):
            raise invalid("Profile.from_json", "type", "'profile'", type(obj).__name__)
        return obj

    def summary(self) -> dict[str, object]:
        """The headline figures as a flat dict (for tables and DataFrames)."""
        return {
            "model": self.model,
            "device": self.device,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            "parameters": self.parameters,
            "parameter_bytes": self.parameter_bytes,
            "forward_flops": self.forward_flops,
            "train_flops": self.train_flops,
            "latency_s": self.latency_s,
            "latency_p90_s": self.latency.p90_s if self.latency else None,
            "throughput_per_s": self.throughput_per_s,
            "train_step_s": self.train_step_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "train_peak_memory_bytes": self.train_peak_memory_bytes,
            "serialized_bytes": self.serialized_bytes,
            "provenance": self.provenance,
        }

    def to_text(self) -> str:
        from .report import profile_text

        return profile_text(self)

    def _repr_html_(self) -> str:
        from .report import profile_html

        return profile_html(self)
