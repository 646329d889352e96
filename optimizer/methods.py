"""Search methods: one class each behind :class:`SearchMethod`, listed in one registry, :data:`METHODS`.

In the spirit of Optuna's ``BaseSampler``: a method gets a :class:`SearchContext` (the two
oracles, pricing and quality, through the :class:`~optimizer.evaluate.Evaluator`; the variants;
the target; the budget) and returns an :class:`Outcome` (status, message, and what it settled).
:func:`optimizer.search` validates, builds the context, runs the method and assembles the
result; the CLI, the job files and the docs read :data:`METHODS` (names, summaries, options).

A new method is one subclass with ``@register_method``::

    @register_method
    class Greedy(SearchMethod):
        name = "greedy"
        summary = "evaluate variants cheapest first until one is feasible"

        def run(self, ctx):
            for v in sorted(ctx.variants, key=lambda v: ctx.ev.price(v).cost_usd):
                if ctx.stop():
                    return Outcome("best found", "budget", stopped=True)
                q = ctx.ev.quality(v)
                if q is not None and q >= ctx.min_quality:
                    return Outcome("best found", "the cheapest feasible variant by price order")
            return Outcome("infeasible", "no variant meets the target")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

__all__ = ["SearchMethod", "SearchContext", "Outcome", "METHODS", "register_method", "OPTIONS", "method_names",
           "registered", "get_method", "why_not"]

#: the search() keywords a method may take beyond the ones every method takes (timeout_s,
#: max_evaluations, budget_usd, usd_per_hour, seed, profile_time_cap_s), each with why a method
#: that does not take it rejects it ({takers}: the methods that take it)
OPTIONS: dict[str, str] = {
    "n_trials": "a trial budget is for {takers}; cap other methods with max_evaluations",
    "fidelities": "multi-fidelity pruning is for {takers}",
    "pruner": "multi-fidelity pruning is for {takers}",
    "prune_margin": "multi-fidelity pruning is for {takers}",
    "skip_dearer": "pruning variants dearer than the incumbent is for {takers}",
    "storage": "Optuna storage is for {takers}; every method keeps its evaluations in the output folder",
    "layer_choices": "per-layer choices are for {takers}",
    "max_bytes": "a deployed-bytes budget is for {takers}",
}


@dataclass
class SearchContext:
    """What a method may use. ``ev`` prices (cheap) and evaluates (expensive) variants."""

    ev: Any  # optimizer.evaluate.Evaluator
    variants: list[Any]
    min_quality: float
    budget: Any  # optimizer.budget.SearchBudget
    workload: Any
    cost_model: Any
    seed: int = 0
    output_dir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the method's OPTIONS that were given
    progress: Callable | None = None  # progress(done, total, variant, quality_or_None, cost_usd)

    def stop(self) -> str | None:
        """Why the budget ends the search now (None: go on); asked before each quality evaluation."""
        return self.budget.exhausted(self.ev.quality_calls, self.ev.mean_seconds())

    def price_all(self) -> None:
        """Price every variant (cheap: no training), reporting progress."""
        for i, v in enumerate(self.variants):
            dep = self.ev.price(v)
            if self.progress is not None:
                self.progress(i + 1, len(self.variants), v, None, dep.cost_usd)


@dataclass
class Outcome:
    """What a method settled; the result's trials and best come from the evaluator's records."""

    status: str  # "optimal" (certified) | "best found" | "infeasible"
    message: str
    stopped: bool = False  # a budget ended the search
    certificate: tuple[dict, ...] = ()
    violations: tuple[str, ...] = ()
    implied: set[str] = field(default_factory=set)  # variants proven feasible without an evaluation
    pruned: dict[str, str] = field(default_factory=dict)  # variant -> why it was not fully evaluated
    layerwise: tuple[dict, ...] = ()  # the layerwise method's verification rounds


class SearchMethod:
    """Base of every search method (see the module docstring)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    #: the search() keywords of :data:`OPTIONS` this method takes (others are rejected)
    options: ClassVar[frozenset[str]] = frozenset()
    #: whether the answer can be certified (every cheaper variant evaluated or ruled out)
    certifies: ClassVar[bool] = False
    #: position in listings (help, docs, error messages); ties keep registration order
    rank: ClassVar[int] = 100

    def run(self, ctx: SearchContext) -> Outcome:
        raise NotImplementedError

    @classmethod
    def check_options(cls, given: dict[str, Any], owner: str = "search") -> None:
        """Reject an option this method does not take, in the one error format."""
        from profilers.config import invalid

        for key, value in given.items():
            if key not in cls.options:
                raise invalid(owner, key, f"absent with method {cls.name!r} ({why_not(key)})", value)


def why_not(option: str) -> str:
    """Why a method that does not take ``option`` rejects it (names the methods that take it)."""
    takers = [repr(n) for n, m in registered().items() if option in m.options]
    names = " and ".join([", ".join(takers[:-1]), takers[-1]]) if len(takers) > 1 else "".join(takers) or "no method"
    return OPTIONS.get(option, "{takers} take it").format(takers=names)


METHODS: dict[str, type[SearchMethod]] = {}


def register_method(cls: type[SearchMethod]) -> type[SearchMethod]:
    """Class decorator: list ``cls`` in :data:`METHODS` under ``cls.name``."""
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise TypeError(f"{cls.__name__} needs a class attribute name")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise TypeError(f"a search method named {cls.name!r} is already registered ({METHODS[cls.name].__name__})")
    unknown = set(cls.options) - set(OPTIONS)
    if unknown:
        raise TypeError(f"{cls.__name__}.options has unknown keys {sorted(unknown)}; allowed: {OPTIONS}")
    METHODS[cls.name] = cls
    return cls


def method_names() -> tuple[str, ...]:
    """Names of the registered methods, by ``rank`` (the built-in ones are always registered)."""
    from . import layerwise_search, lazy, optuna_search  # noqa: F401  (their classes register themselves)

    return tuple(sorted(METHODS, key=lambda n: METHODS[n].rank))


def registered() -> dict[str, type[SearchMethod]]:
    """Every registered method by name, in listing order."""
    return {n: METHODS[n] for n in method_names()}


def get_method(name: Any, owner: str = "search", field_name: str = "method") -> type[SearchMethod]:
    from profilers.config import invalid

    names = method_names()
    if not isinstance(name, str) or name not in METHODS:
        raise invalid(owner, field_name, "one of " + ", ".join(map(repr, names)), name)
    return METHODS[name]
