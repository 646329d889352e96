"""Time of one optimizer step of a parallel training layout.

Per pipeline stage and micro-batch (``b`` sequences), on each device:

* **GEMM compute** = stage FLOPs (forward + backward + recomputation, / tp) over the achievable
  rate ``peak(precision) * efficiency``; the efficiency is the device's fused-runtime matmul
  efficiency from :mod:`profilers.calibration` (fitted to published measurements; the one source
  ``project`` reads too) unless ``TimeModel.efficiency`` gives one. The last stage also runs the LM head; the pipeline runs at
  the pace of its slowest stage.
* **memory-bound kernels** (norms, softmax, GeLU, dropout, residual adds): each activation byte a
  layer stores (:func:`.memory.activation_bytes_per_layer` without recomputation) is written and
  read once in the forward pass and once more in the backward (``4`` passes over HBM); a
  recomputed tensor adds 2 passes. Time = bytes / HBM bandwidth. (Counted, not fitted.)
* **tensor parallel**: 4 all-reduces of ``b*s*h`` elements per layer (2 forward, 2 backward;
  Shoeybi et al. 2019), 6 with full recomputation (the recomputed forward repeats its 2). Sequence
  parallelism swaps each for an all-gather + reduce-scatter pair: the same bytes. Megatron-LM
  overlaps the backward ones with weight-gradient GEMMs (``overlap_tp_comm="backward"``).
* **pipeline** point-to-point: one activation forward and one gradient backward of ``b*s*h``
  elements per model chunk (``x interleave``); with Narayanan's scatter/gather, a transfer that
  crosses nodes sends ``1/tp`` of it per rank (so does sequence parallelism).
* stage time per micro-batch ``t = compute + exposed tp + exposed p2p``; the step's pipeline time is
  ``(m + (pp-1)/v) * t`` — ``m`` micro-batches plus the bubble ``(pp-1)/(m*v)`` (Narayanan eq. 1).

Per step:

* **data parallel**: gradients all-reduced over dp (flat ring or hierarchical over nodes, whichever
  is faster, with NCCL's latency; ZeRO-1: reduce-scatter + all-gather, the same bytes); ZeRO-2
  reduce-scatters per micro-batch. Overlap (``TimeModel.overlap_dp_comm``, default on, as PyTorch
  DDP and Megatron's ``--overlap-grad-reduce``): gradient traffic hides behind one micro-batch's
  backward; only the excess is exposed.
* **ZeRO-3 / FSDP**, per micro-batch and layer: ``TimeModel.zero3_gathers_per_layer`` all-gathers of
  the layer's weights before its forward and again before its backward, and as many
  reduce-scatters of its gradients after it; each pays its bytes and its own latency over dp ranks.
  With prefetch (``TimeModel.overlap_dp_comm``) layer ``i+1``'s gather runs during layer ``i``'s
  compute: per layer only ``max(0, comm - compute)`` is exposed, plus the first layer's gather and
  the embedding/head gathers and reduce-scatters, which nothing hides.
* **stragglers**: every step ends in a collective, so the step waits for the slowest of ``n``
  devices. With rank times jittering with coefficient of variation ``c`` (``TimeModel.jitter``), the
  expected maximum of ``n`` normal draws is about ``mean * (1 + c * sqrt(2 ln n))`` (the Gumbel
  limit), added to the compute time.
* **framework**: ``TimeModel.step_overhead_s`` host seconds per step that the devices wait for
  (optimizer loop launch, gradient clipping, logging; on a CPU every op's dispatch).
* **optimizer**: Adam streams ~28 bytes per (sharded) parameter through HBM.

Collective costs come from :func:`.comm.collective_s` (bandwidth per :func:`.comm.group_bandwidth`,
latency per :data:`.comm.NCCL_LATENCY`). ``efficiency``, ``jitter`` and ``step_overhead_s`` left at
None are read from the training calibration (:mod:`profilers.parallel.calibration`), fitted to
published training runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import check_choice, check_positive, invalid, serializable
from ..hardware import DeviceSpec
from .comm import NCCL_LATENCY, NO_LATENCY, collective_s, spans_nodes
from .config import ParallelConfig, TransformerShape
from .flops import layer_forward_flops, lm_head_forward_flops, training_flops
from .memory import MemoryModel, _stage_parameters, activation_bytes_per_layer

__all__ = ["TimeModel", "LayerTime", "StepTime", "layer_time", "step_time", "gemm_efficiency", "jitter", "step_overhead"]

#: HBM bytes an Adam step moves per parameter (fp32 master, m, v read+written, grad read, weight written)
ADAM_BYTES_PER_PARAM = 28.0


@serializable("time_model")
@dataclass(frozen=True)
class TimeModel:
    """Assumptions of the time model; every overlap is a switch.

    * ``efficiency``: achievable fraction of the device's dense peak for the training GEMMs; None
      (default): the device's calibrated fused-runtime matmul efficiency (:func:`gemm_efficiency`).
    * ``overlap_dp_comm``: data-parallel gradient traffic overlaps the backward pass (default on).
    * ``overlap_tp_comm``: which tensor-parallel collectives hide behind GEMMs: ``"none"``,
      ``"backward"`` (default: Megatron-LM's all-reduce overlapped with weight-gradient GEMMs,
      Korthikanti et al. 2022 sec. 6) or ``"all"`` (comm/GEMM overlap as in Transformer Engine).
    * ``overlap_pp_comm``: pipeline sends hide behind compute (default off).
    * ``scatter_gather``: Narayanan et al.'s scatter/gather for cross-node pipeline sends (default on).
    * ``flash_attention``: the attention core runs as one fused kernel (FlashAttention, SDPA): its
      s x s scores never reach HBM, so they add no memory-bound traffic (default on, as today's
      stacks run; off for Megatron-LM 2021-22, whose traffic Korthikanti et al.'s table counts).
    * ``latency``: every collective pays NCCL's latency (:data:`.comm.NCCL_LATENCY`; default on).
    * ``zero3_gathers_per_layer``: collectives per layer and pass under ZeRO-3: 1 for FSDP wrapping
      each transformer block (default), more when every sub-module gathers its own weights
      (DeepSpeed ZeRO-3 gathers per module: 6 for a GPT block with biases).
    * ``jitter``: coefficient of variation of one device's step time (stragglers); None: calibrated.
    * ``step_overhead_s``: host seconds per step the devices wait for; None: calibrated (0 on a CPU).
    """

    efficiency: float | None = None
    overlap_dp_comm: bool = True
    overlap_tp_comm: str = "backward"
    overlap_pp_comm: bool = False
    scatter_gather: bool = True
    flash_attention: bool = True
    latency: bool = True
    zero3_gathers_per_layer: int = 1
    jitter: float | None = None
    step_overhead_s: float | None = None

    def __post_init__(self) -> None:
        if self.efficiency is not None:
            check_positive("TimeModel", "efficiency", self.efficiency)
            if self.efficiency > 1:
                raise invalid("TimeModel", "efficiency", "a fraction in (0, 1] or None (calibrated)", self.efficiency)
        check_choice("TimeModel", "overlap_tp_comm", self.overlap_tp_comm, ("none", "backward", "all"))
        if not isinstance(self.zero3_gathers_per_layer, int) or isinstance(self.zero3_gathers_per_layer, bool) \
                or self.zero3_gathers_per_layer < 1:
            raise invalid("TimeModel", "zero3_gathers_per_layer", "an integer >= 1", self.zero3_gathers_per_layer)
        for f in ("jitter", "step_overhead_s"):
            v = getattr(self, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf):
                raise invalid("TimeModel", f, "a number >= 0 or None (calibrated)", v)
        for f in ("overlap_dp_comm", "overlap_pp_comm", "scatter_gather", "latency", "flash_attention"):
            if not isinstance(getattr(self, f), bool):
                raise invalid("TimeModel", f, "True or False", getattr(self, f))


@dataclass(frozen=True)
class LayerTime:
    """Seconds of one layer for one micro-batch on one device; ``backward_s`` includes the
    recomputation. ``*_memory_s`` and ``*_tp_s`` are the memory-bound and exposed tensor-parallel
    parts of each."""

    forward_s: float
    backward_s: float
    forward_memory_s: float
    backward_memory_s: float
    forward_tp_s: float
    backward_tp_s: float

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s


def gemm_efficiency(device: DeviceSpec, tm: TimeModel, precision: str | None = None) -> float:
    """``tm.efficiency``, or the device's training GEMM efficiency from the training calibration
    (which falls back to the fused-runtime matmul efficiency of :mod:`profilers.calibration`; fp8
    training gets the calibration's fp8 factor)."""
    if tm.efficiency is not None:
        return tm.efficiency
    from .calibration import training

    return training().efficiency(device, precision=precision)


def _calibrated(device: DeviceSpec, given: float | None, name: str) -> float:
    """A given figure, or the training calibration's (0 on CPUs, which it has no rows for)."""
    if given is not None:
        return given
    if device.kind == "cpu":
        return 0.0
    from .calibration import training

    return getattr(training(), name)


def jitter(device: DeviceSpec, tm: TimeModel) -> float:
    """``tm.jitter``, or the calibrated coefficient of variation of a device's step time."""
    return _calibrated(device, tm.jitter, "jitter")


def step_overhead(device: DeviceSpec, tm: TimeModel) -> float:
    """``tm.step_overhead_s``, or the calibrated per-step host overhead."""
    return _calibrated(device, tm.step_overhead_s, "step_overhead_s")


def _training_source(device: DeviceSpec) -> str:
    from .calibration import training

    return training().source(device)


def _latency(tm: TimeModel):
    return NCCL_LATENCY if tm.latency else NO_LATENCY


def _rate(config: ParallelConfig, device: DeviceSpec, tm: TimeModel) -> float:
    return device.peak_flops_per_s(config.precision) * gemm_efficiency(device, tm, config.precision)


def layer_time(
    shape: TransformerShape, config: ParallelConfig, device: DeviceSpec,
    time_model: TimeModel | None = None, flops_scale: float = 1.0,
) -> LayerTime:
    """Forward and backward time of one transformer layer for one micro-batch (module docstring)."""
    tm = time_model or TimeModel()
    tp, b, e = config.tp, config.micro_batch, config.bytes_per_element
    tokens = b * shape.seq_len
    rate = _rate(config, device, tm)
    fl = layer_forward_flops(shape, tokens)
    gemm_f = flops_scale * fl.total / tp / rate
    extra = {"none": 0.0, "selective": fl.attention_core, "full": fl.total}[config.recompute]
    gemm_b = flops_scale * (2.0 * fl.total + extra) / tp / rate
    hbm = device.memory_bandwidth_bytes_per_s
    # FlashAttention never writes the attention scores to HBM: the layer's traffic is the selective
    # set (no s^2 terms), and recomputing the core is inside its kernel
    stored = activation_bytes_per_layer(shape, b, tp, config.sequence_parallel,
                                        "selective" if tm.flash_attention else "none", e)
    kept = activation_bytes_per_layer(shape, b, tp, config.sequence_parallel, config.recompute, e)
    recomputed = 0.0 if config.recompute == "none" else (stored if config.recompute == "full" else max(0.0, stored - kept))
    mem_f = 2.0 * stored / hbm
    mem_b = (2.0 * stored + 2.0 * recomputed) / hbm
    ar = collective_s("all_reduce", tokens * shape.hidden * e, device, tp, 1, _latency(tm)) if tp > 1 else 0.0
    tp_f = 0.0 if tm.overlap_tp_comm == "all" else 2 * ar
    tp_b = {"none": 2 * ar, "backward": 0.0, "all": 0.0}[tm.overlap_tp_comm]
    if config.recompute == "full" and tm.overlap_tp_comm != "all":
        tp_b += 2 * ar  # the recomputed forward repeats its two all-reduces
    return LayerTime(forward_s=gemm_f + mem_f + tp_f, backward_s=gemm_b + mem_b + tp_b,
                     forward_memory_s=mem_f, backward_memory_s=mem_b, forward_tp_s=tp_f, backward_tp_s=tp_b)


@serializable("step_time")
@dataclass(frozen=True)
class StepTime:
    """Seconds of one optimizer step, split into (exposed) parts that add up to ``total_s``:
    ``compute_s`` (GEMMs + the ``memory_bound_s`` kernels it includes) + ``bubble_s`` +
    ``tp_comm_s`` + ``pp_comm_s`` + ``dp_comm_s`` + ``optimizer_s`` + ``straggler_s`` + ``framework_s``."""

    total_s: float
    compute_s: float
    memory_bound_s: float
    bubble_s: float
    tp_comm_s: float
    pp_comm_s: float
    dp_comm_s: float
    optimizer_s: float
    straggler_s: float
    framework_s: float
    dp_comm_unhidden_s: float
    model_flops: float
    hardware_flops: float
    mfu: float
    tokens_per_s: float
    device: str
    provenance: str


def step_time(
    shape: TransformerShape, config: ParallelConfig, device: DeviceSpec,
    time_model: TimeModel | None = None, flops_per_step: float | None = None,
    memory_model: MemoryModel | None = None,
) -> StepTime:
    """Predicted time of one optimizer step of ``config`` on ``device``.

    ``flops_per_step``: model FLOPs (forward + backward, no recomputation) of one step over the
    global batch, e.g. ``profilers.analyze(...).train_flops`` scaled to the global batch. When
    given, the analytic per-layer FLOPs are rescaled to it; otherwise :func:`.training_flops`.
    """
    config.validate_for(shape)
    tm = time_model or TimeModel()
    mm = memory_model or MemoryModel()
    dp, tp, pp, v, m, b = config.dp, config.tp, config.pp, config.interleave, config.micro_batches, config.micro_batch
    s, h, e = shape.seq_len, shape.hidden, config.bytes_per_element
    analytic = training_flops(shape, config.global_batch, config.recompute)
    scale = 1.0
    if flops_per_step is not None:
        check_positive("step_time", "flops_per_step", flops_per_step)
        scale = flops_per_step / analytic.model

    # one micro-batch on the slowest pipeline stage: the first holds ceil(L / pp) layers, the last
    # floor(L / pp) and the LM head (uneven stages: the slower of the two sets the pace)
    lt = layer_time(shape, config, device, tm, scale)
    first, last = config.stage_layers(shape)
    head = scale * 3.0 * lm_head_forward_flops(shape, b * s) / tp / _rate(config, device, tm)
    if pp > 1 and first * lt.total_s > last * lt.total_s + head:
        n_layers, head = first, 0.0  # the first stage, one layer more, is the slowest
    else:
        n_layers = last
    tp_mb = n_layers * (lt.forward_tp_s + lt.backward_tp_s)
    mem_mb = n_layers * (lt.forward_memory_s + lt.backward_memory_s)
    compute_mb = n_layers * lt.total_s - tp_mb + head
    lat = _latency(tm)
    pp_mb = 0.0
    if pp > 1:  # activation forward + gradient backward per model chunk
        msg = b * s * h * e
        if config.sequence_parallel or (spans_nodes(device, pp, tp * dp) and tm.scatter_gather):
            msg /= tp
        pp_mb = 0.0 if tm.overlap_pp_comm else 2 * v * collective_s("p2p", msg, device, pp, tp * dp, lat)
    stage_mb = compute_mb + tp_mb + pp_mb
    bubble = (pp - 1) / v * stage_mb

    # data parallel
    _, g, _ = mm.state_bytes(config.precision)
    w = e  # weights travel in the training precision (an fp8 copy is made locally, never gathered)
    params = max(_stage_parameters(shape, config, 0), _stage_parameters(shape, config, pp - 1))
    dp_total = dp_exposed = 0.0
    if dp > 1:
        coll = lambda kind, nbytes: collective_s(kind, nbytes, device, dp, tp, lat)  # noqa: E731
        z = config.zero_stage
        window = n_layers * lt.backward_s  # one micro-batch's backward
        if z <= 1:
            dp_total = coll("all_reduce", params * g) if z == 0 else (
                coll("reduce_scatter", params * g) + coll("all_gather", params * w))
            dp_exposed = max(0.0, dp_total - window) if tm.overlap_dp_comm else dp_total
        elif z == 2:
            rs, ag = coll("reduce_scatter", params * g), coll("all_gather", params * w)
            dp_total = m * rs + ag
            dp_exposed = (m * max(0.0, rs - window) + ag) if tm.overlap_dp_comm else dp_total
        else:
            k = tm.zero3_gathers_per_layer
            sharded, replicated = shape.layer_parameters()
            layer_p = (sharded / tp + replicated) / k
            ag_l, rs_l = k * coll("all_gather", layer_p * w), k * coll("reduce_scatter", layer_p * g)
            rest = max(0.0, params - n_layers * k * layer_p)  # embedding, head, final norm: one unit
            rest_t = (2 * coll("all_gather", rest * w) + coll("reduce_scatter", rest * g)) if rest else 0.0
            per_mb = n_layers * (2 * ag_l + rs_l) + rest_t
            dp_total = m * per_mb
            if tm.overlap_dp_comm:  # prefetch: layer i+1's traffic under layer i's compute
                fwd_c = lt.forward_s - lt.forward_tp_s
                bwd_c = lt.backward_s - lt.backward_tp_s
                exposed_mb = (ag_l + rest_t + (n_layers - 1) * max(0.0, ag_l - fwd_c)
                              + n_layers * max(0.0, ag_l + rs_l - bwd_c))
                dp_exposed = m * exposed_mb
            else:
                dp_exposed = dp_total

    opt_params = params / (dp if config.zero_stage >= 1 else 1)
    optimizer = opt_params * ADAM_BYTES_PER_PARAM / device.memory_bandwidth_bytes_per_s
    n_dev = config.devices
    straggler = jitter(device, tm) * math.sqrt(2.0 * math.log(n_dev)) * m * compute_mb if n_dev > 1 else 0.0
    framework = step_overhead(device, tm)

    total = m * stage_mb + bubble + dp_exposed + optimizer + straggler + framework
    peak = device.peak_flops_per_s(config.precision)
    return StepTime(
        total_s=total, compute_s=m * compute_mb, memory_bound_s=m * mem_mb, bubble_s=bubble,
        tp_comm_s=m * tp_mb, pp_comm_s=m * pp_mb, dp_comm_s=dp_exposed, optimizer_s=optimizer,
        straggler_s=straggler, framework_s=framework, dp_comm_unhidden_s=dp_total, model_flops=scale * analytic.model, hardware_flops=scale * analytic.hardware,
        mfu=scale * analytic.model / (total * config.devices * peak),
        tokens_per_s=config.global_batch * s / total, device=device.name,
        provenance=(f"projected for {config.devices} x {device.name} from "
                    f"{'given flops_per_step' if flops_per_step is not None else 'analytic FLOPs'} "
                    f"with efficiency {gemm_efficiency(device, tm, config.precision):.3g} ("
                    + ("given" if tm.efficiency is not None else _training_source(device)) + ")"),
    )
