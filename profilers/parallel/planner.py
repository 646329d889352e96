"""Planner: every valid layout of a model on a device type, the fastest and the cheapest that fit.

``plan(shape, device, devices, global_batch)`` enumerates (:func:`enumerate_configs`)
tensor-parallel degrees up to a node (``device.devices_per_node``), pipeline degrees dividing the
layers, the data-parallel rest, micro-batch sizes, interleaving, ZeRO stages, recomputation and
sequence parallelism; keeps the layouts whose memory fits; times them. **Fastest** = least seconds
per step; **cheapest** = fewest device-seconds per step (or dollars, given ``usd_per_device_hour``).
Over one device count the two coincide; over a range they trade off.

Infeasibility is a result (``status="infeasible"``) with a message and the closest candidates
(least memory), not an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

from ..config import invalid, serializable
from ..hardware import DeviceSpec
from .config import RECOMPUTE, ParallelConfig, TransformerShape
from .memory import MemoryBreakdown, MemoryModel, memory_per_device
from .timing import StepTime, TimeModel, step_time

__all__ = ["PlanCandidate", "PlanResult", "enumerate_configs", "evaluate", "plan"]


@serializable("plan_candidate")
@dataclass(frozen=True)
class PlanCandidate:
    config: ParallelConfig
    memory: MemoryBreakdown
    time: StepTime | None
    device_seconds_per_step: float
    cost_usd_per_step: float | None = None


@serializable("plan_result")
@dataclass(frozen=True)
class PlanResult:
    status: str  # "ok" or "infeasible"
    message: str
    model: str
    device: str
    global_batch: int
    fastest: PlanCandidate | None
    cheapest: PlanCandidate | None
    top: tuple[PlanCandidate, ...]
    closest: tuple[PlanCandidate, ...]
    evaluated: int
    feasible: int


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def enumerate_configs(
    shape: TransformerShape, devices: int, global_batch: int, *, max_tp: int | None = None,
    micro_batches: Sequence[int] = (1, 2, 4, 8), max_interleave: int = 8,
    zero_stages: Sequence[int] = (0, 1, 2, 3), recompute: Sequence[str] = RECOMPUTE,
    sequence_parallel: Sequence[bool] = (False, True), precision: str = "bf16",
) -> Iterator[ParallelConfig]:
    """Every valid :class:`ParallelConfig` of ``devices`` devices for ``shape`` and ``global_batch``."""
    for tp in _divisors(devices):
        if (max_tp and tp > max_tp) or shape.heads % tp or shape.kv_heads % tp:
            continue
        for pp in _divisors(devices // tp):
            if pp > shape.layers:
                continue
            dp = devices // (tp * pp)
            if global_batch < dp:
                continue
            for mb in micro_batches:
                if global_batch < dp * mb:
                    continue
                m = -(-global_batch // (dp * mb))  # a remainder leaves the last round partly filled
                even = shape.layers % pp == 0
                ivs = [1] if pp == 1 or not even else [v for v in _divisors(shape.layers // pp)
                                                       if v <= max_interleave and (v == 1 or m % pp == 0)]
                for v in ivs:
                    for z in zero_stages:
                        if z >= 2 and pp > 1:
                            continue
                        for rc in recompute:
                            for sp in sequence_parallel:
                                if sp and (tp == 1 or shape.seq_len % tp):
                                    continue
                                yield ParallelConfig(dp=dp, tp=tp, pp=pp, zero_stage=z, micro_batch=mb,
                                                     global_batch=global_batch, interleave=v, recompute=rc,
                                                     sequence_parallel=sp, precision=precision)


def evaluate(
    shape: TransformerShape, config: ParallelConfig, device: DeviceSpec, *,
    time_model: TimeModel | None = None, memory_model: MemoryModel | None = None,
    usd_per_device_hour: float | None = None, flops_per_step: float | None = None,
) -> PlanCandidate:
    """Memory and (when it fits) time of one layout."""
    mem = memory_per_device(shape, config, device, memory_model)
    t = step_time(shape, config, device, time_model, flops_per_step, memory_model) if mem.fits else None
    dev_s = t.total_s * config.devices if t else float("inf")
    usd = dev_s / 3600.0 * usd_per_device_hour if (t and usd_per_device_hour is not None) else None
    return PlanCandidate(config=config, memory=mem, time=t, device_seconds_per_step=dev_s, cost_usd_per_step=usd)


def plan(
    shape: TransformerShape, device: DeviceSpec, devices: int | Iterable[int], global_batch: int, *,
    usd_per_device_hour: float | None = None, time_model: TimeModel | None = None,
    memory_model: MemoryModel | None = None, flops_per_step: float | None = None, keep: int = 5,
    **space,
) -> PlanResult:
    """Fastest and cheapest layouts that fit; ``space`` narrows :func:`enumerate_configs`."""
    counts = [devices] if isinstance(devices, int) else sorted(set(devices))
    if not counts or any(not isinstance(n, int) or n < 1 for n in counts):
        raise invalid("plan", "devices", "a positive integer or an iterable of them", devices)
    if not isinstance(global_batch, int) or global_batch < 1:
        raise invalid("plan", "global_batch", "an integer >= 1 (sequences per step)", global_batch)
    if usd_per_device_hour is not None and not usd_per_device_hour >= 0:
        raise invalid("plan", "usd_per_device_hour", "a number >= 0", usd_per_device_hour)
    space.setdefault("max_tp", device.devices_per_node)
    fits: list[PlanCandidate] = []
    misses: list[PlanCandidate] = []
    evaluated = 0
    for n in counts:
        for cfg in enumerate_configs(shape, n, global_batch, **space):
            evaluated += 1
            c = evaluate(shape, cfg, device, time_model=time_model, memory_model=memory_model,
                         usd_per_device_hour=usd_per_device_hour, flops_per_step=flops_per_step)
            (fits if c.memory.fits else misses).append(c)
    misses.sort(key=lambda c: c.memory.total_bytes)
    name = shape.name or f"{shape.layers}x{shape.hidden}"
    if not fits:
        why = "no valid layout" if not evaluated else (
            f"none of {evaluated} layouts fits {device.name} memory; closest needs "
            f"{misses[0].memory.total_bytes / 1e9:.1f} GB of {misses[0].memory.usable_bytes / 1e9:.1f} GB usable")
        return PlanResult(status="infeasible", message=f"{why}. To fix: add devices, shorten seq_len or lower global_batch.",
                          model=name, device=device.name, global_batch=global_batch, fastest=None, cheapest=None,
                          top=(), closest=tuple(misses[:keep]), evaluated=evaluated, feasible=0)
    by_time = sorted(fits, key=lambda c: (c.time.total_s, c.device_seconds_per_step))
    cost_key = (lambda c: (c.cost_usd_per_step, c.time.total_s)) if usd_per_device_hour is not None else (
        lambda c: (c.device_seconds_per_step, c.time.total_s))
    cheapest = min(fits, key=cost_key)
    return PlanResult(status="ok", message=f"{len(fits)} of {evaluated} layouts fit", model=name, device=device.name,
                      global_batch=global_batch, fastest=by_time[0], cheapest=cheapest, top=tuple(by_time[:keep]),
                      closest=tuple(misses[:keep]), evaluated=evaluated, feasible=len(fits))
