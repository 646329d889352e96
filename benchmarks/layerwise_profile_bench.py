"""Layer-wise choices from measured sensitivities on digits: profile, solve, verify, tighten.

    python benchmarks/layerwise_profile_bench.py            # writes its section of results/layerwise.md
    python benchmarks/layerwise_profile_bench.py --no-write

Times ``profilers.profile_layers`` (every Linear/Conv layer x every choice: one model assembled,
evaluated on the held-out split and FLOP-counted per pair; the baseline's training is done before
the clock starts), then a re-read from its JSON cache; then ``optimizer.verify_layerwise`` at several
targets with the measured sensitivities, and with sensitivities scaled to 1 % (a proxy far too
optimistic) so that the first ILP answer falls short and the loop must tighten.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimizer import verify_layerwise
from profilers import profile_layers, workloads
from profilers.techniques import Prune, Quantize

HEADING = "## Layer-wise choices from measured sensitivities (digits)"
CHOICES = (Quantize("bf16"), Quantize("int8_weight_only"),
           *(Prune("l1_unstructured", amount=a) for a in (0.5, 0.8, 0.95)))
DROPS = (0.005, 0.015, 0.03, 0.06)


def write_section(path: Path, heading: str, lines: list[str]) -> None:
    """Replace the ``heading`` section of ``path`` (up to the next level-2 heading) with ``lines``,
    or append it; the file's other sections are kept as they are."""
    old = path.read_text().splitlines() if path.exists() else []
    starts = [i for i, line in enumerate(old) if line.startswith("## ")]
    if heading in old:
        i = old.index(heading)
        j = next((s for s in starts if s > i), len(old))
        new = old[:i] + lines + old[j:]
    else:
        new = old + ([""] if old and old[-1] else []) + lines
    path.write_text("\n".join(new).rstrip("\n") + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    import torch

    wl = workloads.get("digits")
    wl.build()  # trains the baseline once (cached per process): not part of the profiling time
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "digits_layers.json"
        p = profile_layers(wl, choices=CHOICES, cache_path=cache)
        again = profile_layers(wl, choices=CHOICES, cache_path=cache)
    print(f"profiled {p.measured} (layer, choice) pairs in {p.measure_s:.2f} s; cached re-read {again.measure_s:.3f} s")
    fp32 = p.fp32_bytes()
    optimistic = {l: {c: {**o, "sensitivity": 0.01 * o["sensitivity"]} for c, o in cs.items()}
                  for l, cs in p.options().items()}
    runs = [("measured", "cap", d, None) for d in DROPS]
    runs += [("measured x 0.01", t, 0.03, optimistic) for t in ("cap", "correct")]
    rows = []
    for label, tighten, drop, opts in runs:
        t0 = time.perf_counter()
        r = verify_layerwise(wl, p, target_quality=p.base_quality - drop, tighten=tighten, options=opts)
        dt = time.perf_counter() - t0
        first, last = r.rounds[0], r.rounds[-1]
        final_bytes = "-" if r.model_bytes is None else f"{r.model_bytes:,} ({r.model_bytes / fp32:.1%})"
        saved = "-" if r.model_bytes is None else f"{fp32 - r.model_bytes:,}"
        pred = "-" if last.predicted_quality is None else f"{last.predicted_quality:.4f}"
        meas = "-" if last.measured_quality is None else f"{last.measured_quality:.4f}"
        assignment = ", ".join(f"{l}: {c}" for l, c in r.assignment.items()) or "-"
        rows.append((label, tighten, f"{r.target_quality:.4f}", r.status, len(r.rounds),
                     f"{first.predicted_quality:.4f} / {first.measured_quality:.4f}", f"{pred} / {meas}",
                     final_bytes, saved, f"{dt:.2f}", assignment))
        print(" | ".join(map(str, rows[-1])), flush=True)
    if args.no_write:
        return 0
    table = ["| layer | choice | bytes | FLOPs | quality with only this layer changed | sensitivity |",
             "|---|---|---|---|---|---|"]
    for layer, by_choice in p.measurements.items():
        for c, m in by_choice.items():
            table.append(f"| {layer} | {c} | {m.bytes:,} | {m.flops:,} | {m.quality:.4f} | {m.sensitivity:+.4f} |")
    skipped = "; ".join(f"{l} {c} (`{why[:150]}...`)" for l, cs in p.skipped.items() for c, why in cs.items())
    lines = [
        HEADING,
        "",
        "Command: `python benchmarks/layerwise_profile_bench.py`",
        "",
        f"Provenance: {p.provenance}. torch threads {torch.get_num_threads()}.",
        "",
        (f"Sensitivity measurement (`profilers.profile_layers`): {len(p.layers)} layers x {len(p.choices)} choices = "
        f"{p.measured} (layer, choice) pairs measured in {p.measure_s:.2f} s wall ({p.measure_s / p.measured * 1e3:.0f} ms "
        f"a pair: assemble, evaluate on 450 held-out images, count FLOPs; the baseline's training excluded); "
        f"read back from the JSON cache in {again.measure_s:.3f} s. Unchanged model: {fp32:,} bytes, quality "
        f"{p.base_quality:.4f}. Not run (torchao has no int8 convolution): {skipped or 'none'}"),
        "",
        *table,
        "",
        ("`optimizer.verify_layerwise`: minimize bytes with total predicted sensitivity <= base - target; assemble;"
        " measure; tighten while the measured quality falls short (`cap`: rescale the cap by the measured ratio;"
        " `correct`: add the unexplained loss to the chosen options' sensitivities). Quality is measured on the same"
        " held-out split the sensitivities came from. `first round` and `final` give predicted / measured quality."),
        "",
        ("| sensitivities | tighten | target | status | rounds | first round | final | bytes (of fp32) "
         "| bytes saved vs fp32 | seconds | final assignment |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {' | '.join(map(str, r))} |" for r in rows],
        "",
        f"Load average when the run ended: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (shared 2-core machine).",
    ]
    path = Path(__file__).parent / "results" / "layerwise.md"
    write_section(path, HEADING, lines)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
