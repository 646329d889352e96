"""SearchResult and InfeasibleError: what a search returns, and how it is shown.

Computing is in :mod:`optimizer.search`; this module holds the data and renders it: ``repr`` a
short summary, :meth:`SearchResult.to_text` every variant, ``_repr_html_`` for Jupyter, JSON,
pandas, matplotlib plots, and :meth:`SearchResult.report` the run folder the CLI writes
(:mod:`optimizer.report`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profilers.config import SigmastarError, dumps, serializable
from profilers.render import fmt_num, table, usd

from .space import Strategy

__all__ = ["SearchResult", "InfeasibleError", "Trial", "RunSource"]


@dataclass(frozen=True)
class RunSource:
    """What produced a result in this process (not saved with it): the workload, space and cost
    model as the user gave them, the seed, and the output folder (its model cache). Attached by
    :func:`optimizer.search` (``result.source``); None on a result loaded from JSON.

    ``options``: the search's other keyword arguments as it ran with them (``profile_time_cap_s``,
    ``pool``, ``runtime``, ...); one that is absent was not recorded (:meth:`SearchResult.report`
    says so)."""

    workload: Any
    space: Any
    cost_model: Any
    seed: int = 0
    output_dir: Path | None = None
    options: dict = field(default_factory=dict)


@serializable("trial")
@dataclass(frozen=True)
class Trial:
    """One variant as the search saw it."""

    number: int
    variant: str
    label: str
    cost_usd: float  # cheapest feasible deployment (inf: none)
    device: str
    batch_size: int
    quality: float | None  # None: not evaluated, or failed
    state: str  # "feasible", "below target", "no deployment", "failed", "not evaluated", "implied feasible", "pruned"
    error: str = ""


@serializable("search_result")
@dataclass(frozen=True)
class SearchResult:
    """The outcome of :func:`optimizer.search`.

    ``best`` is the cheapest strategy meeting every constraint (None when none does);
    ``baseline`` the unmodified model at its own cheapest deployment; ``pareto`` the strategies
    no other beats on both cost and quality; ``trials`` every variant seen.
    """

    method: str
    #: "optimal", "best found" (a budget stopped it, or the method does not certify), "infeasible",
    #: "incomplete" (failed evaluations or pricings could change the answer: see ``failures``)
    status: str
    message: str
    min_quality: float
    best: Strategy | None
    baseline: Strategy | None
    pareto: tuple[Strategy, ...]
    trials: tuple[Trial, ...]
    quality_evaluations: int
    seconds: float
    certificate: tuple[dict, ...] = ()
    violations: tuple[str, ...] = ()
    closest: tuple[dict, ...] = ()  # when infeasible: the nearest candidates and what each missed
    spend: dict = field(default_factory=dict)  # elapsed_s, and spent_usd with its rate when priced (optimizer.budget)
    layerwise: tuple[dict, ...] = ()  # the layerwise method's solve -> assemble -> measure rounds
    #: False when the workload's metric is minimized (perplexity): the target is a ceiling
    higher_is_better: bool = True
    #: deployments whose cost band overlaps the best's (label, device, batch_size, cost_usd, band_usd)
    rivals: tuple[dict, ...] = ()
    ranking_note: str = ""  # "" when the best is cheapest across the bands too
    #: every variant whose pricing or evaluation failed: variant, label, stage ("pricing" or
    #: "quality"), error, attempts, could_change_answer (cheaper than the best, or its price unknown)
    failures: tuple[dict, ...] = ()

    @property
    def target_op(self) -> str:
        """">=" (quality at least the target) or "<=" (a minimized metric at most the target)."""
        return ">=" if self.higher_is_better else "<="

    def flipped(self) -> "SearchResult":
        """The same result with every quality negated (a minimized metric searched as its negation is
        reported in its own sign); ``higher_is_better`` toggled."""
        from dataclasses import replace

        def q(x: float | None) -> float | None:
            return None if x is None else -x

        def strat(s: Any) -> Any:
            return None if s is None else replace(s, quality=q(s.quality))

        return replace(self, min_quality=-self.min_quality, best=strat(self.best), baseline=strat(self.baseline),
                       pareto=tuple(strat(s) for s in self.pareto),
                       trials=tuple(replace(t, quality=q(t.quality)) for t in self.trials),
                       closest=tuple({**c, "quality": q(c.get("quality")),
                                      "missed": (f"quality {-c['quality']:.4f} > {-self.min_quality:g}"
                                                 if c["missed"].startswith("quality ") and c.get("quality") is not None
                                                 else c["missed"])} for c in self.closest),
                       higher_is_better=not self.higher_is_better)

    # ---- figures ------------------------------------------------------------------------------
    @property
    def savings_usd(self) -> dict[str, float] | None:
        """Baseline minus best, per cost component and in total (positive = saved)."""
        if self.best is None or self.baseline is None or not self.baseline.cost_breakdown:
            return None
        out = {c: self.baseline.cost_breakdown.get(c, 0.0) - self.best.cost_breakdown.get(c, 0.0)
               for c in self.baseline.cost_breakdown}
        out["total"] = self.baseline.cost_usd - self.best.cost_usd
        return out

    def trials_dataframe(self):
        import pandas as pd

        return pd.DataFrame([t.__dict__ for t in self.trials])

    @property
    def source(self) -> RunSource | None:
        """The workload, space and cost model of the search that returned this result (None when
        the result was loaded from JSON)."""
        return self.__dict__.get("_source")

    def with_source(self, source: RunSource) -> "SearchResult":
        """This result, remembering ``source`` (not a field: not compared, not saved)."""
        object.__setattr__(self, "_source", source)
        return self

    # ---- export -------------------------------------------------------------------------------
    def to_json(self, **kw: Any) -> str:
        return dumps(self, **kw)

    def save(self, path: str | Path) -> Path:
        from .durable import atomic_write_text

        return atomic_write_text(path, self.to_json(indent=1))

    def export(self, path: str | Path, **kw: Any) -> Path:
        """Write the chosen model into the folder ``path`` (state_dict, torch.export program where it
        works, manifest.json, README.md on loading it); see :func:`optimizer.export.export_result`,
        which takes ``workload``, ``seed``, ``cache_dir`` and ``workload_spec`` as ``kw``."""
        from .export import export_result

        return export_result(self, path, **kw)

    # ---- rendering ----------------------------------------------------------------------------
    def report(self, output_dir: str | Path) -> dict[str, Path]:
        """Write the run folder ``sigmastar search`` writes into ``output_dir``: report.md (what was
        chosen and why, costs per component, savings, Pareto front, sensitivity, assumptions,
        provenance), trials.csv, pareto.png / components.png / sensitivity.png, results.json and
        run.json (so ``sigmastar report DIR`` renders it again). Returns the paths by name.

        Needs the search that returned this result, in this process (:attr:`source`); what that
        search did not record is reported as "not recorded". See
        :func:`optimizer.report.write_result_report`.
        """
        from .report import write_result_report

        return write_result_report(self, output_dir)

    def __repr__(self) -> str:
        """A few lines: status, best and baseline with cost and quality, savings, counts, what next."""
        op, target = self.target_op, f"{self.min_quality:g}"
        msg = self.message if len(self.message) <= 100 else self.message[:99] + "…"
        lines = [f"SearchResult ({self.method}): {self.status}" + (f": {msg}" if msg else "")]

        def strat(s: Strategy) -> str:
            return (f"{s.label} on {s.device} x{s.replicas}, batch {s.batch_size}: {usd(s.cost_usd)}, "
                    f"quality {fmt_num(s.quality, '.4f')}")

        if self.best is not None:
            lines.append(f"  best      {strat(self.best)} (target {op} {target})")
        else:
            near = self.closest[0] if self.closest else None
            lines.append(f"  best      none meets quality {op} {target}"
                         + (f"; closest {near['label']}: {near['missed']}" if near else ""))
        if self.baseline is not None:
            sv = self.savings_usd
            pct = f" ({sv['total'] / self.baseline.cost_usd:.1%})" if sv and self.baseline.cost_usd else ""
            same = self.best is not None and self.best.variant == self.baseline.variant
            lines.append(f"  baseline  {strat(self.baseline)}" + ("; the best is the unmodified model" if same else
                                                                  f"; saved {usd(sv['total'])}{pct}" if sv else ""))

        def n(count: int, what: str) -> str:
            return f"{count} {what}{'s' if count != 1 else ''}"

        lines.append(f"  searched  {n(len(self.trials), 'variant')}, "
                     f"{n(self.quality_evaluations, 'quality evaluation')}, {n(len(self.failures), 'failure')}, "
                     f"{self.seconds:.1f} s")
        lines.append("  more      .report(dir): report.md and plots; .export(dir): the chosen model; .trials_dataframe(); "
                     ".to_text()")
        return "\n".join(lines)

    def summary_rows(self) -> list[tuple[str, str]]:
        """(field, value) pairs: status, method, target, and the best and baseline strategies."""
        rows = [("status", f"{self.status}: {self.message}"), ("method", self.method),
                ("quality target", f"{self.target_op} {self.min_quality:g}"),
                ("quality evaluations", str(self.quality_evaluations)), ("seconds", f"{self.seconds:.1f}")]
        for name, s in (("best", self.best), ("baseline", self.baseline)):
            if s is not None:
                q = "-" if s.quality is None else f"{fmt_num(s.quality, '.4f')} ({s.quality_source})"
                rows.append((name, f"{s.label} on {s.device} x{s.replicas}, batch {s.batch_size}: "
                                   f"{usd(s.cost_usd)}, quality {q}"))
        sv = self.savings_usd
        if sv:
            rows.append(("savings vs baseline", ", ".join(f"{k} {usd(v)}" for k, v in sv.items())))
        return rows

    def trials_table(self, fmt: str = "text") -> str:
        """Every variant, cheapest first, as a table in ``fmt`` ("text", "markdown" or "html")."""
        rows = [[t.label, usd(t.cost_usd), t.device, t.batch_size, fmt_num(t.quality, ".4f"), t.state, t.error]
                for t in sorted(self.trials, key=lambda t: (t.cost_usd, t.number))]
        return table(["variant", "cost", "device", "batch", "quality", "state", "note"], rows, fmt, align="lrlrrll")

    def to_text(self) -> str:
        """The summary, then every variant (plain text for a terminal)."""
        return table(["field", "value"], self.summary_rows(), header=False) + "\n\n" + self.trials_table()

    def _repr_html_(self) -> str:
        return table(["field", "value"], self.summary_rows(), "html", header=False) + self.trials_table("html")

    def plot_pareto(self, ax=None):
        """Cost vs quality of every evaluated variant; the Pareto front joined; the target dashed."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(6, 4))[1]
        pts = [t for t in self.trials if t.quality is not None and math.isfinite(t.cost_usd)]
        ax.scatter([t.cost_usd for t in pts], [t.quality for t in pts], s=18, alpha=0.6, label="evaluated variants")
        front = sorted(self.pareto, key=lambda s: s.cost_usd)
        ax.plot([s.cost_usd for s in front], [s.quality for s in front], "o-", color="C1", label="Pareto front")
        ax.axhline(self.min_quality, ls="--", color="gray", label="quality target")
        if self.best is not None:
            ax.scatter([self.best.cost_usd], [self.best.quality], marker="*", s=200, color="C3", label="best")
        ax.set_xlabel("total cost (USD)")
        ax.set_ylabel("quality")
        ax.legend(fontsize=8)
        return ax

    def plot_components(self, ax=None):
        """Stacked cost components of the baseline and the best strategy."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(5, 4))[1]
        cols = [(n, s) for n, s in (("baseline", self.baseline), ("best", self.best)) if s is not None and s.cost_breakdown]
        comps = sorted({c for _, s in cols for c in s.cost_breakdown})
        bottom = [0.0] * len(cols)
        for c in comps:
            vals = [s.cost_breakdown.get(c, 0.0) for _, s in cols]
            ax.bar([n for n, _ in cols], vals, bottom=bottom, label=c)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_ylabel("USD over the horizon")
        ax.legend(fontsize=8)
        return ax


class InfeasibleError(SigmastarError):
    """No strategy meets the constraints. ``.result`` holds everything the search found."""

    def __init__(self, result: SearchResult) -> None:
        self.result = result
        stopped = result.status == "best found"  # a budget ended the search before it found one
        if result.status == "incomplete":
            lines = [f"no strategy that could be evaluated meets quality {result.target_op} {result.min_quality:g}, "
                     f"and {result.message}"]
            lines += [f"  {f['stage']} of {f['label']} failed: {f['error']}" for f in result.failures[:5]]
            lines.append("To fix: fix the cause (the traceback of each failed evaluation is in the output folder's "
                         "evaluations.jsonl), then run the same search again: finished evaluations are reused and "
                         "the failed ones retried.")
            super().__init__("\n".join(lines))
            return
        head = "the search stopped before it found a strategy that meets" if stopped else "no strategy meets"
        lines = [f"{head} quality {result.target_op} {result.min_quality:g} with a feasible deployment "
                 f"({result.quality_evaluations} quality evaluations{'; ' + result.message if stopped else ''})."]
        for c in result.closest:
            lines.append(f"  closest: {c['label']}: {c['missed']}")
        lines.append("To fix: " + ("raise the budget (n_trials, max_evaluations, timeout_s, budget_usd) or run the "
                                   "same search again to resume it." if stopped else
                                   "lower min_quality, widen the search space (milder compression, more devices or "
                                   "batch sizes), or relax the scenario's latency SLO."))
        super().__init__("\n".join(lines))
