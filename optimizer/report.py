"""What a run writes, and how it reads back: ``run.json``, ``results.json``, ``trials.csv``,
``report.md`` and PNG plots. Rendering only; the figures come from :mod:`optimizer.jobs`.

A search run folder::

    results.json      SearchResult (type tag "search_result", schema version in "version")
    run.json          the job, the itemized breakdowns, the sensitivity, the prices and technique
                      assumptions used, the environment (type "sigmastar.run", version 1)
    trials.csv        one row per model variant
    report.md         what was chosen and why, costs per component, savings, Pareto front,
                      sensitivity, assumptions, provenance
    pareto.png, components.png, sensitivity.png
    evaluations.jsonl, study.journal, models/   (the search's own journal and caches)

``sigmastar report RUN_DIR`` calls :func:`rerender`, which reads the JSON files back and writes
the rest again. A what-if run writes ``whatif.json`` instead of ``results.json``
(:mod:`optimizer.whatif_report`, whose public names this module re-exports).

A search run from Python writes the same folder with ``SearchResult.report(dir)``
(:func:`write_result_report`): run.json's ``job`` is then a :class:`SearchCall`, what the
``optimizer.search`` call recorded, and the report says "not recorded" for what it did not.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cost_models import PriceBook, Scenario
from cost_models.render import COMPONENT_TITLES, line_items_table, sensitivity_table
from profilers.config import ConfigError, from_json_dict, serializable, to_json_dict
from profilers.render import fmt_num, markdown_table, usd

from .durable import atomic_write_bytes, atomic_write_text, check_writable
from .space import SearchSpace

__all__ = ["RUN_SCHEMA", "RUN_VERSION", "SearchCall", "write_search_report", "write_result_report",
           "write_whatif_report", "save_run", "load_run", "rerender", "search_markdown", "whatif_markdown",
           "whatif_html", "training_table"]

#: the what-if report's names, re-exported from :mod:`optimizer.whatif_report` (imported on first use)
_WHATIF = ("write_whatif_report", "whatif_markdown", "whatif_html", "training_table")


def __getattr__(name: str) -> Any:
    if name in _WHATIF:
        from . import whatif_report

        return getattr(whatif_report, name)
    raise AttributeError(f"module 'optimizer.report' has no attribute {name!r}")


RUN_SCHEMA = "sigmastar.run"
RUN_VERSION = 1


# ----------------------------------------------------------------------------------------------
# small formatting helpers
# ----------------------------------------------------------------------------------------------
def _horizon(job: Any) -> str:
    return f"{job.scenario.serving.horizon_months:g} months"


def _prices_table(prices: list[Any], overrides: set = frozenset()) -> str:
    """The price rows a run read, as Markdown (a job's own rows marked)."""
    return markdown_table(["kind", "item", "tier", "provider", "USD per unit", "unit", "date", "source"],
                          [[r.kind, r.item, r.tier or "-", r.provider or "-", fmt_num(r.usd_per_unit), r.unit, r.date,
                            ("**job override**: " if r.key in overrides else "") + r.source] for r in prices],
                          "llllrlll")


def _save_fig(ax: Any, path: Path) -> Path:
    import io

    fig = ax.figure
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    return atomic_write_bytes(path, buf.getvalue())


def _new_ax(size: tuple[float, float]):
    """An Axes on a figure outside pyplot: no GUI backend, nothing left open."""
    from matplotlib.figure import Figure

    return Figure(figsize=size).subplots()


# ----------------------------------------------------------------------------------------------
# run.json: everything the report needs besides results.json
# ----------------------------------------------------------------------------------------------
def _sens_to_dict(s: Any) -> dict | None:
    if s is None:
        return None
    return {"base_total_usd": s.base_total_usd, "delta": s.delta,
            "rows": [{"knob": r.knob, "base_value": r.base_value, "low_value": r.low_value,
                      "high_value": r.high_value, "total_low_usd": r.total_low_usd,
                      "total_high_usd": r.total_high_usd} for r in s.rows]}


def _sens_from_dict(d: dict | None) -> Any:
    if not d:
        return None
    from cost_models.analysis import SensitivityResult, TornadoRow

    return SensitivityResult(float(d["base_total_usd"]), float(d["delta"]),
                             tuple(TornadoRow(**{k: (v if k == "knob" else float(v)) for k, v in r.items()})
                                   for r in d["rows"]))


def save_run(run: Any, path: str | Path) -> Path:
    """``run.json`` of a :class:`optimizer.jobs.SearchRun`."""
    from cost_models import technique_defaults

    from .jobs import price_rows_used

    job = run.job
    techs = sorted({t for v in job.space.variants() for t in job.space.cost_keys(v)})
    defaults = technique_defaults()
    data = {
        "type": RUN_SCHEMA, "version": RUN_VERSION, "kind": "search",
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "job": to_json_dict(job), "quality_metric": run.quality_metric,
        "evaluations_before": run.evaluations_before, "evaluations_after": run.evaluations_after,
        "seconds": run.seconds, "environment": run.environment,
        "breakdowns": {k: to_json_dict(v) for k, v in run.breakdowns.items()},
        "sensitivity": _sens_to_dict(run.sensitivity), "sensitivity_note": run.sensitivity_note,
        "prices": [to_json_dict(r) for r in price_rows_used(job)],
        "techniques": [{"name": t, "engineer_hours": job.scenario.engineer_hours(t),
                        "maintenance_hours_per_month": job.scenario.maintenance_hours_per_month(t),
                        "training_epochs": job.scenario.technique_epochs(t),
                        "source": defaults[t].source if t in defaults else "user"} for t in techs],
    }
    return atomic_write_text(path, json.dumps(data, indent=1, default=str))


@serializable("search_call")
@dataclass(frozen=True)
class SearchCall:
    """A Python-API search as its report reads it: what ``optimizer.search(...)`` was given, under
    the names of :class:`optimizer.jobs.Job` (the CLI's record), built from ``result.source`` by
    :func:`write_result_report` and kept as run.json's ``job``. ``book`` is the cost model's price
    book; ``output`` the search's output folder ("" without one). A field that is None was not
    recorded by the search, and the report says so."""

    name: str
    workload: str  # the workload's name (a Python object, not a job file's spec)
    space: SearchSpace
    scenario: Scenario
    book: PriceBook
    method: str
    seed: int
    output: str = ""
    profile_time_cap_s: float | None = None
    pool: bool | None = None
    runtime: str | None = None
    kind: str = "search"
    description: str = ""
    price_file = None  # a Python call has no price file (not a field)

    @property
    def price_rows(self) -> tuple[Any, ...]:
        """The book's rows that the shipped book does not hold (the user's own prices)."""
        shipped = set(PriceBook.default().rows)
        return tuple(r for r in self.book.rows if r not in shipped)

    def prices(self) -> PriceBook:
        return self.book


def _journal(job: Any) -> str | None:
    """Where the search journaled its evaluations, as the report names it (None: nowhere)."""
    if not isinstance(job, SearchCall):
        return "`evaluations.jsonl`"
    return f"`{Path(job.output) / 'evaluations.jsonl'}`" if job.output else None


def _register_types() -> None:
    """Import the modules whose types run.json, results.json and whatif.json name (type tags)."""
    import cost_models  # noqa: F401
    import profilers.techniques  # noqa: F401

    from . import jobs, result, space  # noqa: F401


def load_run(run_dir: str | Path) -> dict:
    """``run.json`` of a run folder, checked (type and version), with the job decoded."""
    p = Path(run_dir) / "run.json"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"report.run_dir must be a run folder (written by sigmastar search or whatif); "
                          f"got {str(run_dir)!r} (no such folder).")
    if not p.is_file():
        raise ConfigError(f"report.run_dir must be a run folder holding run.json; got {str(run_dir)!r} "
                          f"(no run.json: the run did not finish, or this is not a run folder).")
    data = json.loads(p.read_text())
    if data.get("type") != RUN_SCHEMA:
        raise ConfigError(f"run.json.type must be {RUN_SCHEMA!r}; got {data.get('type')!r}.")
    if data.get("version") != RUN_VERSION:
        raise ConfigError(f"run.json.version must be {RUN_VERSION} (this release reads version {RUN_VERSION}); "
                          f"got {data.get('version')!r}.")
    _register_types()
    data["job"] = from_json_dict(data["job"])
    data["breakdowns"] = {k: from_json_dict(v) for k, v in data.get("breakdowns", {}).items()}
    data["prices"] = [from_json_dict(r) for r in data.get("prices", [])]
    data["sensitivity"] = _sens_from_dict(data.get("sensitivity"))
    return data


# ----------------------------------------------------------------------------------------------
# the search report
# ----------------------------------------------------------------------------------------------
def _why_rows(result: Any) -> list[list[Any]]:
    """Variants cheaper than the answer, and why each was not chosen."""
    if result.best is None:
        return []
    implied = {}
    for c in result.certificate:
        for k in c.get("ruled_out", []):
            implied[k] = (f"ruled out by {c['evaluated']} (quality {fmt_num(c.get('quality'), '.4f')} < target, "
                          "and this variant is at least as compressed)") if not c.get("feasible") else \
                f"ruled out by {c['evaluated']} (it meets the target for less)"
    rows = []
    for t in sorted(result.trials, key=lambda t: t.cost_usd):
        if t.cost_usd >= result.best.cost_usd:
            break
        if t.state == "below target":
            why = f"measured quality {fmt_num(t.quality, '.4f')} < {result.min_quality:g}"
        elif t.state in ("failed", "no deployment"):
            why = t.error or "no (device, batch) meets the SLO and memory"
        elif t.variant in implied:
            why = implied[t.variant]
        elif t.state == "pruned":
            why = f"pruned: {t.error}"
        else:
            why = t.state
        rows.append([t.label, usd(t.cost_usd), t.device, why])
    return rows


def search_markdown(result: Any, run: dict, files: dict[str, str]) -> str:
    """The report as Markdown. ``run``: :func:`load_run`'s dict (or the same built in memory)."""
    job = run["job"]
    sc = job.scenario
    best, base = result.best, result.baseline
    journal = _journal(job)
    lines = [f"# sigmastar search: {job.name}", ""]
    if job.description:
        lines += [job.description, ""]
    lines += [f"Workload `{job.workload}`, quality = {run.get('quality_metric', 'quality')}; target {result.target_op} "
              f"{result.min_quality:g}. Costs are totals over the scenario's horizon ({_horizon(job)}), in USD.", ""]

    # ---- the answer
    lines.append("## Answer")
    lines.append("")
    if result.failures:
        n_open = sum(1 for f in result.failures if f["could_change_answer"])
        head = (f"**Incomplete: {n_open} failed variant{'s' if n_open != 1 else ''} could change the answer.** The "
                "answer below is the best among the variants that could be priced and evaluated, not certified. "
                if n_open else "Failed variants (none could change the answer: each is dearer than the best). ")
        lines += [head + (f"Each failure is retried when the same search runs again (`search.retries`); tracebacks "
                          f"are in {journal}." if journal else "The search ran without an output folder: nothing was "
                          "journaled, so nothing is retried."), "",
                  markdown_table(["variant", "stage", "attempts", "could change the answer", "error"],
                                 [[f["label"], f["stage"], f["attempts"], "yes" if f["could_change_answer"] else "no",
                                   f["error"][:200]] for f in result.failures]), ""]
    if best is None:
        lines.append(f"**No strategy meets the constraints** ({result.status}: {result.message}).")
        if result.closest:
            lines += ["", markdown_table(["closest candidate", "quality", "cost", "what it missed"],
                                         [[c["label"], fmt_num(c.get("quality"), ".4f"), usd(c.get("cost_usd")),
                                           c["missed"]] for c in result.closest])]
        lines += ["", "To fix: lower min_quality, widen the search space (milder compression, more devices or batch "
                  "sizes), or relax the scenario's latency SLO.", ""]
    else:
        lines.append(f"**{best.label}**, served on **{best.device} x {best.replicas}** at batch {best.batch_size}: "
                     f"**{usd(best.cost_usd)}**, quality {fmt_num(best.quality, '.4f')} ({best.quality_source}).")
        if best.cost_band_usd is not None:
            lines += ["", f"80 % band of the total from the projected device times' calibration: "
                      f"{usd(best.cost_band_usd[0])} - {usd(best.cost_band_usd[1])}."]
        if result.ranking_note:
            lines += ["", f"**{result.ranking_note[0].upper()}{result.ranking_note[1:]}**"]
            lines += ["", markdown_table(["overlapping deployment", "device", "batch", "cost", "80 % band"],
                                         [[r["label"], r["device"], r["batch_size"], usd(r["cost_usd"]),
                                           f"{usd(r['band_usd'][0])} - {usd(r['band_usd'][1])}"]
                                          for r in result.rivals[:10]])]
        sv = result.savings_usd
        if base is not None and best.variant == base.variant:
            if _why_rows(result):
                lines += ["", "The unmodified model is itself the cheapest strategy that qualifies: every cheaper "
                          "variant misses the quality target or has no feasible deployment (see below)."]
            else:
                lines += ["", "The unmodified model is itself the cheapest strategy: under this scenario no technique "
                          "in the space saves more than it costs (engineer hours, extra training, data)."]
        elif base is not None and sv is not None:
            pct = sv["total"] / base.cost_usd * 100 if base.cost_usd else 0.0
            lines.append("")
            lines.append(f"Against the baseline ({base.label} on {base.device} x {base.replicas}, batch "
                         f"{base.batch_size}: {usd(base.cost_usd)}, quality {fmt_num(base.quality, '.4f')}) it saves "
                         f"**{usd(sv['total'])} ({pct:.1f} %)**.")
        lines += ["", f"Search status: **{result.status}**: {result.message}", ""]

    # ---- why
    lines += ["## What was chosen and why", ""]
    lines.append(f"The objective is the total cost C_hardware + C_train&deploy + C_data + C_human of each model "
                 f"variant at its cheapest feasible deployment (device and batch size from job.space; replicas "
                 f"sized for the peak traffic within the latency SLO), subject to quality {result.target_op} {result.min_quality:g}. "
                 f"Method `{result.method}`: {result.quality_evaluations} quality evaluation"
                 f"{'s' if result.quality_evaluations != 1 else ''} of {len(result.trials)} variants in "
                 f"{result.seconds:.1f} s.")
    spend = getattr(result, "spend", None) or {}
    if "spent_usd" in spend:
        cap = f" of a ${spend['budget_usd']:,.2f} budget" if "budget_usd" in spend else ""
        lines.append(f"The search itself cost ${spend['spent_usd']:,.4f}{cap} ({spend['rate_source']}).")
    if result.status == "best found" and result.message:
        lines.append(f"The answer is not certified optimal: {result.message.rstrip('.')}.")
    pruned = sum(1 for t in result.trials if t.state == "pruned")
    if pruned:
        lines.append(f"{pruned} variant{'s were' if pruned != 1 else ' was'} pruned before a full evaluation "
                     "(a low-fidelity rung fell short, or its cost could not beat the best feasible so far).")
    if run.get("evaluations_before"):
        lines.append(f"Resumed: {run['evaluations_before']} evaluations were already journaled in this folder and "
                     f"reused; {max(0, run['evaluations_after'] - run['evaluations_before'])} ran in this session.")
    lines.append("")
    why = _why_rows(result)
    if best is not None:
        if why:
            lines += ["Every cheaper variant, and why it was not chosen:", "",
                      markdown_table(["variant", "cost", "device", "why not"], why), ""]
        else:
            lines += ["No variant is cheaper than the answer.", ""]
    if result.certificate:
        lines += ["Certificate of the lazy search: each evaluation and what it settled. One below the target rules "
                  "out every variant at least as compressed; one that meets it rules out every dearer variant and "
                  "proves every less compressed one feasible (quality is assumed not to rise with compression; "
                  "violations seen are listed below).", "",
                  markdown_table(["evaluated", "quality", "meets target", "variants ruled out", "proven feasible"],
                                 [[c["evaluated"], fmt_num(c.get("quality"), ".4f"),
                                   "yes" if c.get("feasible") else "no", len(c.get("ruled_out", [])),
                                   len(c.get("proven_feasible", []))] for c in result.certificate]), ""]
    if result.layerwise:
        lines += ["Layer-wise rounds: each solves the ILP (fewest deployed bytes with the summed per-layer "
                  "sensitivities within base - target), assembles that model and measures it; a round that misses "
                  "the target tightens the cap for the next.", "",
                  markdown_table(["round", "sensitivity cap", "solve", "layers changed", "predicted quality",
                                  "measured quality", "measured bytes"],
                                 [[r["round"], fmt_num(r.get("sensitivity_cap"), ".4g"), r["solve"],
                                   sum(1 for c in r.get("assignment", {}).values() if c != "fp32"),
                                   fmt_num(r.get("predicted_quality"), ".4f"), fmt_num(r.get("measured_quality"), ".4f"),
                                   fmt_num(r.get("measured_bytes"), ",.0f")] for r in result.layerwise], "rrlrrrr"), ""]
    if best is not None and best.pool:
        lines += [f"Serving on a pool of device types ({best.device}) saves **{usd(best.pool_saving_usd)}** against "
                  "the best single device type: integer replicas of one type leave capacity idle that a smaller "
                  "device fills (plan_fleet, an exact ILP over the price book's rates and each device's projected "
                  "throughput at its cheapest SLO-meeting batch).", "",
                  markdown_table(["device", "devices"], [[d, n] for d, n in sorted(best.pool.items())], "lr"), ""]
    if result.violations:
        lines += ["Monotonicity violations seen (quality rose with more compression):", ""]
        lines += [f"- {v}" for v in result.violations] + [""]

    # ---- costs per component
    lines += ["## Cost breakdown per component", ""]
    comps = ["hardware", "train_deploy", "data", "human"]
    if best is not None:
        sv = result.savings_usd or {}
        rows = []
        for c in comps:
            rows.append([COMPONENT_TITLES[c], usd(base.cost_breakdown.get(c)) if base else "-",
                         usd(best.cost_breakdown.get(c)), usd(sv.get(c)) if sv else "-"])
        rows.append(["**total**", usd(base.cost_usd) if base else "-", usd(best.cost_usd),
                     usd(sv.get("total")) if sv else "-"])
        lines += [markdown_table(["component", "baseline", "chosen", "saved (baseline - chosen)"], rows, "lrrr"), ""]
        if "components" in files:
            lines += [f"![cost components]({files['components']})", ""]
        if not run.get("breakdowns"):
            lines += [f"Line items: not computed: {run.get('sensitivity_note') or 're-pricing failed'}.", ""]
    for name in ("best", "baseline"):
        br = run.get("breakdowns", {}).get(name)
        if br is None:
            continue
        strat = best if name == "best" else base
        title = "chosen strategy" if name == "best" else "baseline"
        lines += [f"### Line items of the {title}", ""]
        single = strat.cost_usd + strat.pool_saving_usd if strat is not None else None  # one device type
        if strat is not None and strat.pool:
            lines += [f"(On one device type, {br.serve_device}; the pool of device types replaces its serving compute "
                      f"and saves {usd(strat.pool_saving_usd)}, see above.)", ""]
        if strat is not None and abs(br.total_usd - single) > 1e-6 * max(1.0, single):
            lines += [f"(Re-priced after the search from a new measurement on this machine: {usd(br.total_usd)} "
                      f"here against {usd(single)} in the search.)", ""]
        lines += [line_items_table(br, "markdown", formulas=True, sources=True), ""]
        if br.replicas:
            lines += [f"Replicas: {br.replicas}; training runs: {br.training_runs}; per 1,000 requests: "
                      f"{usd(br.usd_per_1000_requests)}.", ""]

    # ---- Pareto front
    lines += ["## Pareto front (cost vs quality)", ""]
    if result.pareto:
        lines += [markdown_table(["variant", "cost", "quality", "device", "replicas", "batch"],
                                 [[s.label, usd(s.cost_usd), fmt_num(s.quality, ".4f"), s.device, s.replicas,
                                   s.batch_size] for s in sorted(result.pareto, key=lambda s: s.cost_usd)], "lrrlrr"),
                  ""]
        lines += ["Only variants whose quality was measured can be on the front; a lazy search measures few of "
                  "them by design.", ""]
    else:
        lines += ["No variant has both a feasible deployment and a measured quality.", ""]
    if "pareto" in files:
        lines += [f"![Pareto front]({files['pareto']})", ""]

    # ---- sensitivity
    lines += ["## Sensitivity of the chosen strategy", ""]
    sens = run.get("sensitivity")
    if sens is not None and sens.rows:
        lines.append(f"Each input moved -{sens.delta:.0%} and +{sens.delta:.0%} with everything else fixed "
                     f"(same device and batch size; replicas re-derived), total {usd(sens.base_total_usd)} at the nominal "
                     "inputs (cost_models.sensitivity); widest swing first.")
        lines += ["", sensitivity_table(sens, "markdown", top=12, title=False), ""]
        if "sensitivity" in files:
            lines += [f"![sensitivity]({files['sensitivity']})", ""]
    else:
        lines += [f"Not computed: {run.get('sensitivity_note') or 'no feasible strategy'}.", ""]

    # ---- all variants
    lines += ["## Every variant", ""]
    lines += [result.trials_table("markdown"), ""]

    # ---- assumptions
    lines += ["## Assumptions", "", "### Scenario", ""]
    for plan in ("serving", "training", "data", "people", "ownership"):
        d = to_json_dict(getattr(sc, plan))
        kv = ", ".join(f"{k} = {v}" for k, v in d.items() if k not in ("type", "version"))
        lines.append(f"- **{plan}**: {kv}")
    lines += ["", "### Prices", ""]
    overrides = {r.key for r in job.price_rows}
    lines += [_prices_table(run.get("prices", []), overrides), ""]
    if job.price_file:
        lines += [f"Price file merged over the shipped book: `{job.price_file}`.", ""]
    if run.get("techniques"):
        lines += ["### Technique effort (assumptions unless the job overrides them)", ""]
        lines += [markdown_table(["technique", "engineer hours", "maintenance h/month", "extra training epochs",
                                  "source"],
                                 [[t["name"], f"{t['engineer_hours']:g}", f"{t['maintenance_hours_per_month']:g}",
                                   f"{t['training_epochs']:g}", t["source"]] for t in run["techniques"]], "lrrrl"), ""]
    sp = job.space
    lines += ["### Search space", "",
              f"- distill_width {list(sp.distill_width)}, prune_amount {list(sp.prune_amount)} ({sp.prune_method}, "
              f"{sp.finetune_steps} fine-tuning steps), quantize {list(sp.quantize)}, distill_steps {sp.distill_steps}",
              f"- devices {list(sp.devices)}, serving batch sizes {list(sp.batch_sizes)}",
              f"- method {job.method}, seed {job.seed}, profile time cap "
              + ("not recorded" if job.profile_time_cap_s is None else f"{job.profile_time_cap_s:g} s"), ""]

    # ---- provenance
    env = run.get("environment", {})
    lines += ["## Provenance", ""]
    lines.append(f"- **Quality**: measured ({run.get('quality_metric', 'quality')}) on this machine ({env.get('host', '?')}), "
                 f"torch {env.get('torch', '?')}; "
                 + (f"each evaluation is journaled in {journal}" if journal else "the search journaled nothing (no "
                    "output folder)") + "; a variant marked "
                 "\"implied feasible\" was not measured (a measured, more compressed variant met the target).")
    for name, s in (("chosen strategy", best), ("baseline", base)):
        if s is None:
            continue
        lines.append(f"- **Cost figures of the {name}**:")
        seen: set[str] = set()
        for p in s.provenance:
            core = p.split(": ", 1)[1] if p.startswith(("serving figures: ", "training figures: ")) else p
            if p.startswith("training figures: ") and core in seen:
                lines.append("  - training figures: the same projection")
                continue
            if core in seen:
                continue
            seen.add(core)
            lines.append(f"  - {p}")
    lines.append("- **Prices**: each line item names its price row (source and date) above; every row of the book is "
                 "in `cost_models/data/*.toml` with its source.")
    lines.append(f"- **Run**: sigmastar {env.get('sigmastar', '?')}, Python {env.get('python', '?')}, "
                 f"{env.get('platform', '?')}; written {run.get('written', '?')}.")
    if isinstance(job, SearchCall):  # written by SearchResult.report: the search's own files are where it ran
        theirs = (f"; the search's journals and caches are in `{job.output}`" if job.output else
                  "; the search ran without an output folder")
    else:
        theirs = ", `evaluations.jsonl`" + (", `study.journal`" if job.method in ("tpe", "random", "nsga2")
                                           and not job.storage else "")
    lines.append(f"- **Files**: `results.json` (SearchResult, schema \"search_result\" version "
                 f"{type(result)._json_version}), `run.json` (schema \"{RUN_SCHEMA}\" version {RUN_VERSION}), "
                 f"`trials.csv`{theirs}.")
    lines.append("")
    return "\n".join(lines)


def _plots_search(result: Any, run: dict, out: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    if any(t.quality is not None and math.isfinite(t.cost_usd) for t in result.trials):
        ax = _new_ax((6, 4))
        result.plot_pareto(ax=ax)
        ax.set_title("Cost vs quality of the evaluated variants")
        _save_fig(ax, out / "pareto.png")
        files["pareto"] = "pareto.png"
    if result.best is not None or result.baseline is not None:
        ax = _new_ax((5, 4))
        result.plot_components(ax=ax)
        ax.set_title("Cost per component")
        _save_fig(ax, out / "components.png")
        files["components"] = "components.png"
    sens = run.get("sensitivity")
    if sens is not None and sens.rows:
        from cost_models import tornado_plot

        n = min(12, len(sens.rows))
        ax = _new_ax((7, 0.4 * max(3, n) + 1))
        tornado_plot(sens, ax=ax, top=12)
        _save_fig(ax, out / "sensitivity.png")
        files["sensitivity"] = "sensitivity.png"
    return files


def _write_search(result: Any, run: dict, out: Path) -> dict[str, Path]:
    atomic_write_text(out / "trials.csv", result.trials_dataframe().to_csv(index=False))
    files = _plots_search(result, run, out)
    atomic_write_text(out / "report.md", search_markdown(result, run, files))
    written = {"results": out / "results.json", "run": out / "run.json", "trials": out / "trials.csv",
               "report": out / "report.md"}
    written.update({k: out / v for k, v in files.items()})
    return written


def write_search_report(run: Any, output_dir: str | Path | None = None) -> dict[str, Path]:
    """Write results.json, run.json, trials.csv, report.md and the plots of a SearchRun."""
    out = check_writable(output_dir if output_dir is not None else run.output_dir)
    run.result.save(out / "results.json")
    save_run(run, out / "run.json")
    return _write_search(run.result, load_run(out), out)


#: the search options re-pricing needs (:func:`optimizer.jobs.analyze_best`)
_PRICING_OPTIONS = ("profile_time_cap_s", "pool", "runtime")


def write_result_report(result: Any, output_dir: str | Path) -> dict[str, Path]:
    """``SearchResult.report``: the files :func:`write_search_report` writes for a job, for a result
    of ``optimizer.search`` in this process, from what its search recorded (``result.source``).

    The line items and the sensitivity of the chosen strategy need it priced again with the
    search's own options (:data:`_PRICING_OPTIONS`); when the search did not record them the report
    says so instead. Quality evaluations are not run again.
    """
    from .jobs import SearchRun, analyze_best, environment

    src = result.source
    if src is None:
        raise ConfigError("SearchResult.source must be the search that returned this result (it is kept in the "
                          "process that ran it); got None (a result read from JSON: render its run folder with "
                          "`sigmastar report DIR`).")
    opts = dict(src.options)
    call = SearchCall(name=src.workload.name, workload=src.workload.name, space=src.space,
                      scenario=src.cost_model.scenario, book=src.cost_model.prices, method=result.method,
                      seed=src.seed, output=str(src.output_dir) if src.output_dir is not None else "",
                      **{k: opts.get(k) for k in _PRICING_OPTIONS})
    out = check_writable(output_dir)
    missing = [k for k in _PRICING_OPTIONS if opts.get(k) is None]
    if missing:
        were = "was" if len(missing) == 1 else "were"
        breakdowns, sens, note = {}, None, (f"the search's {', '.join(missing)} {were} not recorded (re-pricing the "
                                            "chosen strategy line by line needs them)")
    else:
        breakdowns, sens, note = analyze_best(call, src.workload, src.cost_model, result, None, src.output_dir)
    run = SearchRun(job=call, output_dir=out, result=result, quality_metric=src.workload.quality_metric or "quality",
                    evaluations_before=None, evaluations_after=None, seconds=result.seconds, breakdowns=breakdowns,
                    sensitivity=sens, sensitivity_note=note, environment=environment())
    return write_search_report(run, out)


# ----------------------------------------------------------------------------------------------
# sigmastar report RUN_DIR
# ----------------------------------------------------------------------------------------------
def rerender(run_dir: str | Path) -> dict[str, Path]:
    """Read a run folder's JSON files back and write its report, CSV files and plots again."""
    from profilers.config import loads

    out = Path(run_dir)
    run = load_run(out)
    if run.get("kind") == "whatif":
        p = out / "whatif.json"
        if not p.is_file():
            raise ConfigError(f"report.run_dir must hold whatif.json for a what-if run; got {str(run_dir)!r}.")
        res = loads(p.read_text())
        from .whatif_report import _write_whatif

        return _write_whatif(res, run["job"], out, run.get("prices", []), run.get("environment"))
    p = out / "results.json"
    if not p.is_file():
        raise ConfigError(f"report.run_dir must hold results.json; got {str(run_dir)!r} (the search did not finish).")
    return _write_search(loads(p.read_text()), run, out)
