"""Analytic FLOPs of a transformer training step (FLOP = 2 per multiply-add).

Per layer and token, forward (Narayanan et al. 2021, eq. 2-3, generalised to GQA and SwiGLU):

* dense GEMMs: ``2 * (h*(h + 2*kv) + h*h + n_mlp*h*f)`` — QKV, attention output, MLP
  (``24 h^2`` for GPT: ``kv = h``, ``f = 4h``, ``n_mlp = 2``);
* attention core: ``4 * s * h`` — ``Q K^T`` and ``softmax(.) V`` over the full ``s x s`` square
  (causal masking is not discounted, as in Megatron's accounting);
* LM head (once per token, not per layer): ``2 * h * V``.

Backward is twice the forward. Recomputation adds forward work: ``"full"`` re-runs every layer's
forward (x 4/3 on the layers), ``"selective"`` re-runs only the attention core (Korthikanti et al.
2022, sec. 5). The LM head is never recomputed.

For a GPT shape this reproduces Narayanan et al.'s iteration FLOPs exactly (with full recompute)::

    F = 96 * B * s * l * h^2 * (1 + s/(6h) + V/(16*l*h))

(:func:`megatron_flops`). Where ``profilers.analyze()`` is available, its measured ``train_flops``
can replace the analytic model FLOPs: :func:`profilers.parallel.step_time` takes ``flops_per_step``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check_choice, invalid, serializable
from .config import RECOMPUTE, TransformerShape

__all__ = ["LayerFlops", "layer_forward_flops", "lm_head_forward_flops", "TrainingFlops", "training_flops", "megatron_flops"]


@dataclass(frozen=True)
class LayerFlops:
    """Forward FLOPs of one transformer layer for some number of tokens."""

    dense: float
    attention_core: float

    @property
    def total(self) -> float:
        return self.dense + self.attention_core


def layer_forward_flops(shape: TransformerShape, tokens: float) -> LayerFlops:
    """Forward FLOPs of one block over ``tokens`` tokens (each attending over ``shape.seq_len``)."""
    h, f, kv = shape.hidden, shape.ffn_hidden, shape.kv_dim
    dense = 2.0 * tokens * (h * (h + 2 * kv) + h * h + shape.mlp_matrices * h * f)
    core = 4.0 * tokens * shape.seq_len * h
    return LayerFlops(dense=dense, attention_core=core)


def lm_head_forward_flops(shape: TransformerShape, tokens: float) -> float:
    """Forward FLOPs of the output projection to the vocabulary."""
    return 2.0 * tokens * shape.hidden * shape.vocab


@serializable("training_flops")
@dataclass(frozen=True)
class TrainingFlops:
    """FLOPs of one optimizer step: ``model`` (forward + backward) and ``recompute`` (extra
    forward work); ``hardware = model + recompute`` is what the devices execute."""

    model: float
    recompute: float
    sequences: int
    recompute_mode: str

    @property
    def hardware(self) -> float:
        return self.model + self.recompute


def training_flops(shape: TransformerShape, sequences: int, recompute: str = "none") -> TrainingFlops:
    """Model and recompute FLOPs of a step over ``sequences`` sequences of ``shape.seq_len``."""
    if not isinstance(sequences, int) or isinstance(sequences, bool) or sequences < 1:
        raise invalid("training_flops", "sequences", "an integer >= 1", sequences)
    check_choice("training_flops", "recompute", recompute, RECOMPUTE)
    tokens = sequences * shape.seq_len
    layer = layer_forward_flops(shape, tokens)
    model = 3.0 * (shape.layers * layer.total + lm_head_forward_flops(shape, tokens))
    extra = {"none": 0.0, "selective": layer.attention_core, "full": layer.total}[recompute]
    return TrainingFlops(model=model, recompute=shape.layers * extra, sequences=sequences, recompute_mode=recompute)


def megatron_flops(layers: int, hidden: int, vocab: int, seq_len: int, batch: int) -> float:
    """Narayanan et al. 2021 eq. 3: FLOPs per iteration with full recompute, GPT layout."""
    l, h, s, v, b = layers, hidden, seq_len, vocab, batch
    return 96.0 * b * s * l * h * h * (1 + s / (6 * h) + v / (16 * l * h))
