"""The what-if report: ``report.md``, ``serving.csv``, ``training.csv``, ``whatif.png`` and
``whatif.json`` of a ``kind = "whatif"`` job (:func:`optimizer.jobs.run_whatif`), and its HTML for
Jupyter. Rendering only; run.json and the helpers shared with the search report are
:mod:`optimizer.report`'s (which re-exports this module's public names).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from cost_models.render import COMPONENT_TITLES, line_items_table
from profilers.config import to_json_dict
from profilers.render import fmt_num, html_table, markdown_table, to_number, usd

from .durable import atomic_write_text, check_writable
from .report import RUN_SCHEMA, RUN_VERSION, _horizon, _new_ax, _prices_table, _save_fig

__all__ = ["training_table", "whatif_html", "whatif_markdown", "write_whatif_report"]


def _best_rows(rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    best: dict[tuple, dict] = {}
    for r in rows:
        k = tuple(r[x] for x in key)
        if r.get("status") == "ok" and (k not in best
                                        or to_number(r["total_usd"]) < to_number(best[k]["total_usd"])):
            best[k] = r
    return list(best.values())


_PLAN_COLUMNS = ["model", "serve on", "train on", "total", "per component", "note"]
_SERVING_COLUMNS = ["model", "device", "dtype", "batch", "latency ms", "memory GB", "replicas", "total"]


def _plan_rows(res: Any) -> list[list[Any]]:
    """The cheapest plan per model, under :data:`_PLAN_COLUMNS`."""
    rows = []
    for p in res.plans:
        if p["status"] != "ok":
            rows.append([p["model"], "-", "-", "-", "-", p.get("message", p["status"])])
            continue
        comps = p["breakdown"].components
        rows.append([p["model"], f"{p['serve_device']} {p['serve_dtype']} x {p['replicas']} (batch "
                                 f"{p['serve_batch_size']})",
                     f"{p['train_devices']} x {p['train_device']} ({p['train_layout']})" if p.get("train_device")
                     else "no training",
                     usd(p["total_usd"]),
                     ", ".join(f"{COMPONENT_TITLES[c]} {usd(v)}" for c, v in comps.items() if v), ""])
    return rows


def _serving_cells(r: dict) -> list[Any]:
    """One serving option, under :data:`_SERVING_COLUMNS`."""
    return [r["model"], r["device"], r["dtype"], r["batch_size"], fmt_num(to_number(r["latency_s"]) * 1e3, ",.1f"),
            fmt_num(r["peak_memory_gb"], ",.1f"), r["replicas"], usd(r["total_usd"])]


def whatif_markdown(res: Any, job: Any, files: dict[str, str], prices: list[Any] | None = None,
                    environment: dict | None = None) -> str:
    w, sc = job.whatif, job.scenario
    s = sc.serving
    lines = [f"# sigmastar what-if: {job.name}", ""]
    if job.description:
        lines += [job.description, ""]
    lines += [f"Models {', '.join(dict.fromkeys(r['model'] for r in res.serving))} (configs only, no weights) on "
              f"{', '.join(w.device_list())}. Costs are totals over {_horizon(job)} in USD.", ""]
    lines += ["## Cheapest plan per model", ""]
    lines += [markdown_table(_PLAN_COLUMNS, _plan_rows(res), "lllrll"), ""]
    if "plot" in files:
        lines += [f"![cheapest serving per device]({files['plot']})", ""]
    lines += ["## Prompt scoring: the cheapest dtype and batch per device", ""]
    lines.append(f"Prompt scoring: one request = one forward pass over {w.serve_seq_len} tokens (token generation: "
                 f"a kind = \"llm\" job); {s.avg_requests_per_s:g} requests/s "
                 f"on average, {s.peak_rps:g} at peak, latency SLO "
                 f"{'none' if s.latency_slo_s is None else f'{s.latency_slo_s:g} s'}.")
    lines.append("")
    srows = []
    best_s = {(r["model"], r["device"]): r for r in _best_rows(list(res.serving), ("model", "device"))}
    for model in dict.fromkeys(r["model"] for r in res.serving):
        for d in w.device_list():
            r = best_s.get((model, d))
            if r is None:
                why = next((x for x in res.serving if x["model"] == model and x["device"] == d
                            and x["status"] not in ("ok", "unsupported")), None)
                srows.append([model, d, "-", "-", "-", "-", "-", "-", (why or {}).get("message", "unsupported")[:160]])
                continue
            srows.append(_serving_cells(r) + [""])
    lines += [markdown_table(_SERVING_COLUMNS + ["why not"], srows, "lllrrrrrl"), ""]
    trows = [r for r in res.training]
    if trows:
        lines += ["## Training: the cheapest planned layout per device", ""]
        tr = sc.training
        lines.append(f"{tr.samples_per_epoch:,.0f} {tr.unit} per epoch x {tr.epochs:g} epochs per run, "
                     f"{w.global_batch} sequences of {w.train_seq_len} tokens per step, over "
                     f"{', '.join(map(str, w.train_device_counts))} devices.")
        lines += ["", training_table(trows), ""]
    for p in res.plans:
        if p["status"] == "ok":
            br = p["breakdown"]
            lines += [f"### Line items: {p['model']}", ""]
            lines += [line_items_table(br, "markdown", sources=True), ""]
    lines += ["## Assumptions", ""]
    lines += [f"- {n}" for n in res.notes]
    for plan in ("serving", "training", "data", "people", "ownership"):
        d = to_json_dict(getattr(sc, plan))
        lines.append(f"- **{plan}**: " + ", ".join(f"{k} = {v}" for k, v in d.items() if k not in ("type", "version")))
    if prices:
        lines += ["", _prices_table(prices)]
    lines += ["", "## Provenance", ""]
    lines.append("- Parameters and FLOPs: `profilers.analyze` on the meta device (no weights, no execution); "
                 "serving latency: roofline projection onto each device (`profilers.project`: the job's serve_runtime, "
                 "efficiency and per-kernel overhead calibrated against published measurements); "
                 "training step time and memory: `profilers.parallel` (analytic, Korthikanti et al. 2022 activations).")
    ex = next((r for r in res.serving if r.get("provenance")), None)
    if ex:
        lines.append(f"- Example serving figure: {ex['provenance']}")
    ex = next((r for r in res.training if r.get("provenance")), None)
    if ex:
        lines.append(f"- Example training figure: {ex['provenance']}")
    if environment:
        lines.append(f"- Run: sigmastar {environment.get('sigmastar', '?')}, torch {environment.get('torch', '?')}, "
                     f"{res.seconds:.1f} s.")
    lines.append("")
    return "\n".join(lines)


def _plot_whatif(res: Any, job: Any, out: Path) -> dict[str, str]:
    best = {(r["model"], r["device"]): r for r in _best_rows(list(res.serving), ("model", "device"))}
    models = list(dict.fromkeys(r["model"] for r in res.serving))
    devices = job.whatif.device_list()
    if not best:
        return {}
    ax = _new_ax((8, 4))
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        xs = [j + i * width for j in range(len(devices))]
        ys = [to_number(best[(m, d)]["total_usd"]) if (m, d) in best else 0.0 for d in devices]
        ax.bar(xs, ys, width=width, label=m)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(devices))])
    ax.set_xticklabels(devices, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel(f"serving cost over {_horizon(job)} (USD, log)")
    ax.set_title("Cheapest serving per device (missing bar: does not fit or misses the SLO)")
    ax.legend(fontsize=8)
    _save_fig(ax, out / "whatif.png")
    return {"plot": "whatif.png"}


def training_table(rows: Sequence[Mapping]) -> str:
    """The priced training plans (:func:`optimizer.training_price.price_training` rows) as markdown."""
    cols = ["model", "device", "devices", "layout", "step s", "MFU", "GB/device", "GPU-h ideal", "goodput",
            "GPU-h paid", "days/run", "MWh", "rented", "owned", "total", "note"]
    return markdown_table(cols, [[
        r["model"], r["device"], r.get("devices", "-"), r.get("layout", "-"), fmt_num(r.get("step_s"), ".2f"),
        fmt_num(r.get("mfu"), ".0%"), fmt_num(r.get("memory_gb_per_device"), ".1f"),
        fmt_num(r.get("gpu_hours_ideal"), ",.0f"), fmt_num(r.get("goodput"), ".1%"),
        fmt_num(r.get("gpu_hours_paid"), ",.0f"), fmt_num(r.get("wall_days_per_run"), ".1f"),
        fmt_num(r["energy_kwh"] / 1e3 if r.get("energy_kwh") is not None else None, ",.1f"),
        usd(r.get("usd_rented")), usd(r.get("usd_owned")),
        usd(r["total_usd"]), "" if r["status"] == "ok" else r.get("message", "")[:160]] for r in rows],
        "llrlrrrrrrrrrrrl")


def write_whatif_report(res: Any, job: Any, output_dir: str | Path, environment: dict | None = None) -> dict[str, Path]:
    """Write whatif.json, run.json, serving.csv, training.csv, report.md and whatif.png."""
    from .jobs import price_rows_used

    out = check_writable(output_dir)
    atomic_write_text(out / "whatif.json", res.to_json(indent=1))
    prices = price_rows_used(job)
    data = {"type": RUN_SCHEMA, "version": RUN_VERSION, "kind": "whatif",
            "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "job": to_json_dict(job),
            "environment": environment or {}, "prices": [to_json_dict(r) for r in prices]}
    atomic_write_text(out / "run.json", json.dumps(data, indent=1, default=str))
    return _write_whatif(res, job, out, prices, environment)


def _write_whatif(res: Any, job: Any, out: Path, prices: list[Any], environment: dict | None) -> dict[str, Path]:
    import pandas as pd

    for name, rows in (("serving", res.serving), ("training", res.training)):
        atomic_write_text(out / f"{name}.csv", pd.DataFrame([{k: v for k, v in r.items() if k != "provenance"}
                                                            for r in rows]).to_csv(index=False))
    files = _plot_whatif(res, job, out)
    atomic_write_text(out / "report.md", whatif_markdown(res, job, files, prices, environment))
    written = {"whatif": out / "whatif.json", "run": out / "run.json", "serving": out / "serving.csv",
               "training": out / "training.csv", "report": out / "report.md"}
    written.update({k: out / v for k, v in files.items()})
    return written


def whatif_html(res: Any) -> str:
    """HTML for Jupyter: the cheapest plan per model, then the cheapest serving per device."""
    best = sorted(_best_rows(list(res.serving), ("model", "device")),
                  key=lambda r: (r["model"], to_number(r["total_usd"])))
    return (html_table(_PLAN_COLUMNS, _plan_rows(res), "lllrll",
                       caption=f"what-if {res.job_name} ({res.seconds:.1f} s): the cheapest plan per model")
            + html_table(_SERVING_COLUMNS, [_serving_cells(r) for r in best], "lllrrrrr",
                         caption="cheapest serving per device"))
