"""solve_layerwise: time to proven optimality (relative gap 1e-9), every formulation and back end.

Same seeded instances for every variant: 1,000 layers x 8 choices x 2 caps (bytes, bops).

    python benchmarks/layerwise_bench.py                      # all variants, 3 seeds per family
    python benchmarks/layerwise_bench.py --seeds 5 --time-limit 60 --variants core/highs,plain/pulp-highs

Families:
  uniform: costs ~ U(1, 10) per term, sensitivity ~ U(0, 1), independent; each cap at 30 % of the
           way from the least achievable total to the total of per-layer mean costs.
  quant:   quantization-like: 8 choices = weight bits {2,4,8,16} x activation bits {8,16};
           bytes = params * w / 8, bops = MACs * w * a; sensitivity = h * 4^(-w/2) + g * 4^(-a/4)
           with log-normal per-layer h, g, params, MACs and +-25 % noise; caps at 30 % of the way
           from the least to the largest achievable total.
Writes benchmarks/results/layerwise.md (a section to merge into RESULTS.md) unless --no-write.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimizer.layerwise import LayerOption, solve_layerwise  # noqa: E402

VARIANTS = ["core/highs", "reduced/highs", "plain/highs", "plain/pulp-highs", "plain/scipy", "plain/cbc"]
BASELINE = "plain/pulp-highs"


def uniform(seed: int, n: int = 1000, k: int = 8):
    rng = np.random.default_rng(seed)
    c = rng.uniform(1, 10, size=(n, k, 2))
    s = rng.uniform(0, 1, size=(n, k))
    lo, mean = c.min(axis=1).sum(axis=0), c.mean(axis=1).sum(axis=0)
    return c, s, lo + 0.3 * (mean - lo)


def quant(seed: int, n: int = 1000):
    rng = np.random.default_rng(10_000 + seed)
    w = np.array([2, 4, 8, 16, 2, 4, 8, 16.0])
    a = np.array([8, 8, 8, 8, 16, 16, 16, 16.0])
    params = rng.lognormal(13, 1, n)
    macs = params * rng.lognormal(4, 1, n)
    h, g = rng.lognormal(0, 1.5, n), rng.lognormal(-2, 1.5, n)
    c = np.stack([params[:, None] * w / 8, macs[:, None] * w * a / 1e6], axis=2)
    s = (h[:, None] * 4.0 ** (-w / 2) + g[:, None] * 4.0 ** (-a / 4)) * rng.uniform(0.8, 1.25, (n, 8))
    lo, hi = c.min(axis=1).sum(axis=0), c.max(axis=1).sum(axis=0)
    return c, s, lo + 0.3 * (hi - lo)


FAMILIES = {"uniform": uniform, "quant": quant}

NOTES = [
    "How `core` proves optimality: options dominated within their layer (or same_choice group) in the",
    "objective and every capped term are dropped; the LP relaxation's duals `lam` give each option a",
    "reduced cost `d >= 0` and a bound `L`; every feasible assignment has `value - L = sum(d) + lam @ slack`,",
    "so one better than `L + G` uses only options with `d <= G` and has `sum(d) <= G`. That set is",
    "enumerated exactly by meet-in-the-middle (two halves of the layers that have such options, joined on",
    "a grid over the slack box), widening `G` from a small start until the best assignment found has",
    "`value - L <= G`. Past 3 M states per half the reduced-cost core goes to the MILP solver instead.",
    "",
    "Why the MILP solvers are slow here: the LP bound is already within about 1e-4 of the optimum",
    "(`LP gap` in the notes column), and closing that last 1e-4 to 1e-9 means branch-and-bound must",
    "exclude a great many near-tied combinations; the enumeration touches only the few thousand to few",
    "hundred thousand partial assignments that can still beat the incumbent.",
    "",
    "Solver tolerances: with the MILP objective scaled to max |coefficient| = 1 (`--obj-scale 1`), HiGHS",
    "(all three interfaces) reported `optimal`, gap 0, on quant seed 0 for assignments 2e-7 to 1e-6",
    "(relative) worse than the enumeration's strictly feasible optimum: its absolute tolerances blur the",
    "smallest sensitivities. The models are built with the objective scaled to max 1e3 and cap rows to",
    "1e3 * total / scale (the default here), after which every back end agrees with the enumeration.",
]


def to_options(c: np.ndarray, s: np.ndarray) -> dict:
    return {f"layer{i}": {f"choice{j}": LayerOption({"bytes": float(c[i, j, 0]), "bops": float(c[i, j, 1])},
                                                   float(s[i, j])) for j in range(c.shape[1])}
            for i in range(c.shape[0])}


def run(variant: str, options: dict, caps, time_limit: float):
    formulation, solver = variant.split("/")
    t = time.perf_counter()
    r = solve_layerwise(options, budgets={"bytes": float(caps[0]), "bops": float(caps[1])}, solver=solver,
                        formulation=formulation, time_limit_s=time_limit, mip_rel_gap=1e-9)
    return time.perf_counter() - t, r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--time-limit", type=float, default=120.0, help="per solve, seconds")
    ap.add_argument("--obj-scale", type=float, default=None,
                    help="override optimizer.layerwise._OBJ_SCALE (max |objective coefficient| in MILP models)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.obj_scale is not None:
        import optimizer.layerwise as lw

        lw._OBJ_SCALE = args.obj_scale
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    rows, times = [], {}
    c, s, caps = uniform(99, n=20)  # warm-up: imports of scipy.optimize, highspy and pulp are not timed
    for v in variants:
        run(v, to_options(c, s), caps, args.time_limit)
    disagreements = []
    for fam in families:
        for seed in range(args.seeds):
            c, s, caps = FAMILIES[fam](seed)
            options = to_options(c, s)
            proven = {}
            for v in variants:
                dt, r = run(v, options, caps, args.time_limit)
                times.setdefault((fam, v), []).append(dt if r.status == "optimal" else float("inf"))
                gap = "-" if r.mip_gap is None else f"{r.mip_gap:.1e}"
                obj = "-" if r.objective is None else f"{r.objective:.10g}"
                extra = ""
                if v.startswith("core"):
                    lp_gap = ((r.objective - r.stats["lp_bound"]) / abs(r.objective)
                              if r.objective and "lp_bound" in r.stats else float("nan"))
                    extra = (f"LP gap {lp_gap:.1e}; {r.stats.get('core_items', '-')} free layers, "
                             f"{int(r.stats.get('states', 0)):,} states")
                elif v.startswith("reduced"):
                    extra = f"{r.stats['options_after_dominance']:,} of {r.stats['options']:,} options kept"
                rows.append((fam, seed, v, f"{dt:.2f}", r.status, obj, gap, extra))
                print(f"{fam:8s} seed {seed} {v:18s} {dt:8.2f} s  {r.status:10s} {obj:>16s} gap {gap} {extra}",
                      flush=True)
                if r.status == "optimal":
                    proven[v] = r.objective
            vals = list(proven.values())
            if vals and max(vals) - min(vals) > 1e-9 * max(1.0, abs(min(vals))):
                disagreements.append((fam, seed, proven))
    summary = []
    for fam in families:
        base = statistics.median(times.get((fam, BASELINE), [float("nan")])) if BASELINE in variants else None
        for v in variants:
            ts = times[(fam, v)]
            med = statistics.median(ts)
            ratio = f"{base / med:.1f}x" if base and np.isfinite(base) and np.isfinite(med) else "-"
            solved = sum(np.isfinite(t) for t in ts)
            summary.append((fam, v, f"{med:.2f}" if np.isfinite(med) else f"> {args.time_limit:g}",
                            f"{min(ts):.2f}" if np.isfinite(min(ts)) else "-",
                            f"{max(ts):.2f}" if np.isfinite(max(ts)) else f"> {args.time_limit:g}",
                            f"{solved}/{len(ts)}", ratio))
    print("\nmedian seconds to proven optimality (inf = not proven within the limit)")
    for row in summary:
        print("  ".join(str(x) for x in row))
    print("disagreements between proven optima:", disagreements or "none")
    if not args.no_write:
        write(args, variants, families, rows, summary, disagreements)
    return 1 if disagreements else 0


def write(args, variants, families, rows, summary, disagreements) -> None:
    import highspy
    import pulp
    import scipy

    cmd = "python benchmarks/layerwise_bench.py " + " ".join(sys.argv[1:])
    out = [
        "## solve_layerwise: time to proven optimality",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, PuLP {pulp.__version__}, "
        f"highspy {highspy.Highs().version()}. Relative gap 1e-9 (absolute gap 0 where the back end takes it: "
        f"HiGHS, CBC; scipy.milp keeps HiGHS' absolute gap 1e-6). Wall time of the whole "
        f"`solve_layerwise` call, model building included; limit {args.time_limit:g} s per solve.",
        "",
        "1,000 layers x 8 choices x 2 caps (bytes, bops); families in the script's docstring. "
        f"Speed-up is against `{BASELINE}` (the plain one-hot model through PuLP + HiGHS).",
        "",
        "| family | variant | median s | min s | max s | proven | speed-up vs plain PuLP+HiGHS |",
        "|---|---|---|---|---|---|---|",
    ]
    out += [f"| {' | '.join(map(str, r))} |" for r in summary]
    out += ["", "Per instance:", "", "| family | seed | variant | seconds | status | objective | gap | notes |",
            "|---|---|---|---|---|---|---|---|"]
    out += [f"| {' | '.join(map(str, r))} |" for r in rows]
    out += ["", "Proven optima agree across variants: " + ("yes" if not disagreements else f"NO: {disagreements}"),
            f"Load average when the run ended: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
            "(a shared machine: absolute times are noisy; every variant ran on the same instances in one run).",
            "", *NOTES, ""]
    sys.path.insert(0, str(Path(__file__).parent))
    # write_section keeps the other sections of layerwise.md (layerwise_profile_bench.py writes one)
    from layerwise_profile_bench import write_section

    path = Path(__file__).parent / "results" / "layerwise.md"
    write_section(path, out[0], out)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
