"""SearchSpace and Strategy: what the search may choose, and what it chose.

The space is factored. *Model knobs* change the model (its quality and its profile): a
distillation width, a pruning amount, a quantization mode; each knob's choices are ordered from
least to most compressed. *Deployment choices* change only cost: the serving device and batch
size (replicas follow from the peak traffic and the SLO). Deployment is optimized exactly, by
enumeration, for every model variant; quality, the expensive part, is evaluated once per variant.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from profilers._config import check_choice, invalid, serializable

__all__ = ["SearchSpace", "Variant", "Strategy", "QUANT_ORDER", "technique_names"]

#: quantization modes from least to most compressed ("none": fp32 weights)
QUANT_ORDER = ("none", "bf16", "fp16", "int8_weight_only", "int8_dynamic", "fp8", "int4_weight_only")


@serializable("search_space")
@dataclass(frozen=True)
class SearchSpace:
    """Knobs and deployment choices.

    * ``distill_width``: student widths (1.0 = no distillation), e.g. ``(1.0, 0.75, 0.5)``;
    * ``prune_amount``: structured pruning amounts (0.0 = none), e.g. ``(0.0, 0.25, 0.5)``;
    * ``quantize``: modes from :data:`QUANT_ORDER` ("none" = as trained);
    * ``devices``: catalog names to serve on; ``batch_sizes``: serving batch sizes to consider;
    * ``finetune_steps`` / ``distill_steps``: training each pruned / distilled variant gets.
    """

    distill_width: tuple[float, ...] = (1.0,)
    prune_amount: tuple[float, ...] = (0.0,)
    quantize: tuple[str, ...] = ("none",)
    prune_method: str = "structured"
    finetune_steps: int = 100
    distill_steps: int = 300
    devices: tuple[str, ...] = ("host", "T4", "L4", "A10G", "A100-80GB", "H100-SXM")
    batch_sizes: tuple[int, ...] = (1, 16, 64)

    def __post_init__(self) -> None:
        o = "SearchSpace"
        for f in ("distill_width", "prune_amount", "quantize", "devices", "batch_sizes"):
            v = getattr(self, f)
            if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__") or len(tuple(v)) == 0:
                raise invalid(o, f, "a non-empty list", v)
            object.__setattr__(self, f, tuple(v))
        for w in self.distill_width:
            if not isinstance(w, (int, float)) or isinstance(w, bool) or not 0 < w <= 1:
                raise invalid(o, "distill_width", "fractions in (0, 1] (1.0 = no distillation)", w)
        for a in self.prune_amount:
            if not isinstance(a, (int, float)) or isinstance(a, bool) or not 0 <= a < 1:
                raise invalid(o, "prune_amount", "fractions in [0, 1) (0.0 = no pruning)", a)
        for q in self.quantize:
            check_choice(o, "quantize", q, QUANT_ORDER)
        check_choice(o, "prune_method", self.prune_method, ("structured", "l1_unstructured", "semi_structured_2_4"))
        for f in ("finetune_steps", "distill_steps"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if f == "finetune_steps" else 1):
                raise invalid(o, f, "an integer >= " + ("0" if f == "finetune_steps" else "1"), v)
        for b in self.batch_sizes:
            if not isinstance(b, int) or isinstance(b, bool) or b < 1:
                raise invalid(o, "batch_sizes", "integers >= 1", b)
        from profilers import hardware

        for d in self.devices:
            hardware.get(d)  # names the allowed devices when unknown
        for f in ("distill_width", "prune_amount", "quantize", "devices", "batch_sizes"):
            v = getattr(self, f)
            if len(set(v)) != len(v):
                raise invalid(o, f, "a list without duplicates", list(v))
        # order each knob from least to most compressed
        object.__setattr__(self, "distill_width", tuple(sorted(self.distill_width, reverse=True)))
        object.__setattr__(self, "prune_amount", tuple(sorted(self.prune_amount)))
        object.__setattr__(self, "quantize", tuple(sorted(self.quantize, key=QUANT_ORDER.index)))

    @property
    def size(self) -> int:
        return len(self.distill_width) * len(self.prune_amount) * len(self.quantize)

    def variants(self) -> list["Variant"]:
        """Every model variant, as knob levels (0 = least compressed) and technique configs."""
        out = []
        for i, j, k in itertools.product(range(len(self.distill_width)), range(len(self.prune_amount)),
                                         range(len(self.quantize))):
            out.append(Variant(knobs=(i, j, k), distill_width=self.distill_width[i],
                               prune_amount=self.prune_amount[j], quantize=self.quantize[k]))
        return out

    def techniques(self, v: "Variant", fidelity: float = 1.0) -> list[Any]:
        """The technique configs that produce variant ``v`` (distill -> prune -> quantize).

        ``fidelity`` in (0, 1] scales the training each technique gets (distillation steps,
        recovery fine-tuning steps; at least one step each): the low-fidelity rungs of a
        multi-fidelity search. ``fidelity=1`` is the variant itself.
        """
        from profilers.techniques import Distill, Prune, Quantize

        def scaled(steps: int) -> int:
            return steps if fidelity >= 1 or steps == 0 else max(1, round(steps * fidelity))

        seq: list[Any] = []
        if v.distill_width < 1:
            seq.append(Distill(width=v.distill_width, steps=scaled(self.distill_steps)))
        if v.prune_amount > 0:
            kw = {"amount": 0.5} if self.prune_method == "semi_structured_2_4" else {"amount": v.prune_amount}
            seq.append(Prune(self.prune_method, finetune_steps=scaled(self.finetune_steps), **kw))
        if v.quantize != "none":
            seq.append(Quantize(v.quantize))
        return seq

    def trains(self, v: "Variant") -> bool:
        """Whether producing ``v`` trains (so a lower fidelity is cheaper than the full evaluation)."""
        return v.distill_width < 1 or (v.prune_amount > 0 and self.finetune_steps > 0)


@dataclass(frozen=True)
class Variant:
    knobs: tuple[int, ...]
    distill_width: float
    prune_amount: float
    quantize: str

    @property
    def key(self) -> str:
        return f"w{self.distill_width:g}-p{self.prune_amount:g}-q{self.quantize}"

    @property
    def label(self) -> str:
        parts = []
        if self.distill_width < 1:
            parts.append(f"distill to width {self.distill_width:g}")
        if self.prune_amount > 0:
            parts.append(f"prune {self.prune_amount:.0%}")
        if self.quantize != "none":
            parts.append(f"quantize {self.quantize}")
        return " + ".join(parts) or "baseline (as trained)"


def technique_names(v: Variant) -> tuple[str, ...]:
    """The cost model's technique names (cost_models/data/techniques.toml) for a variant."""
    names = []
    if v.distill_width < 1:
        names.append("distill")
    if v.prune_amount > 0:
        names.append("prune")
    q = v.quantize
    if q in ("int8_weight_only", "int8_dynamic"):
        names.append("quantize_int8")
    elif q == "fp8":
        names.append("quantize_fp8")
    elif q == "int4_weight_only":
        names.append("quantize_int4")
    elif q in ("bf16", "fp16"):
        names.append("mixed_precision")  # a cast to 16-bit weights: the same work as autocast
    return tuple(names)


@serializable("strategy")
@dataclass(frozen=True)
class Strategy:
    """A chosen σ: the model variant (its techniques) and its deployment, with its figures."""

    variant: str  # Variant.key
    label: str
    techniques: tuple[Any, ...]  # technique configs (Distill, Prune, Quantize), JSON-tagged when saved
    device: str
    batch_size: int
    replicas: int
    cost_usd: float
    quality: float | None
    quality_source: str  # "measured" or "implied (monotonicity)" or "not evaluated"
    cost_breakdown: dict[str, float] = field(default_factory=dict)  # component -> usd
    provenance: tuple[str, ...] = ()
