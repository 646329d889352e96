"""SearchSpace and Strategy: what the search may choose, and what it chose.

The space is factored. *Model knobs* change the model (its quality and its profile): a
distillation width, a pruning amount, a quantization mode; each knob's choices are ordered from
least to most compressed. *Deployment choices* change only cost: the serving device and batch
size (replicas follow from the peak traffic and the SLO). Deployment is optimized exactly, by
enumeration, for every model variant; quality, the expensive part, is evaluated once per variant.

A knob is one declared field: :func:`knob` puts a :class:`Knob` in the field's metadata, saying
which value means "off", how values are checked and ordered, and which technique config a value
stands for. Every search method, the variant keys and labels, the cost model's technique keys
and the job files read the declarations, so a new search dimension is a subclass with one more
``knob(...)`` field (see ``tests/optimizer/test_extending.py``)::

    @serializable("my_space")
    @dataclass(frozen=True)
    class MySpace(SearchSpace):
        sparsity: tuple[float, ...] = knob((0.0,), off=0.0, tag="s", allowed="fractions in [0, 1)",
                                           check=lambda v: 0 <= v < 1, technique=lambda sp, v: MySparsify(v))
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from profilers.config import invalid, is_number, serializable

__all__ = ["SearchSpace", "Variant", "Strategy", "Knob", "knob", "transform_knob"]


@dataclass(frozen=True)
class Knob:
    """One search dimension, declared in a :class:`SearchSpace` field's metadata (see :func:`knob`).

    * ``off``: the value that applies no technique (1.0 for a distillation width, "none" for quantize);
    * ``tag``: the letter of the variant key (``w0.5-p0.25-qint8_dynamic``);
    * ``allowed`` / ``check``: what a value may be (the error text, or a function returning it, and the test);
    * ``technique(space, value)``: the technique config a value stands for (never called with ``off``);
    * ``order``: sort key from least to most compressed (default: ascending; the lazy search assumes
      quality does not increase along it);
    * ``describe(value)``: the variant label's phrase (default: the technique's ``short_label()``).
    """

    off: Any
    tag: str
    allowed: str | Callable[[], str]
    check: Callable[[Any], bool]
    technique: Callable[[Any, Any], Any]
    order: Callable[[Any], Any] | None = None
    describe: Callable[[Any], str] | None = None


#: a sanity bound (checked before anything is built): a variant trains this many steps. (A batch size is
#: bounded where the workload is known: its inputs must fit the largest device, optimizer.search)
MAX_STEPS = 10_000_000


def knob(default: tuple, **kw: Any) -> Any:
    """A dataclass field that is a search dimension (keyword arguments: those of :class:`Knob`)."""
    return field(default=tuple(default), metadata={"knob": Knob(**kw)})



def transform_knob(name: str, values: tuple, fn: Callable[[Any, Any], Any], *, off: Any, on: str = "model",
                   engineer_hours: float | None = None, maintenance_hours_per_month: float = 0.0,
                   cost_key: str | None = None, stage: int = 1, trains: bool = False,
                   check: Callable[[Any], bool] | None = None, allowed: str = "",
                   order: Callable[[Any], Any] | None = None, describe: Callable[[Any], str] | None = None) -> Any:
    """A search dimension of your own, in one field: ``fn(model, value)`` (``on="model"``) or
    ``fn(workload, value)`` (``on="workload"``: input resolution, sequence length) at each of
    ``values`` (numbers, strings or bools; ``off`` applies nothing). Registers ``fn`` under ``name``
    (:func:`profilers.techniques.register_transform`). Its engineering work is priced under
    ``cost_key`` (default ``name``): ``engineer_hours`` (and ``maintenance_hours_per_month``) define
    it (:func:`cost_models.scenario.define_technique`; an assumption you state, which
    ``PeoplePlan.hours`` overrides per scenario), or ``cost_key`` names a technique of
    cost_models/data/techniques.toml. Values are ordered by ``order`` (default ascending) from least
    to most compressed::

        @dataclass(frozen=True)
        class MySpace(SearchSpace):
            rank: tuple[float, ...] = transform_knob("rank", (1.0, 0.5), low_rank, off=1.0, order=lambda v: -v,
                                                     engineer_hours=16)
    """
    from profilers.techniques.transform import Transform, register_transform

    spec = register_transform(name, fn, on=on, cost_key=cost_key, stage=stage, trains=trains)
    if engineer_hours is not None:
        from cost_models.scenario import define_technique

        define_technique(spec.cost_key, engineer_hours=engineer_hours,
                         maintenance_hours_per_month=maintenance_hours_per_month,
                         notes=f"knob {name!r} ({spec.function})")
    ok = check or (lambda v: v is None or isinstance(v, (bool, int, float, str)))
    return knob(tuple(values), off=off, tag=name, allowed=allowed or f"a value of {name} (a number, string or bool)",
                check=ok, technique=lambda space, v: Transform(name, v, spec.function), order=order,
                describe=describe or (lambda v: f"{name} {v}"))


def _int_at_least(v: Any, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _distill(space: "SearchSpace", width: float) -> Any:
    from profilers.techniques import Distill

    return Distill(width=width, steps=space.distill_steps)


def _prune(space: "SearchSpace", amount: float) -> Any:
    from profilers.techniques import Prune

    a = 0.5 if space.prune_method == "semi_structured_2_4" else amount  # 2:4 is 50 % by definition
    return Prune(space.prune_method, amount=a, finetune_steps=space.finetune_steps)


def _quantize(space: "SearchSpace", mode: str) -> Any:
    from profilers.techniques import Quantize

    return Quantize(mode)


def _quant_modes() -> tuple[str, ...]:
    from profilers.techniques.quantization import MODES

    return ("none", *MODES)


@serializable("search_space")
@dataclass(frozen=True)
class SearchSpace:
    """Knobs and deployment choices.

    * ``distill_width``: student widths (1.0 = no distillation), e.g. ``(1.0, 0.75, 0.5)``;
    * ``prune_amount``: pruning amounts (0.0 = none), e.g. ``(0.0, 0.25, 0.5)``, by ``prune_method``;
    * ``quantize``: ``"none"`` (as trained) or modes of :class:`profilers.techniques.Quantize`;
    * ``devices``: catalog names to serve on; ``batch_sizes``: serving batch sizes to consider;
    * ``finetune_steps`` / ``distill_steps``: training each pruned / distilled variant gets.
    """

    distill_width: tuple[float, ...] = knob(
        (1.0,), off=1.0, tag="w", allowed="a fraction in (0, 1] (1.0 = no distillation)",
        check=lambda v: is_number(v) and 0 < v <= 1, technique=_distill, order=lambda v: -v,
        describe=lambda v: f"distill to width {v:g}")
    prune_amount: tuple[float, ...] = knob(
        (0.0,), off=0.0, tag="p", allowed="a fraction in [0, 1) (0.0 = no pruning)",
        check=lambda v: is_number(v) and 0 <= v < 1, technique=_prune, describe=lambda v: f"prune {v:.0%}")
    quantize: tuple[str, ...] = knob(
        ("none",), off="none", tag="q", allowed=lambda: "one of " + ", ".join(map(repr, _quant_modes())),
        check=lambda v: v in _quant_modes(), technique=_quantize, order=lambda v: _quant_modes().index(v),
        describe=lambda v: f"quantize {v}")
    prune_method: str = "structured"
    finetune_steps: int = 100
    distill_steps: int = 300
    devices: tuple[str, ...] = ("host", "T4", "L4", "A10G", "A100-80GB", "H100-SXM")
    batch_sizes: tuple[int, ...] = (1, 16, 64)

    def __post_init__(self) -> None:
        o = type(self).__name__
        for name, k in self.knob_fields():
            values = self._list(name)
            for i, v in enumerate(values):
                if not k.check(v):
                    raise invalid(o, f"{name}[{i}]", k.allowed() if callable(k.allowed) else k.allowed, v)
            self._no_duplicates(name, values)
            object.__setattr__(self, name, tuple(sorted(values, key=k.order) if k.order else sorted(values)))
        from profilers.techniques.pruning import METHODS as prune_methods

        if self.prune_method not in prune_methods:
            raise invalid(o, "prune_method", "one of " + ", ".join(map(repr, prune_methods)), self.prune_method)
        if not _int_at_least(self.finetune_steps, 0):
            raise invalid(o, "finetune_steps", "an integer >= 0", self.finetune_steps)
        if self.finetune_steps > MAX_STEPS:
            raise invalid(o, "finetune_steps", f"an integer in [0, {MAX_STEPS:,}] (training steps per variant)",
                          self.finetune_steps)
        if not _int_at_least(self.distill_steps, 1):
            raise invalid(o, "distill_steps", "an integer >= 1", self.distill_steps)
        if self.distill_steps > MAX_STEPS:
            raise invalid(o, "distill_steps", f"an integer in [1, {MAX_STEPS:,}] (training steps per variant)",
                          self.distill_steps)
        for i, b in enumerate(self._list("batch_sizes")):
            if not _int_at_least(b, 1):
                raise invalid(o, f"batch_sizes[{i}]", "an integer >= 1", b)
        self._no_duplicates("batch_sizes", self.batch_sizes)
        from profilers import hardware

        names = [*hardware.names(), "host"]
        devices = []
        for i, d in enumerate(self._list("devices")):
            match = next((n for n in names if isinstance(d, str) and n.lower() == d.lower()), None)
            if match is None:
                raise invalid(o, f"devices[{i}]", "a catalog device: one of " + ", ".join(map(repr, names)), d)
            devices.append(match)
        self._no_duplicates("devices", devices)
        object.__setattr__(self, "devices", tuple(devices))

    def _list(self, name: str) -> tuple:
        v = getattr(self, name)
        if isinstance(v, (str, bytes, dict)) or not hasattr(v, "__iter__"):
            raise invalid(type(self).__name__, name, "a non-empty list", v)
        t = tuple(v)  # once: an iterator would be empty the second time
        if not t:
            raise invalid(type(self).__name__, name, "a non-empty list", v)
        object.__setattr__(self, name, t)
        return t

    def _no_duplicates(self, name: str, values: tuple) -> None:
        for i, v in enumerate(values):
            if v in values[:i]:
                raise invalid(type(self).__name__, f"{name}[{i}]", "a value not listed before (no duplicates)", v)

    # ---- the declared dimensions ----------------------------------------------------------------
    @classmethod
    def knob_fields(cls) -> list[tuple[str, Knob]]:
        """``(field name, Knob)`` of every declared dimension, in declaration order."""
        return [(f.name, f.metadata["knob"]) for f in dataclasses.fields(cls) if "knob" in f.metadata]

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of values of each knob."""
        return tuple(len(getattr(self, n)) for n, _ in self.knob_fields())

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def variants(self) -> list["Variant"]:
        """Every model variant, as knob levels (0 = least compressed) and values."""
        fields = self.knob_fields()
        out = []
        for levels in itertools.product(*(range(n) for n in self.shape)):
            values = tuple((name, getattr(self, name)[i]) for (name, _), i in zip(fields, levels))
            out.append(Variant(knobs=levels, values=values, tags=tuple(k.tag for _, k in fields),
                               phrases=tuple(k.describe(v) if k.describe else "" for (_, k), (_, v)
                                             in zip(fields, values) if v != k.off)))
        return out

    def techniques(self, v: "Variant", fidelity: float = 1.0) -> list[Any]:
        """The technique configs that produce variant ``v``, in composition order (each technique's
        declared ``stage``: distill -> prune -> quantize -> mixed precision).

        ``fidelity`` in (0, 1] scales the training each technique gets (``Technique.at_fidelity``:
        at least one step each): the low-fidelity rungs of a multi-fidelity search.
        """
        if v.techniques is not None:
            seq = list(v.techniques)
        else:
            seq = [k.technique(self, value) for (name, k), (_, value) in zip(self.knob_fields(), v.values)
                   if value != k.off]
        seq = [t.at_fidelity(fidelity) for t in seq]
        return sorted(seq, key=lambda t: t.stage)

    def cost_keys(self, v: "Variant") -> tuple[str, ...]:
        """The cost model's technique names (cost_models/data/techniques.toml) of ``v``'s techniques,
        as each technique config declares them (``cost_key``)."""
        return tuple(dict.fromkeys(t.cost_key for t in self.techniques(v)))

    def missing(self, workload: Any, priced: set[str] | None = None) -> list[str]:
        """Everything ``workload`` lacks for the techniques of this space, one line per knob value
        and need (``Technique.missing``), e.g. ``prune_amount=0.5 (prune_structured_0.5_ft100): needs
        training data: ...``; with ``priced`` (the cost model's technique names), also each technique
        whose ``cost_key`` it cannot price. [] when every variant can be built and priced."""
        lines = []
        for name, k in self.knob_fields():
            for value in getattr(self, name):
                if value == k.off:
                    continue
                t = k.technique(self, value)
                needs = list(t.missing(workload))
                if priced is not None and not any("register_transform" in n for n in needs) \
                        and t.cost_key not in priced:
                    needs.append(f"its engineer hours: transform_knob(..., engineer_hours=...) (or "
                                 f"cost_models.scenario.define_technique({t.cost_key!r}, engineer_hours=...)), or "
                                 "cost_key= a technique of cost_models/data/techniques.toml")
                lines += [f"{name}={value!r} ({t.short_label()}): needs {need}" for need in needs]
        return lines

    def trains(self, v: "Variant") -> bool:
        """Whether producing ``v`` trains (so a lower fidelity is cheaper than the full evaluation)."""
        return any(t.trains for t in self.techniques(v))


@dataclass(frozen=True)
class Variant:
    """One point of the knob grid: its levels (0 = least compressed) and values.

    A variant built outside the grid (the ``layerwise`` method's assembled model) carries its
    technique configs in ``techniques`` with its own ``name`` (key) and ``description`` (label).
    """

    knobs: tuple[int, ...]
    values: tuple[tuple[str, Any], ...]  # (knob field, value) in declaration order
    tags: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()  # the label's phrase of each knob that is not off
    techniques: tuple[Any, ...] | None = None
    name: str = ""
    description: str = ""

    def __getattr__(self, name: str) -> Any:  # v.prune_amount, v.quantize, ... (the knob values)
        for k, value in object.__getattribute__(self, "values"):
            if k == name:
                return value
        raise AttributeError(f"Variant has no knob {name!r}")

    @property
    def key(self) -> str:
        if self.name:
            return self.name
        return "-".join(f"{t}{v:g}" if is_number(v) else f"{t}{v}" for t, (_, v) in zip(self.tags, self.values))

    @property
    def label(self) -> str:
        return self.description or " + ".join(self.phrases) or "baseline (as trained)"


@serializable("strategy")
@dataclass(frozen=True)
class Strategy:
    """A chosen σ: the model variant (its techniques) and its deployment, with its figures.

    ``pool`` (when the search priced a pool of device types): devices per type, e.g.
    ``{"A10G": 2, "T4": 1}``; ``device`` is then the pool's description and ``pool_saving_usd``
    what the pool saves against the best single device type.
    """

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
    pool: dict[str, int] = field(default_factory=dict)
    pool_saving_usd: float = 0.0
    #: (low, high) total when the device times carry a calibration band (80 %); None: no band
    cost_band_usd: tuple[float, float] | None = None
