"""The two inputs of the parallel-training model: a transformer's shape and a parallel layout.

* :class:`TransformerShape` is the arithmetic skeleton of a decoder-only transformer (GPT-2 or
  Llama layout): enough to count parameters exactly, FLOPs analytically and activation bytes per
  Korthikanti et al. 2022.
* :class:`ParallelConfig` is a layout: data x tensor x pipeline degrees, ZeRO stage, batch split,
  interleaving, recomputation, sequence parallelism, precision. It validates itself; it is checked
  against a shape and a device count by :meth:`ParallelConfig.validate_for`.

Torch-free (transformers is imported by nobody here: ``from_hf_config`` reads attributes or keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..config import check_choice, invalid, serializable

__all__ = ["TransformerShape", "ParallelConfig", "RECOMPUTE", "PRECISIONS", "BYTES_PER_ELEMENT"]

RECOMPUTE = ("none", "selective", "full")
PRECISIONS = ("bf16", "fp16", "fp32", "fp8")
#: bytes of one parameter / activation element in each training precision (fp8 training, as
#: Transformer Engine runs it: fp8 GEMMs, bf16 activations and weights elsewhere)
BYTES_PER_ELEMENT = {"bf16": 2, "fp16": 2, "fp32": 4, "fp8": 2}


def _check_int(owner: str, field: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise invalid(owner, field, f"an integer >= {minimum}", value)


@serializable("transformer_shape")
@dataclass(frozen=True)
class TransformerShape:
    """A decoder-only transformer, as a few integers.

    ``layout`` picks the block: ``"gpt"`` (LayerNorm with bias, fused QKV with bias, GeLU MLP
    ``hidden -> ffn_hidden -> hidden`` with biases, learned positions, tied LM head: GPT-2 and
    Megatron GPT) or ``"llama"`` (RMSNorm, no biases, grouped-query attention, SwiGLU MLP with three
    matrices, rotary positions, untied LM head by default). ``kv_heads`` defaults to ``heads``,
    ``ffn_hidden`` to ``4 * hidden``, ``max_positions`` (the learned position table) to ``seq_len``.
    ``dropout`` says whether dropout masks are stored (Korthikanti counts them; Llama has none).
    """

    layers: int
    hidden: int
    heads: int
    vocab: int
    seq_len: int
    kv_heads: int = 0
    ffn_hidden: int = 0
    layout: str = "gpt"
    tied_embeddings: bool = True
    max_positions: int = 0
    dropout: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        owner = "TransformerShape"
        for f in ("layers", "hidden", "heads", "vocab", "seq_len"):
            _check_int(owner, f, getattr(self, f))
        for f in ("kv_heads", "ffn_hidden", "max_positions"):
            _check_int(owner, f, getattr(self, f), minimum=0)
        check_choice(owner, "layout", self.layout, ("gpt", "llama"))
        if self.kv_heads == 0:
            object.__setattr__(self, "kv_heads", self.heads)
        if self.ffn_hidden == 0:
            object.__setattr__(self, "ffn_hidden", 4 * self.hidden)
        if self.max_positions == 0:
            object.__setattr__(self, "max_positions", self.seq_len)
        if self.hidden % self.heads:
            raise invalid(owner, "heads", f"a divisor of hidden={self.hidden}", self.heads)
        if self.kv_heads > self.heads or self.heads % self.kv_heads:
            raise invalid(owner, "kv_heads", f"a divisor of heads={self.heads}", self.kv_heads)

    # ---- derived sizes ------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        """Width of K (and of V): ``kv_heads * head_dim`` (= hidden without GQA)."""
        return self.kv_heads * self.head_dim

    @property
    def mlp_matrices(self) -> int:
        """2 for a GeLU MLP (up, down), 3 for SwiGLU (gate, up, down)."""
        return 2 if self.layout == "gpt" else 3

    def layer_parameters(self) -> tuple[int, int]:
        """Parameters of one block as ``(tensor_parallel_sharded, replicated)``.

        Sharded: every weight matrix and the column-parallel biases (QKV, MLP up). Replicated on
        every tensor-parallel rank: norms and the row-parallel output biases (Megatron layout).
        """
        h, f, kv = self.hidden, self.ffn_hidden, self.kv_dim
        matrices = h * (h + 2 * kv) + h * h + self.mlp_matrices * h * f
        if self.layout == "gpt":
            sharded = matrices + (h + 2 * kv) + f  # + QKV bias + MLP up bias
            replicated = 2 * 2 * h + 2 * h  # two LayerNorms (weight+bias) + attn-out and MLP-down biases
        else:
            sharded = matrices
            replicated = 2 * h  # two RMSNorm weights
        return sharded, replicated

    def embedding_parameters(self) -> int:
        """Token embedding (+ learned position table for the GPT layout)."""
        pos = self.max_positions * self.hidden if self.layout == "gpt" else 0
        return self.vocab * self.hidden + pos

    def head_parameters(self) -> int:
        """Final norm + untied LM head (0 for the head when tied)."""
        norm = 2 * self.hidden if self.layout == "gpt" else self.hidden
        return norm + (0 if self.tied_embeddings else self.vocab * self.hidden)

    def parameters(self) -> int:
        """Exact parameter count of the GPT-2 / Llama module (tied weights counted once)."""
        sharded, replicated = self.layer_parameters()
        return self.layers * (sharded + replicated) + self.embedding_parameters() + self.head_parameters()

    # ---- construction from Hugging Face configs ------------------------------------------------
    @classmethod
    def from_hf_config(cls, config: Any, seq_len: int | None = None, name: str = "") -> "TransformerShape":
        """Read a transformers ``GPT2Config`` / ``LlamaConfig`` (or Mistral) or a plain dict of it.

        ``seq_len`` defaults to the config's maximum positions.
        """
        get = (lambda k, d=None: config.get(k, d)) if isinstance(config, Mapping) else (lambda k, d=None: getattr(config, k, d))
        model_type = get("model_type")
        if model_type is None and get("n_embd") is not None:
            model_type = "gpt2"
        if model_type == "gpt2":
            h = int(get("n_embd"))
            n_pos = int(get("n_positions"))
            drop = any(float(get(k, 0.0) or 0.0) > 0 for k in ("attn_pdrop", "resid_pdrop", "embd_pdrop"))
            return cls(
                layers=int(get("n_layer")), hidden=h, heads=int(get("n_head")), vocab=int(get("vocab_size")),
                seq_len=int(seq_len or n_pos), ffn_hidden=int(get("n_inner") or 4 * h), layout="gpt",
                tied_embeddings=bool(get("tie_word_embeddings", True)), max_positions=n_pos, dropout=drop,
                name=name or "gpt2",
            )
        if model_type in ("llama", "mistral"):
            heads = int(get("num_attention_heads"))
            h = int(get("hidden_size"))
            head_dim = get("head_dim")
            if head_dim is not None and int(head_dim) * heads != h:
                raise invalid("TransformerShape.from_hf_config", "head_dim", f"hidden_size / num_attention_heads = {h // heads}", head_dim)
            if get("attention_bias", False) or get("mlp_bias", False):
                raise invalid("TransformerShape.from_hf_config", "attention_bias", "False (biased Llama variants are not modelled)", True)
            n_pos = int(get("max_position_embeddings"))
            return cls(
                layers=int(get("num_hidden_layers")), hidden=h, heads=heads,
                kv_heads=int(get("num_key_value_heads") or heads), ffn_hidden=int(get("intermediate_size")),
                vocab=int(get("vocab_size")), seq_len=int(seq_len or n_pos), layout="llama",
                tied_embeddings=bool(get("tie_word_embeddings", False)), max_positions=n_pos,
                dropout=float(get("attention_dropout", 0.0) or 0.0) > 0, name=name or str(model_type),
            )
        raise invalid("TransformerShape.from_hf_config", "model_type", "one of 'gpt2', 'llama', 'mistral'", model_type)


@serializable("parallel_config")
@dataclass(frozen=True)
class ParallelConfig:
    """A training layout: ``dp * tp * pp`` devices.

    * ``dp``, ``tp``, ``pp``: data-, tensor- and pipeline-parallel degrees.
    * ``zero_stage``: 0 (plain data parallel), 1 (optimizer states sharded over dp), 2 (+ gradients),
      3 (+ parameters), as in Rajbhandari et al. 2020. Stages 2 and 3 need ``pp == 1``.
    * ``micro_batch``: sequences per forward/backward on one pipeline; ``global_batch``: sequences
      per optimizer step over all replicas (defaults to ``micro_batch * dp``).
    * ``interleave``: virtual pipeline stages (model chunks) per device (Narayanan et al. 2021).
    * ``recompute``: ``"none"``, ``"selective"`` (attention core; Korthikanti et al. 2022) or
      ``"full"`` (each layer's input only).
    * ``sequence_parallel``: shard norms/dropouts along the sequence over the tp group (needs tp > 1).
    * ``precision``: ``"bf16"``/``"fp16"`` (mixed precision Adam), ``"fp32"``, or ``"fp8"`` (fp8 GEMMs at
      the device's fp8 peak, bf16 everywhere else, plus an fp8 copy of the weights: Transformer Engine).

    ``global_batch`` need not divide into ``micro_batch * dp``: the last gradient-accumulation round is
    then partly filled and every replica runs ``ceil`` of the rounds (:attr:`micro_batches`). The
    layers need not divide into ``pp`` stages without interleaving: the first ``layers % pp`` stages
    take one layer more, and the slowest stage sets the pace (:meth:`stage_layers`).
    """

    dp: int = 1
    tp: int = 1
    pp: int = 1
    zero_stage: int = 0
    micro_batch: int = 1
    global_batch: int = 0
    interleave: int = 1
    recompute: str = "none"
    sequence_parallel: bool = False
    precision: str = "bf16"

    def __post_init__(self) -> None:
        owner = "ParallelConfig"
        for f in ("dp", "tp", "pp", "micro_batch", "interleave"):
            _check_int(owner, f, getattr(self, f))
        _check_int(owner, "global_batch", self.global_batch, minimum=0)
        if self.global_batch == 0:
            object.__setattr__(self, "global_batch", self.micro_batch * self.dp)
        if not isinstance(self.zero_stage, int) or isinstance(self.zero_stage, bool) or self.zero_stage not in (0, 1, 2, 3):
            raise invalid(owner, "zero_stage", "one of 0, 1, 2, 3", self.zero_stage)
        check_choice(owner, "recompute", self.recompute, RECOMPUTE)
        check_choice(owner, "precision", self.precision, PRECISIONS)
        if not isinstance(self.sequence_parallel, bool):
            raise invalid(owner, "sequence_parallel", "True or False", self.sequence_parallel)
        if self.sequence_parallel and self.tp == 1:
            raise invalid(owner, "sequence_parallel", "False when tp == 1 (it shards over the tensor-parallel group)", True)
        if self.global_batch < self.micro_batch * self.dp:
            raise invalid(owner, "global_batch", f">= micro_batch * dp = {self.micro_batch * self.dp} (every replica "
                          "runs at least one micro-batch)", self.global_batch)
        if self.zero_stage >= 2 and self.pp > 1:
            raise invalid(owner, "zero_stage", "0 or 1 with pipeline parallelism (pp > 1)", self.zero_stage)
        if self.interleave > 1:
            if self.pp == 1:
                raise invalid(owner, "interleave", "1 without pipeline parallelism (pp == 1)", self.interleave)
            if self.micro_batches % self.pp:
                raise invalid(owner, "interleave", f"1 unless the micro-batches per pipeline ({self.micro_batches}) are a multiple of pp = {self.pp}", self.interleave)

    @property
    def devices(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def micro_batches(self) -> int:
        """Micro-batches each pipeline runs per optimizer step (gradient-accumulation steps; rounded up
        when the global batch leaves a remainder: the last round is partly filled)."""
        return -(-self.global_batch // (self.micro_batch * self.dp))

    def stage_layers(self, shape: "TransformerShape") -> tuple[int, int]:
        """(layers of the first stage, of the last stage): ``ceil`` and ``floor`` of layers / pp when
        they do not divide (the first ``layers % pp`` stages take one more)."""
        q, r = divmod(shape.layers, self.pp)
        return q + (1 if r else 0), q

    @property
    def bytes_per_element(self) -> int:
        return BYTES_PER_ELEMENT[self.precision]

    def validate_for(self, shape: "TransformerShape", devices: int | None = None) -> "ParallelConfig":
        """Check this layout against a model and a device count; return self, or raise ConfigError."""
        owner = "ParallelConfig"
        if devices is not None and self.devices != devices:
            raise invalid(owner, "devices", f"the device count {devices} (dp * tp * pp)", self.devices)
        if shape.heads % self.tp:
            raise invalid(owner, "tp", f"a divisor of heads={shape.heads}", self.tp)
        if shape.kv_heads % self.tp:
            raise invalid(owner, "tp", f"a divisor of kv_heads={shape.kv_heads}", self.tp)
        if self.interleave > 1 and shape.layers % (self.pp * self.interleave):
            raise invalid(owner, "pp", f"such that pp * interleave = {self.pp}*{self.interleave} divides layers={shape.layers} "
                          "(uneven stages are modelled without interleaving)", self.pp)
        if self.pp > shape.layers:
            raise invalid(owner, "pp", f"<= layers={shape.layers} (every stage holds a layer)", self.pp)
        if self.sequence_parallel and shape.seq_len % self.tp:
            raise invalid(owner, "tp", f"a divisor of seq_len={shape.seq_len} with sequence_parallel", self.tp)
        return self
