"""Memory per device of a parallel training layout, and whether it fits.

**Model states** (Rajbhandari et al. 2020, ZeRO, mixed-precision Adam): per parameter 2 bytes of
16-bit weights, 2 of 16-bit gradients and 12 of fp32 optimizer states (master copy, momentum,
variance): ``K = 12``. fp32 training: 4 + 4 + 8. ZeRO stage 1 shards the optimizer states over the
``dp`` replicas, stage 2 also the gradients, stage 3 also the weights (plus a buffer of gathered
weights: two layers, at most ``MemoryModel.zero3_live_parameters``).

**Activations** per layer and micro-batch (Korthikanti et al. 2022, Table 2; bytes, 16-bit
activations and 1-byte dropout masks), GPT block::

    no parallelism                      s*b*h*(34 + 5*a*s/h)
    tensor parallel t                   s*b*h*(10 + 24/t + 5*a*s/(h*t))
    tensor + sequence parallel          s*b*h*(34/t + 5*a*s/(h*t))
    tensor parallel + selective         s*b*h*(10 + 24/t)
    tensor + sequence + selective       s*b*h*(34/t)
    full recomputation                  s*b*h*2      (/t with sequence parallel)

The ``24`` (inside tensor-parallel regions: Q, K, V, attention-output input, the MLP's inner
tensors) and ``10`` (QKV and MLP inputs, two norm inputs, two dropout masks) are generalised to
grouped-query attention (K, V: ``4*s*b*kv``), other MLP widths (GeLU ``4*s*b*f``, fused SwiGLU
``6*s*b*f``) and models without dropout; ``5*a*s^2*b`` is the softmax output (2), its dropout
mask (1) and the dropout output (2) (``2*a*s^2*b`` without dropout). fp32 scales all by 2.
Full recomputation also holds one layer's full activations while it is recomputed (working set).

**Pipeline** (1F1B): stage ``i`` holds activations of ``min(pp - i, m)`` micro-batches of its
``L/pp`` layers, so the first stage holds ``L`` layers' worth; the interleaved schedule holds
``(pp-i-1)*2 + (v-1)*pp + 1`` model chunks of ``L/(pp*v)`` layers (factor ``1 + (pp-1)/(pp*v)`` on
the first stage). The first stage also holds the embedding (vocabulary-parallel over tp), the last
the final norm, the LM head (a copy of a tied embedding when pp > 1) and fp32 logits ``4*s*b*V/t``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check_positive, invalid, serializable
from ..hardware import DeviceSpec
from .config import ParallelConfig, TransformerShape

__all__ = ["MemoryModel", "MemoryBreakdown", "activation_bytes_per_layer", "memory_per_device"]


@serializable("memory_model")
@dataclass(frozen=True)
class MemoryModel:
    """Assumptions of the memory model.

    ``grad_bytes`` / ``optimizer_bytes`` per parameter default to the ZeRO paper's mixed-precision
    Adam (2 and 12; fp32 training: 4 and 8). ``usable_fraction`` of the device memory is available
    to the model: the rest is left for the CUDA context, communication buffers and allocator
    fragmentation (default 0.9, a stated margin, not fitted). ``zero3_live_parameters`` caps the
    gathered-weight buffer of ZeRO-3 at two layers or this many parameters, whichever is fewer
    (DeepSpeed's ``stage3_max_live_parameters`` default, 1e9).
    """

    grad_bytes: float = 0.0
    optimizer_bytes: float = 0.0
    usable_fraction: float = 0.9
    zero3_live_parameters: float = 1e9

    def __post_init__(self) -> None:
        for f in ("grad_bytes", "optimizer_bytes"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or v < 0:
                raise invalid("MemoryModel", f, "a number >= 0 (0 = the default for the precision)", v)
        check_positive("MemoryModel", "usable_fraction", self.usable_fraction)
        check_positive("MemoryModel", "zero3_live_parameters", self.zero3_live_parameters)
        if self.usable_fraction > 1:
            raise invalid("MemoryModel", "usable_fraction", "a number in (0, 1]", self.usable_fraction)

    def state_bytes(self, precision: str) -> tuple[float, float, float]:
        """(weight, gradient, optimizer) bytes per parameter."""
        weight = 4.0 if precision == "fp32" else 2.0
        grad = self.grad_bytes or weight
        opt = self.optimizer_bytes or (8.0 if precision == "fp32" else 12.0)
        if precision == "fp8":  # + the fp8 copy of the weights the fp8 GEMMs read (Transformer Engine)
            weight += 1.0
        return weight, grad, opt


@serializable("memory_breakdown")
@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes on the most loaded device (pipeline ``stage``) of a layout."""

    stage: int
    parameters_bytes: float
    gradients_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    other_bytes: float
    total_bytes: float
    first_stage_bytes: float
    last_stage_bytes: float
    device: str = ""
    device_memory_bytes: float = 0.0
    usable_bytes: float = 0.0
    fits: bool | None = None

    @property
    def headroom_bytes(self) -> float:
        return self.usable_bytes - self.total_bytes


def activation_bytes_per_layer(
    shape: TransformerShape, micro_batch: int, tp: int = 1, sequence_parallel: bool = False,
    recompute: str = "none", bytes_per_element: int = 2,
) -> float:
    """Stored activation bytes of one layer for one micro-batch (Korthikanti et al. Table 2)."""
    s, b, h, a = shape.seq_len, micro_batch, shape.hidden, shape.heads
    sbh = s * b * h
    scale = bytes_per_element / 2.0
    if recompute == "full":
        return scale * 2.0 * sbh / (tp if sequence_parallel else 1)
    drop = 1.0 if shape.dropout else 0.0
    mlp = (4.0 if shape.layout == "gpt" else 6.0) * s * b * shape.ffn_hidden
    sharded = 4.0 * sbh + 4.0 * s * b * shape.kv_dim + mlp  # Q, attn-out input, K, V, MLP inner
    replicated = (8.0 + 2.0 * drop) * sbh  # QKV input, MLP input, 2 norm inputs, 2 dropout masks
    core = 0.0 if recompute == "selective" else (2.0 + 3.0 * drop) * a * s * s * b
    return scale * ((sharded + core) / tp + replicated / (tp if sequence_parallel else 1))


def _in_flight_layers(shape: TransformerShape, cfg: ParallelConfig, stage: int) -> float:
    """Layers' worth of micro-batch activations stage ``stage`` holds at its peak (1F1B)."""
    pp, v, m = cfg.pp, cfg.interleave, cfg.micro_batches
    if v == 1:  # uneven stages: the first layers % pp stages hold one layer more
        first, last = cfg.stage_layers(shape)
        return min(pp - stage, m) * (first if stage < shape.layers % pp else last)
    chunks = min((pp - stage - 1) * 2 + (v - 1) * pp + 1, m * v)
    return chunks * shape.layers / (pp * v)


def _stage_parameters(shape: TransformerShape, cfg: ParallelConfig, stage: int) -> float:
    """Parameters held by one device of pipeline stage ``stage`` (before ZeRO sharding)."""
    sharded, replicated = shape.layer_parameters()
    first, last = cfg.stage_layers(shape)
    n = (first if stage < shape.layers % cfg.pp else last) * (sharded / cfg.tp + replicated)
    vocab = shape.vocab * shape.hidden / cfg.tp
    if stage == 0:
        n += vocab + (shape.embedding_parameters() - shape.vocab * shape.hidden)  # positions: replicated
    if stage == cfg.pp - 1:
        head = shape.head_parameters()
        n += head - (0 if shape.tied_embeddings else shape.vocab * shape.hidden)  # final norm
        if not shape.tied_embeddings or cfg.pp > 1:
            n += vocab  # untied head, or the last stage's copy of a tied embedding
    return n


def _stage_memory(shape: TransformerShape, cfg: ParallelConfig, mm: MemoryModel, stage: int) -> tuple[float, ...]:
    w, g, o = mm.state_bytes(cfg.precision)
    params = _stage_parameters(shape, cfg, stage)
    dp, z = cfg.dp, cfg.zero_stage
    p_bytes = params * w / (dp if z >= 3 else 1)
    g_bytes = params * g / (dp if z >= 2 else 1)
    o_bytes = params * o / (dp if z >= 1 else 1)
    e = cfg.bytes_per_element
    layer_act = activation_bytes_per_layer(shape, cfg.micro_batch, cfg.tp, cfg.sequence_parallel, cfg.recompute, e)
    act = _in_flight_layers(shape, cfg, stage) * layer_act
    other = 0.0
    if cfg.recompute == "full":  # one layer's full activations while it is recomputed
        other += activation_bytes_per_layer(shape, cfg.micro_batch, cfg.tp, cfg.sequence_parallel, "none", e)
    if z >= 3:  # gathered weights: two layers (current + prefetch), at most zero3_live_parameters
        sharded, replicated = shape.layer_parameters()
        other += min(2 * (sharded / cfg.tp + replicated), mm.zero3_live_parameters) * w
    sb = shape.seq_len * cfg.micro_batch
    if stage == 0:  # embedding output dropout mask per in-flight micro-batch
        other += (1.0 if shape.dropout else 0.0) * sb * shape.hidden * min(cfg.pp, cfg.micro_batches)
    if stage == cfg.pp - 1:  # final norm + LM-head inputs, fp32 logits (one micro-batch)
        other += 4.0 * sb * shape.hidden * e / 2 / (cfg.tp if cfg.sequence_parallel else 1)
        other += 4.0 * sb * shape.vocab / cfg.tp
    total = p_bytes + g_bytes + o_bytes + act + other
    return p_bytes, g_bytes, o_bytes, act, other, total


def memory_per_device(
    shape: TransformerShape, config: ParallelConfig, device: DeviceSpec | None = None,
    memory_model: MemoryModel | None = None,
) -> MemoryBreakdown:
    """Peak bytes on the most loaded device of ``config`` and, given a device, whether it fits."""
    config.validate_for(shape)
    mm = memory_model or MemoryModel()
    first = _stage_memory(shape, config, mm, 0)
    last = _stage_memory(shape, config, mm, config.pp - 1)
    stage, worst = (0, first) if first[-1] >= last[-1] else (config.pp - 1, last)
    cap = device.memory_bytes if device is not None else 0.0
    usable = cap * mm.usable_fraction
    return MemoryBreakdown(
        stage=stage, parameters_bytes=worst[0], gradients_bytes=worst[1], optimizer_bytes=worst[2],
        activations_bytes=worst[3], other_bytes=worst[4], total_bytes=worst[5],
        first_stage_bytes=first[-1], last_stage_bytes=last[-1],
        device=device.name if device is not None else "", device_memory_bytes=cap, usable_bytes=usable,
        fits=(worst[5] <= usable) if device is not None else None,
    )
