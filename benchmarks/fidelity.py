"""Projection fidelity: predicted vs published measured figures, validated out of sample.

    HF_HUB_OFFLINE=1 python benchmarks/fidelity.py [--rebuild] [--out benchmarks/results/fidelity.md]

Reads the calibration (``profilers/data/calibration.json``: the published rows the projection can
express, the op records of each row's model, the fit; ``--rebuild`` first re-runs
``python -m profilers.calibration``) and, for every row, compares with the published time of one
batch (a throughput row's time is batch / throughput):

* **before**: the projection as sigmastar priced before the runtime model and the calibration
  (every op a kernel, no launch overhead, efficiency 0.5 for every GPU);
* **fit**: the shipped fit (in sample: the row informed it);
* **LOO**: a fit on every *other* row (leave-one-out);
* **LODO**: a fit on the rows of every *other device* (leave-one-device-out: what a device without
  rows of its own gets).

Error = predicted / published - 1. Writes its section of benchmarks/RESULTS.md (then run
assemble_results.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profilers import calibration as cal  # noqa: E402
from profilers.projection import DEFAULT_EFFICIENCY, kernel_time  # noqa: E402


def _stats(errs: list[float | None]) -> str:
    st = cal.abs_error_stats(errs)
    return "- | -" if st is None else f"{st[0]:.0%} | {st[1]:.0%}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rebuild", action="store_true", help="re-run python -m profilers.calibration first")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fidelity.md"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.rebuild:
        cal.build()
    path = ROOT / "profilers" / "data" / cal.DATA
    d = json.loads(path.read_text())
    specs = cal.calibration_specs()
    fit = cal.Fit.from_json(d["fit"])
    loo, lodo = d["validation"]["loo_s"], d["validation"]["lodo_s"]
    rows = []
    for r in d["rows"]:
        ks = cal.row_kernels(r, cal.row_ops(d, r), specs)
        t = r["t_published_s"]
        before = None  # an LLM row: nothing priced token generation before profilers.llm
        if "llm" not in r:
            eager = cal.row_kernels(dict(r, runtime="eager"), cal.row_ops(d, r), specs)
            before = kernel_time(eager, dict.fromkeys(cal.CLASSES, DEFAULT_EFFICIENCY), 0.0) / t - 1
        rows.append(dict(r, before=before, fit=cal.predict(fit, r, ks) / t - 1,
                         loo=loo[str(r["id"])] / t - 1, lodo=lodo[str(r["id"])] / t - 1))
    meta = d["meta"]
    lines = ["## Projection fidelity (predicted vs published measurements)", "",
             "Command: `HF_HUB_OFFLINE=1 python benchmarks/fidelity.py` (reads profilers/data/calibration.json, "
             f"built by `{meta['command']}` on {meta['date']}, torch {meta['torch']}, transformers "
             f"{meta['transformers']}); ran in {time.perf_counter() - t0:.0f} s.", "",
             f"{meta['rows']} of {meta['published_rows']} published rows (profilers/data/published_measurements.csv) "
             "can be projected today. Each row's model is analyzed at the row's batch and sequence length, every op "
             "cast to the row's precision (LLM rows: profilers.llm's prefill and decode kernels for the row's format "
             "and tensor-parallel degree), and priced as `sum over kernels of calls x max(roofline / e[device, op "
             "class, runtime], o[device, runtime])` (profilers/calibration.py). *before*: every op a kernel, no "
             "overhead, e = 0.5 (what sigmastar priced before this calibration; LLM rows had no token model then); "
             "*fit*: in sample; *LOO*: a fit without the row; *LODO*: a fit without any row of the row's device. "
             "Error = predicted / published - 1 on the row's time (one batch; a tokens/s row: its batch's output "
             "tokens).", "",
             "| category | runtime | rows | before: median abs err | before: p90 | LOO: median | LOO: p90 | "
             "LODO: median | LODO: p90 |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    groups = sorted({(r["category"], r["runtime"]) for r in rows})
    for cat, rt in groups + [("all", "all")]:
        g = [r for r in rows if cat == "all" or (r["category"], r["runtime"]) == (cat, rt)]
        lines.append(f"| {cat} | {rt} | {len(g)} | {_stats([r['before'] for r in g])} | "
                     f"{_stats([r['loo'] for r in g])} | {_stats([r['lodo'] for r in g])} |")
    ov = ", ".join(f"{k} {v * 1e6:.3g} us (prior {d['overhead_prior'][k]['value_us']:g} us)"
                   for k, v in fit.overhead_s.items())
    bands = "; ".join(f"{which}: " + ", ".join(f"{rt} x{lo:.2f} - x{hi:.2f}" for rt, (lo, hi) in b.items())
                      for which, b in d["bands"].items())
    lines += ["", "Targets (issue 12): LOO median |error| <= 10 %, 90th percentile <= 25 %.", "",
              f"Fitted per-kernel overheads: {ov}. 80 % bands (published / predicted, 10th-90th percentile): "
              f"{bands}.", "",
              "Rows not projected yet: " + "; ".join(f"{k}: {v}" for k, v in sorted(meta["skipped"].items())) + ".",
              "", "| csv line | device | model | precision | batch | seq | runtime | published (ms per batch) | "
              "before | fit | LOO | LODO | source |", "|---:|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: (r["category"], r["device"], r["model"], r["precision"], r["batch"],
                                          r["seq"] or 0)):
        lines.append(f"| {r['id']} | {r['device']} | {r['model']} | {r['precision']} | {r['batch']} | "
                     f"{r['seq'] or ''} | {r['runtime']} | {r['t_published_s'] * 1e3:.4g} | {_pct(r['before'])} | "
                     f"{_pct(r['fit'])} | {_pct(r['loo'])} | {_pct(r['lodo'])} | {r['source'].split(' ')[0]} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print("\n".join(lines[:20]))


if __name__ == "__main__":
    main()
