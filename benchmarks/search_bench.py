"""How many quality evaluations each search method needs, on a real workload with ground truth.

1. Ground truth: every variant of a >= 100-variant digits space is priced (cheapest feasible
   deployment) and its quality measured (``search(method="exhaustive")``, real training).
2. On that table each method runs against the same oracle: ``lazy`` to a certified optimum;
   ``tpe`` and ``random`` (Optuna samplers) until they first evaluate the true optimum; over seeds.
3. The smallest possible certificate: the fewest evaluations that prove the optimum (every cheaper
   variant ruled out by an evaluated infeasible variant it is at least as compressed as, and the
   optimum proven feasible), a set-cover ILP solved with PuLP + HiGHS.

    python benchmarks/search_bench.py --out benchmarks/results/search.md [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SPACE_KW = dict(distill_width=(1.0, 0.75, 0.5, 0.375, 0.25), prune_amount=(0.0, 0.2, 0.4, 0.6, 0.8),
                quantize=("none", "bf16", "int8_weight_only", "int8_dynamic"), finetune_steps=100,
                distill_steps=300, devices=("T4", "L4", "A10G", "H100-SXM"),
                # bulk batches: at 16-64 digits a batch the GPU time is launch overhead, the same for every variant
                batch_sizes=(1024, 4096))
MIN_QUALITY = 0.95


def _cost_model():
    from cost_models import CostModel, Scenario, ServingPlan, TrainingPlan

    return CostModel(Scenario(serving=ServingPlan(avg_requests_per_s=50_000, peak_requests_per_s=100_000,
                                                  samples_per_request=100, latency_slo_s=0.05, horizon_months=12),
                              training=TrainingPlan(samples_per_epoch=1347, epochs=15)))


def ground_truth(out: Path) -> list[dict]:
    from optimizer import SearchSpace, search
    from profilers import workloads

    space = SearchSpace(**SPACE_KW)
    res = search(workloads.get("digits"), space, _cost_model(), min_quality=MIN_QUALITY, method="exhaustive",
                 output_dir=out, profile_time_cap_s=0.3, raise_infeasible=False,
                 progress=lambda i, n, v, q, c: print(f"\rpriced {i}/{n}", end="", flush=True))
    print()
    knobs = {v.key: v.knobs for v in space.variants()}
    return [{"key": t.variant, "knobs": knobs[t.variant], "cost": t.cost_usd, "quality": t.quality} for t in res.trials]


def optimum(rows: list[dict]) -> dict | None:
    feas = [r for r in rows if r["quality"] is not None and r["quality"] >= MIN_QUALITY and math.isfinite(r["cost"])]
    return min(feas, key=lambda r: r["cost"]) if feas else None


def run_lazy(rows: list[dict]) -> int:
    from optimizer.lazy import LazyVariant, lazy_search

    q = {r["key"]: r["quality"] for r in rows}
    res = lazy_search([LazyVariant(r["key"], r["cost"], tuple(r["knobs"])) for r in rows], lambda k: q[k], MIN_QUALITY)
    assert res.best_cost == optimum(rows)["cost"], "lazy missed the optimum"
    return res.evaluations


def run_optuna(rows: list[dict], sampler_name: str, seed: int) -> int:
    """Distinct quality evaluations until the sampler first evaluates the true optimum."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    by_knobs = {tuple(r["knobs"]): r for r in rows}
    sizes = [max(k[i] for k in by_knobs) + 1 for i in range(3)]
    target = optimum(rows)["key"]
    sampler = optuna.samplers.TPESampler(seed=seed) if sampler_name == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(sampler=sampler)
    seen: set[str] = set()
    for _ in range(20 * len(rows)):
        trial = study.ask()
        r = by_knobs[tuple(trial.suggest_int(n, 0, s - 1) for n, s in zip(("distill", "prune", "quantize"), sizes))]
        if math.isfinite(r["cost"]):
            seen.add(r["key"])  # a quality evaluation (repeats are cached)
        q = r["quality"] if r["quality"] is not None else 0.0
        trial.set_constraint("quality", MIN_QUALITY - q)
        study.tell(trial, r["cost"] if math.isfinite(r["cost"]) else 1e12)
        if r["key"] == target:
            return len(seen)
    return len(seen)


def rung_oracle(work: Path, fidelity: float):
    """Quality of a variant trained with ``fidelity`` of its steps: real training, journaled in ``work``."""
    from optimizer import SearchSpace
    from optimizer.evaluate import Evaluator
    from profilers import workloads

    space = SearchSpace(**SPACE_KW)
    ev = Evaluator(workloads.get("digits"), space, _cost_model(), output_dir=work)
    by_key = {v.key: v for v in space.variants()}
    return lambda key: ev.quality(by_key[key], fidelity), lambda key: space.trains(by_key[key])


def run_product_optuna(rows: list[dict], sampler_name: str, seed: int, *, rung=None, fidelity: float = 0.25,
                       margin: float = 0.05) -> tuple[float, int]:
    """TPE / random as ``search`` runs them: a variant dearer than the best feasible so far is pruned
    untrained; with ``rung`` (quality after ``fidelity`` of the training) a variant that trains is
    first evaluated there and Optuna's ThresholdPruner stops it when target - quality > margin.
    Returns (training spent in full-evaluation equivalents, full evaluations) until the optimum is
    first evaluated."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    by_knobs = {tuple(r["knobs"]): r for r in rows}
    sizes = [max(k[i] for k in by_knobs) + 1 for i in range(3)]
    target = optimum(rows)["key"]
    sampler = optuna.samplers.TPESampler(seed=seed) if sampler_name == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(sampler=sampler, pruner=optuna.pruners.ThresholdPruner(upper=margin))
    full: set[str] = set()
    partial: set[str] = set()
    best = math.inf
    State = optuna.trial.TrialState
    for _ in range(20 * len(rows)):
        trial = study.ask()
        r = by_knobs[tuple(trial.suggest_int(n, 0, s - 1) for n, s in zip(("distill", "prune", "quantize"), sizes))]
        if not math.isfinite(r["cost"]):
            study.tell(trial, state=State.FAIL)  # no feasible deployment: nothing to train
            continue
        if r["key"] not in full and r["cost"] >= best:
            study.tell(trial, state=State.PRUNED)
            continue
        if rung is not None and r["key"] not in full and rung[1](r["key"]):
            partial.add(r["key"])
            trial.report(MIN_QUALITY - rung[0](r["key"]), 1)
            if trial.should_prune():
                study.tell(trial, state=State.PRUNED)
                continue
        full.add(r["key"])
        q = r["quality"] if r["quality"] is not None else 0.0
        trial.set_constraint("quality", MIN_QUALITY - q)
        study.tell(trial, r["cost"])
        if q >= MIN_QUALITY:
            best = min(best, r["cost"])
        if r["key"] == target:
            break
    return len(full) + fidelity * len(partial), len(full)


def min_certificate(rows: list[dict]) -> int:
    """Fewest evaluations proving the optimum (set cover, PuLP + HiGHS)."""
    import pulp

    from optimizer.lazy import dominates

    opt = optimum(rows)
    ok = lambda r: r["quality"] is not None and r["quality"] >= MIN_QUALITY  # noqa: E731
    prob = pulp.LpProblem("certificate", pulp.LpMinimize)
    x = {r["key"]: prob.add_variable(f"x{i}", cat="Binary") for i, r in enumerate(rows)}
    prob += pulp.lpSum(x.values())
    for w in rows:  # every cheaper variant ruled out by an evaluated infeasible u <= w
        if math.isfinite(w["cost"]) and w["cost"] < opt["cost"]:
            cover = [x[u["key"]] for u in rows if not ok(u) and dominates(w["knobs"], u["knobs"])]
            prob += pulp.lpSum(cover) >= 1
    # the optimum proven feasible: an evaluated feasible u at least as compressed as it
    prob += pulp.lpSum(x[u["key"]] for u in rows if ok(u) and dominates(u["knobs"], opt["knobs"])) >= 1
    prob.solve(pulp.HiGHS(msg=False))
    return int(round(pulp.value(prob.objective)))


def random_instances(n: int, seed: int = 0) -> list[float]:
    """lazy evaluations / smallest certificate on ``n`` random monotone instances: 3 knobs of 2-5
    levels, quality 1 - cumulative random drops per level, cost falling with compression plus noise."""
    import itertools
    import random

    from optimizer.lazy import LazyVariant, lazy_search

    global MIN_QUALITY
    rng, ratios, keep = random.Random(seed), [], MIN_QUALITY
    while len(ratios) < n:
        levels = [rng.randint(2, 5) for _ in range(3)]
        drops = [[rng.uniform(0, 0.08) for _ in range(m)] for m in levels]
        weights = [rng.uniform(0.5, 2) for _ in range(3)]
        rows = []
        for k in itertools.product(*[range(m) for m in levels]):
            cost = 100 - sum(weights[i] * k[i] * 10 for i in range(3)) + rng.uniform(-8, 8)
            rows.append({"key": k, "knobs": k, "cost": cost,
                         "quality": 1 - sum(sum(drops[j][: k[j] + 1]) for j in range(3))})
        MIN_QUALITY = rng.uniform(0.7, 0.95)
        if optimum(rows) is None:
            continue
        q = {r["key"]: r["quality"] for r in rows}
        res = lazy_search([LazyVariant(r["key"], r["cost"], r["knobs"]) for r in rows], lambda k: q[k], MIN_QUALITY)
        ratios.append(res.evaluations / min_certificate(rows))
    MIN_QUALITY = keep
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--work", default="/tmp/sigmastar-search-bench")
    ap.add_argument("--reuse", action="store_true", help="reuse the ground truth already in --work")
    args = ap.parse_args()
    t0 = time.perf_counter()
    gt_file = Path(args.work, "ground_truth.json")
    if args.reuse and gt_file.exists():
        rows = json.loads(gt_file.read_text())
        gt_s = float("nan")
    else:
        rows = ground_truth(Path(args.work))
        gt_s = time.perf_counter() - t0
    Path(args.work, "ground_truth.json").write_text(json.dumps(rows, indent=1))
    opt = optimum(rows)
    lazy = run_lazy(rows)
    tpe = [run_optuna(rows, "tpe", s) for s in range(args.seeds)]
    rnd = [run_optuna(rows, "random", s) for s in range(args.seeds)]
    cert = min_certificate(rows)
    t1 = time.perf_counter()
    rung = rung_oracle(Path(args.work), 0.25)
    prod = {name: [run_product_optuna(rows, "tpe", s, rung=rg) for s in range(args.seeds)]
            for name, rg in (("skip", None), ("rungs", rung))}
    rung_s = time.perf_counter() - t1
    rnd_ratios = random_instances(40)
    priced = sum(1 for r in rows if math.isfinite(r["cost"]))
    lines = [
        "## Search: quality evaluations to the optimum (digits, ground truth by exhaustive search)", "",
        f"Command: `python benchmarks/search_bench.py{' --out ' + args.out if args.out else ''} --seeds {args.seeds}"
        f"{' --reuse' if args.reuse else ''}` "
        f"(ground truth: {len(rows)} variants, {priced} with a feasible deployment, every one trained and evaluated "
        f"for real, journaled in `--work` and reused by later runs{'' if math.isnan(gt_s) else f'; this run {gt_s:.0f} s'}"
        f"; quality target {MIN_QUALITY}; optimum: {opt['key']} at ${opt['cost']:,.2f}).", "",
        "| method | quality evaluations | vs the smallest certificate |", "|---|---|---|",
        f"| smallest possible certificate (set-cover ILP) | {cert} | 1.00x |",
        f"| lazy (certified optimum) | {lazy} | {lazy / cert:.2f}x |",
        f"| tpe (to first reaching the optimum; median of {args.seeds} seeds) | {statistics.median(tpe):g} "
        f"(seeds: {tpe}) | {statistics.median(tpe) / cert:.2f}x |",
        f"| random (same; median of {args.seeds} seeds) | {statistics.median(rnd):g} (seeds: {rnd}) | "
        f"{statistics.median(rnd) / cert:.2f}x |",
        "", "TPE as `search(method=\"tpe\")` runs it, in training spent until it first evaluates the optimum "
        "(full-evaluation equivalents: a full evaluation is 1, a 25 % rung 0.25; median of "
        f"{args.seeds} seeds; rung qualities measured for real and journaled in `--work`; this phase took {rung_s:.0f} s in this run):", "",
        "| tpe variant | training spent (full evaluations) | full evaluations |", "|---|---|---|",
        f"| plain (the row above) | {statistics.median(tpe):g} | {statistics.median(tpe):g} |",
        *(f"| {label} | {statistics.median(c for c, _ in prod[k]):.2f} (seeds: {[round(c, 2) for c, _ in prod[k]]}) "
          f"| {statistics.median(n for _, n in prod[k]):g} |"
          for k, label in (("skip", "+ variants dearer than the incumbent pruned untrained (`skip_dearer`, default)"),
                           ("rungs", "+ a 25 % training rung, ThresholdPruner margin 0.05 (`fidelities=[0.25]`)"))),
        "", f"Targets: lazy within 1.5x of the certificate ({lazy / cert:.2f}x) and at least 3x fewer evaluations "
        f"than tpe ({statistics.median(tpe) / lazy:.1f}x).", "",
        f"On {len(rnd_ratios)} random monotone instances (3 knobs of 2-5 levels; `random_instances` in the script) "
        f"lazy needed {statistics.mean(rnd_ratios):.2f}x the smallest certificate on average (median "
        f"{statistics.median(rnd_ratios):.2f}x, worst {max(rnd_ratios):.2f}x).", "",
        "Reading it: the smallest certificate is computed knowing the answer (the optimum itself and the "
        "infeasible variants whose up-sets cover every cheaper one). A search must find it: on a single knob "
        "any adaptive method needs about log2(n) evaluations while the certificate stays at 2, so a fixed "
        "ratio to the certificate is not reachable in general. `lazy` picks the variant whose worse outcome "
        "resolves the most open variants (bisection on the poset); exact minimax and expected-count "
        "lookahead over the open set, and surrogate-weighted picks, were tried on these instances and did "
        "no better on average than this rule.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
