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

* **data parallel**: gradients ring all-reduced over dp (ZeRO-1: reduce-scatter + all-gather, the
  same bytes); ZeRO-2 reduce-scatters per micro-batch; ZeRO-3 also all-gathers the weights twice
  per micro-batch (forward, backward): 1.5x the all-reduce bytes per micro-batch.
  Overlap (``TimeModel.overlap_dp_comm``, default on, as PyTorch DDP and Megatron's
  ``--overlap-grad-reduce``): gradient traffic hides behind one micro-batch's backward, ZeRO-3's
  weight gathers behind that micro-batch's compute; only the excess is exposed.
* **optimizer**: Adam streams ~28 bytes per (sharded) parameter through HBM.

Collective costs come from :mod:`.comm`; which link a group uses from :func:`.comm.group_bandwidth`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check_choice, check_positive, invalid, serializable
from ..hardware import DeviceSpec
from .comm import all_gather_s, group_bandwidth, p2p_s, reduce_scatter_s, ring_all_reduce_s, spans_nodes
from .config import ParallelConfig, TransformerShape
from .flops import layer_forward_flops, lm_head_forward_flops, training_flops
from .memory import MemoryModel, _stage_parameters, activation_bytes_per_layer

__all__ = ["TimeModel", "LayerTime", "StepTime", "layer_time", "step_time", "gemm_efficiency"]

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
    """

    efficiency: float | None = None
    overlap_dp_comm: bool = True
    overlap_tp_comm: str = "backward"
    overlap_pp_comm: bool = False
    scatter_gather: bool = True

    def __post_init__(self) -> None:
        if self.efficiency is not None:
            check_positive("TimeModel", "efficiency", self.efficiency)
            if self.efficiency > 1:
                raise invalid("TimeModel", "efficiency", "a fraction in (0, 1] or None (calibrated)", self.efficiency)
        check_choice("TimeModel", "overlap_tp_comm", self.overlap_tp_comm, ("none", "backward", "all"))
        for f in ("overlap_dp_comm", "overlap_pp_comm", "scatter_gather"):
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


def gemm_efficiency(device: DeviceSpec, tm: TimeModel) -> float:
    """``tm.efficiency``, or the device's fused-runtime matmul efficiency from the calibration."""
    if tm.efficiency is not None:
        return tm.efficiency
    from ..calibration import load

    return load().lookup(device, "fused").efficiency["matmul"]


def _rate(config: ParallelConfig, device: DeviceSpec, tm: TimeModel) -> float:
    return device.peak_flops_per_s(config.precision) * gemm_efficiency(device, tm)


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
    stored = activation_bytes_per_layer(shape, b, tp, config.sequence_parallel, "none", e)
    kept = activation_bytes_per_layer(shape, b, tp, config.sequence_parallel, config.recompute, e)
    recomputed = 0.0 if config.recompute == "none" else (stored if config.recompute == "full" else stored - kept)
    mem_f = 2.0 * stored / hbm
    mem_b = (2.0 * stored + 2.0 * recomputed) / hbm
    ar = ring_all_reduce_s(tokens * shape.hidden * e, tp, group_bandwidth(device, tp, 1)) if tp > 1 else 0.0
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
    ``tp_comm_s`` + ``pp_comm_s`` + ``dp_comm_s`` + ``optimizer_s``."""

    total_s: float
    compute_s: float
    memory_bound_s: float
    bubble_s: float
    tp_comm_s: float
    pp_comm_s: float
    dp_comm_s: float
    optimizer_s: float
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
    pp_mb = 0.0
    if pp > 1:  # activation forward + gradient backward per model chunk
        msg = b * s * h * e
        if config.sequence_parallel or (spans_nodes(device, pp, tp * dp) and tm.scatter_gather):
            msg /= tp
        pp_mb = 0.0 if tm.overlap_pp_comm else 2 * v * p2p_s(msg, group_bandwidth(device, pp, tp * dp))
    stage_mb = compute_mb + tp_mb + pp_mb
    bubble = (pp - 1) / v * stage_mb

    # data parallel
    w, g, _ = mm.state_bytes(config.precision)
    params = max(_stage_parameters(shape, config, 0), _stage_parameters(shape, config, pp - 1))
    dp_total = dp_exposed = 0.0
    if dp > 1:
        bw = group_bandwidth(device, dp, tp)
        z = config.zero_stage
        window = n_layers * lt.backward_s  # one micro-batch's backward
        if z <= 1:
            dp_total = ring_all_reduce_s(params * g, dp, bw) if z == 0 else (
                reduce_scatter_s(params * g, dp, bw) + all_gather_s(params * w, dp, bw))
            dp_exposed = max(0.0, dp_total - window) if tm.overlap_dp_comm else dp_total
        elif z == 2:
            rs, ag = reduce_scatter_s(params * g, dp, bw), all_gather_s(params * w, dp, bw)
            dp_total = m * rs + ag
            dp_exposed = (m * max(0.0, rs - window) + ag) if tm.overlap_dp_comm else dp_total
        else:
            per_mb = 2 * all_gather_s(params * w, dp, bw) + reduce_scatter_s(params * g, dp, bw)
            dp_total = m * per_mb
            dp_exposed = m * max(0.0, per_mb - compute_mb) if tm.overlap_dp_comm else dp_total

    opt_params = params / (dp if config.zero_stage >= 1 else 1)
    optimizer = opt_params * ADAM_BYTES_PER_PARAM / device.memory_bandwidth_bytes_per_s

    total = m * stage_mb + bubble + dp_exposed + optimizer
    peak = device.peak_flops_per_s(config.precision)
    return StepTime(
        total_s=total, compute_s=m * compute_mb, memory_bound_s=m * mem_mb, bubble_s=bubble,
        tp_comm_s=m * tp_mb, pp_comm_s=m * pp_mb, dp_comm_s=dp_exposed, optimizer_s=optimizer,
        dp_comm_unhidden_s=dp_total, model_flops=scale * analytic.model, hardware_flops=scale * analytic.hardware,
        mfu=scale * analytic.model / (total * config.devices * peak),
        tokens_per_s=config.global_batch * s / total, device=device.name,
        provenance=(f"projected for {config.devices} x {device.name} from "
                    f"{'given flops_per_step' if flops_per_step is not None else 'analytic FLOPs'} "
                    f"with efficiency {gemm_efficiency(device, tm):.3g} ("
                    + ("given" if tm.efficiency is not None else "fused matmul, profilers.calibration") + ")"),
    )
