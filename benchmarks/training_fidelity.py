"""Training fidelity: the parallel model against published training runs, held out.

    python benchmarks/training_fidelity.py            # print
    python benchmarks/training_fidelity.py --write    # write results/training.md (then assemble_results.py)
    python benchmarks/training_fidelity.py --refit    # refit profilers/data/training_calibration.json first

Reads the shipped training calibration (``python -m profilers.parallel.calibration`` writes it):
every throughput row of ``profilers/data/training_runs.csv`` predicted by a 10-fold
cross-validation fit that did not see it, with its published layout; the whole-run GPU-hours rows
(never fitted) predicted from ``plan()``'s fastest layout. Whole-run GPU-hours are compared as paid
hours (ideal / goodput, :func:`cost_models.scenario.goodput` with TrainingPlan's sourced defaults)
and, for reference, as ideal hours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from importlib import resources
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "training.md"
COMMAND = "python benchmarks/training_fidelity.py --write"
TARGETS = {"megatron": 0.05, "fsdp": 0.10, "gpu-hours": 0.10}


def _load() -> dict:
    return json.loads(resources.files("profilers").joinpath("data", "training_calibration.json").read_text())


def paid_rows(rows: list[dict]) -> None:
    """Add ``paid`` and ``paid_error`` to GPU-hours rows (ideal hours / goodput)."""
    from cost_models.scenario import TrainingPlan, goodput

    for r in rows:
        if r["unit"] == "GPU-hours" and r["predicted"] is not None:
            n = r["gpus"]
            g, _ = goodput(TrainingPlan(), n, r["predicted"] / n, r["parameters"])
            r["goodput"] = g
            r["paid"] = r["predicted"] / g
            r["paid_error"] = r["paid"] / r["published"] - 1


def _err(r: dict) -> float | None:
    return r.get("paid_error", r["error"])


def summary(rows: list[dict]) -> list[list]:
    cats = sorted({r["category"] for r in rows})
    out = []
    for c in cats + ["fsdp (H100 only)", "fsdp (A100 only)"]:
        base = c.split(" ")[0]
        sel = [r for r in rows if r["category"] == base and _err(r) is not None
               and (c == base or (c.endswith("(H100 only)") and r["device"].startswith("H100"))
                    or (c.endswith("(A100 only)") and r["device"].startswith("A100")))]
        if not sel:
            continue
        a = [abs(_err(r)) for r in sel]
        t = TARGETS.get(c)
        out.append([c, len(sel), f"{statistics.mean(a):.1%}", f"{statistics.median(a):.1%}", f"{max(a):.1%}",
                    f"{statistics.mean(_err(r) for r in sel):+.1%}",
                    "-" if t is None else (f"<= {t:.0%}: " + ("met" if statistics.mean(a) <= t else "**missed**"))])
    return out


def render(d: dict) -> str:
    from profilers.render import markdown_table

    rows = d["validation"]
    paid_rows(rows)
    f = d["fit"]
    lines = [
        "## Training fidelity: the parallel model vs published training runs (held out)", "",
        f"Command: `{COMMAND}` (reads `profilers/data/training_calibration.json`, written by "
        f"`{d['meta']['command']}` on {d['meta']['date']}). Rows: `profilers/data/training_runs.csv` "
        f"({d['meta']['rows']} rows; sources and conventions in `training_runs.md`).", "",
        "Held out: every throughput row is predicted by a 10-fold cross-validation fit that did not see it, with its "
        "published layout (micro-batch, interleave, recompute, ZeRO stage; where a paper leaves micro-batch or "
        "interleave open, one stated rule fills it and the row says so). The whole-run GPU-hours rows and the LLaMA "
        "65B throughput row are never fitted: their layouts are not published, so they are predicted from "
        "`plan()`'s fastest layout at the published GPU count (2048 where Llama 2 states none) and a 4M-token "
        "batch; GPU-hours are compared as **paid** hours (ideal / goodput with TrainingPlan's sourced defaults: "
        "failures, restarts, checkpoints, evaluation), the ideal-hours error is shown beside it.", "",
        "Fitted (all throughput rows): GEMM efficiency per device "
        + ", ".join(f"{k} {v:.3f} (prior {f['prior_by_device'][k]:.3f})" for k, v in sorted(f["efficiency_by_device"].items()))
        + "; framework factors " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(f["framework_factor"].items()))
        + f"; straggler jitter {f['jitter']:.4f} (the data put it at its floor, 0: no scale loss beyond the "
        f"modelled communication is visible in these rows); per-step host overhead {f['step_overhead_s'] * 1e3:.0f} ms. "
        "Counted, not fitted: FLOPs, activation bytes, NCCL latency and bandwidth, ZeRO-3 per-layer gathers with "
        "prefetch, pipeline bubbles.", "",
        "### Held-out |error| per category", "",
        markdown_table(["category", "rows", "mean", "median", "max", "mean signed", "target (mean)"], summary(rows),
                       "lrrrrrl"), "",
        "### Every row", "",
    ]
    body = []
    for r in rows:
        e = _err(r)
        extra = ""
        if "paid" in r:
            extra = f"ideal {r['predicted']:,.0f} ({r['error']:+.1%}), goodput {r['goodput']:.3f}"
        pred = r.get("paid", r["predicted"])
        body.append([r["id"], r["category"], r["device"], r.get("layout", ""), r["unit"],
                     f"{r['published']:,.4g}", "-" if pred is None else f"{pred:,.4g}",
                     "-" if e is None else f"{e:+.1%}", extra])
    lines.append(markdown_table(["row", "category", "device", "layout (modelled)", "unit", "published", "predicted",
                                 "error", "note"], body, "lllllrrrl"))
    lines += ["", "DeepSpeed ZeRO-3 rows (Narayanan et al. 2021 Table 2) are not met by any single set of figures: "
              "published throughput falls 3x from 384 to 1536 GPUs at the same per-GPU work, while the model's "
              "per-layer gathers with NCCL latency and prefetch predict a smaller fall; the fitted framework factor "
              "splits the difference (errors of both signs). Treat ZeRO-3 over more than ~512 ranks as uncertain.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--refit", action="store_true")
    args = ap.parse_args(argv)
    if args.refit:
        from profilers.parallel.calibration import build

        build()
    text = render(_load())
    print(text)
    if args.write:
        RESULTS.write_text(text + "\n")
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
