"""Fuzz job files and Python configs: N examples of each generator of tests/optimizer/test_job_fuzz.py.

Each example is accepted, rejected with a clean error naming its field path (a SigmastarError), or
fails: a clean error without a field path, or a raw exception (anything else). The target: no
failures. Counts per generator, and the first few failures with their tracebacks, are printed;
``--write`` writes the section ``benchmarks/results/fuzz.md``.

    python benchmarks/fuzz_jobs.py                      # 10,000 examples of each generator
    python benchmarks/fuzz_jobs.py --examples 2000 --only raw_files
    python benchmarks/fuzz_jobs.py --write
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import os
import platform
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hypothesis  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

from tests.optimizer.test_job_fuzz import GENERATORS, safe_repr  # noqa: E402

WHAT = {
    "job_tables": "examples/*.toml as tables, 1-4 mutations (types, ranges, deletions, unknown keys, nesting), "
                  "parse_job",
    "job_files": "tables mutated the same way (another seed), written as TOML files (inline tables); load_job",
    "raw_files": "job file bytes: truncated, bytes inserted/replaced, BOMs, UTF-16/32, Latin-1, NUL, huge "
                 "integers, 10,000-deep arrays/tables, random bytes/text; load_job",
    "side_files": "a job file naming a price file (TOML, JSON) or a model's config.json beside it, that file "
                  "damaged as above or its JSON values fuzzed; load_job",
    "python_configs": "Job, SearchSpace, Scenario and its plans, WhatIf, LLMSpace, PriceRow built in Python with "
                      "1-3 fuzzed keyword values",
}
FAILURES = ("no_path", "other_path", "wrapped", "raw")
FILE_GENERATORS = ("job_tables", "job_files", "raw_files", "side_files")


def signature(out) -> str:
    """A failure's kind: the exception type and the innermost frame in sigmastar's code."""
    e = out.error
    if out.kind in ("no_path", "wrapped", "other_path"):
        return f"{out.kind}: {str(e)[:100]}"
    tb = traceback.extract_tb(e.__traceback__) if e is not None and e.__traceback__ else []
    ours = [f for f in tb if f.filename.startswith(str(ROOT)) and "/tests/" not in f.filename]
    where = f"{Path(ours[-1].filename).relative_to(ROOT)}:{ours[-1].lineno} ({ours[-1].name})" if ours else "?"
    if tb and tb[-1] not in ours[-1:]:  # raised in a library it called
        where += f" via {Path(tb[-1].filename).name}:{tb[-1].lineno} ({tb[-1].name})"
    return f"{type(e).__name__} at {where}"


def fuzz(name: str, n: int, seed: int, keep: int = 20) -> dict:
    strategy, check = GENERATORS[name]
    counts: collections.Counter = collections.Counter()
    failures: dict[str, list] = {}  # signature -> [count, first input, first detail]

    @hypothesis.seed(seed)
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(case):
        out = check(case)
        counts[out.kind] += 1
        if not out.ok:
            sig = signature(out)
            if sig in failures:
                failures[sig][0] += 1
            elif len(failures) < keep:
                failures[sig] = [1, safe_repr(case, 600), out.detail]

    t0 = time.perf_counter()
    one()
    return {"counts": counts, "failures": failures, "wall_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=10_000, help="examples per generator (default 10,000)")
    ap.add_argument("--only", choices=sorted(GENERATORS), action="append", help="run only these generators")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="write benchmarks/results/fuzz.md")
    args = ap.parse_args()
    names = args.only or list(GENERATORS)
    results = {}
    t0 = time.perf_counter()
    for name in names:
        # each generator its own seed: job_files does not rewrite job_tables' tables
        r = results[name] = fuzz(name, args.examples, args.seed * 100 + list(GENERATORS).index(name))
        c = r["counts"]
        print(f"{name}: {sum(c.values())} examples in {r['wall_s']:.0f} s: {c['accepted']} accepted, "
              f"{c['rejected']} rejected with a field path, {c['no_path']} clean errors without a path, "
              f"{c['other_path']} naming a field the mutation did not touch, {c['wrapped']} wrapped raw exceptions, "
              f"{c['raw']} raw exceptions", flush=True)
        for sig, (count, case, detail) in r["failures"].items():
            print(f"  {count} x {sig}\n  first input: {case}\n  {detail}\n", flush=True)
    wall = time.perf_counter() - t0
    files = sum(sum(results[n]["counts"].values()) for n in names if n in FILE_GENERATORS)
    bad = sum(sum(r["counts"][k] for k in FAILURES) for r in results.values())
    print(f"total: {files} job files/tables and {sum(sum(r['counts'].values()) for r in results.values()) - files} "
          f"Python configs in {wall:.0f} s; {bad} failures")
    if args.write:
        write(results, args, wall)
    sys.exit(1 if bad else 0)


def write(results: dict, args: argparse.Namespace, wall: float) -> None:
    import torch

    cmd = "python benchmarks/fuzz_jobs.py" + (f" --examples {args.examples}" if args.examples != 10_000 else "") + \
        "".join(f" --only {n}" for n in args.only or ()) + (f" --seed {args.seed}" if args.seed else "") + " --write"
    lines = [
        "## Fuzzed job files and configs",
        "",
        f"Command: `{cmd}` ({dt.date.today().isoformat()}; hypothesis {hypothesis.__version__}, torch "
        f"{torch.__version__}, Python {platform.python_version()}; 2-core CPU machine, shared). The generators are "
        "those of `tests/optimizer/test_job_fuzz.py` (which CI runs with fewer examples; "
        "`SIGMASTAR_FUZZ_EXAMPLES=N` runs N). An example is *accepted*, *rejected* with a clean error "
        "(`SigmastarError`, exit 2 from the CLI) whose message starts with the field path (`job.search.n_trials "
        "must be ...`, `SearchSpace.batch_sizes[0] must be ...`), or a failure: a clean error without a path, a "
        "*wrapped* raw exception (`profilers.config.build`'s last resort, `job must be a valid Job (TypeError: "
        "...)`), a raw exception (anything else), or, for a table changed at one path (not `kind`), an error naming "
        "a field other than that path, one on the way to it, one beside it or one a cross-field rule ties it to. "
        "Target: no failures.",
        "",
        "| generator | examples | accepted | rejected with a field path | clean error without a path | naming a "
        "field the mutation did not touch | wrapped raw exception | raw exception | wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    tot: collections.Counter = collections.Counter()
    for name, r in results.items():
        c = r["counts"]
        tot.update(c)
        lines.append(f"| `{name}`: {WHAT[name]} | {sum(c.values()):,} | {c['accepted']:,} | {c['rejected']:,} | "
                     + " | ".join(f"{c[k]:,}" for k in FAILURES) + f" | {r['wall_s']:.0f} s |")
    lines.append(f"| total | {sum(tot.values()):,} | {tot['accepted']:,} | {tot['rejected']:,} | "
                 + " | ".join(f"{tot[k]:,}" for k in FAILURES) + f" | {wall:.0f} s |")
    files = sum(sum(results[n]["counts"].values()) for n in results if n in FILE_GENERATORS)
    lines += ["", f"{files:,} fuzzed job files and tables (parsed or read from disk) and "
              f"{sum(tot.values()) - files:,} Python configs; {tot['raw']:,} raw exceptions."]
    out = ROOT / "benchmarks" / "results" / "fuzz.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
