"""The ``sigmastar`` command line.

    sigmastar profile                      # measure the bundled digits CNN here, project onto GPUs
    sigmastar profile --config llama-2-7b --seq-len 4096 --devices A100-80GB,H100-SXM --dtype bf16
    sigmastar catalog                      # the device catalog with sources and dates
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]

DEFAULT_DEVICES = "host,T4,L4,A100-80GB,H100-SXM"


def _cmd_profile(args: argparse.Namespace) -> int:
    from profilers import analyze, hardware, measure, project, workloads
    from profilers._config import ConfigError, invalid, to_json_dict
    from profilers.report import PROJECTION_HEADER, profile_text, projection_table, text_table

    for path in args.device_file or ():
        hardware.load(path)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    for d in devices:
        hardware.get(d)  # fail on an unknown name before any work
    if args.config:
        if args.seq_len is None:
            raise invalid("profile", "--seq-len", "an integer >= 1 with --config", None)
        batch = 1 if args.batch_size is None else args.batch_size
        print(f"analyzing {args.config} on the meta device (batch {batch}, seq {args.seq_len}) ...", file=sys.stderr)
        prof = analyze(args.config, batch_size=batch, seq_len=args.seq_len,
                       dtype=args.dtype or "bf16", train=not args.no_train)
    else:
        wl = workloads.get(args.workload)
        print(f"measuring {wl.name} on this machine (time cap {args.time_cap:g} s per loop) ...", file=sys.stderr)
        prof = measure(wl, batch_size=args.batch_size, dtype=args.dtype or "fp32", train=not args.no_train,
                       time_cap_s=args.time_cap)
        if wl.evaluate is not None:
            quality = wl.evaluate(wl.build())
            prof = prof.with_notes(f"quality: {wl.quality_metric} = {quality:.4f} (measured)")
    print(profile_text(prof))
    for n in prof.notes:
        print(f"note: {n}")
    projections = []
    skipped = []
    for d in devices:
        dtype = args.project_dtype or prof.dtype
        spec = hardware.get(d)
        if not spec.supports(dtype):
            skipped.append(f"{spec.name}: {dtype} unsupported (has {', '.join(spec.peak_tflops)})")
            continue
        projections.append(project(prof, spec, dtype))
    if projections:
        print()
        print(text_table(PROJECTION_HEADER, projection_table(projections)))
        print(f"\n{projections[-1].provenance}")
    for s in skipped:
        print(f"skipped {s}")
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "profile.json").write_text(prof.to_json(indent=1))
        (out / "projections.json").write_text(json.dumps([to_json_dict(p) for p in projections], indent=1))
        print(f"wrote {out / 'profile.json'} and {out / 'projections.json'}")
    return 0


def _cmd_catalog(args: argparse.Namespace) -> int:
    from profilers import hardware
    from profilers.report import text_table

    for path in args.device_file or ():
        hardware.load(path)
    specs = list(hardware.catalog().values())
    if args.host:
        specs.append(hardware.host())
    rows = []
    for s in specs:
        rows.append((s.name, f"{s.memory_gb:g}", f"{s.memory_bandwidth_gbps:g}",
                     " ".join(f"{k}={v:g}" for k, v in s.peak_tflops.items()), f"{s.tdp_watts:g}", s.date,
                     s.source[:60]))
    print(text_table(("device", "mem GB", "mem GB/s", "dense peak TFLOP/s", "TDP W", "date", "source"), rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sigmastar", description="Find the cheapest way to train and serve a model "
                                "at the quality you need.")
    sub = p.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("profile", help="measure a model here (or analyze a config) and project onto devices",
                        description="Measure a built-in workload on this machine (or analyze a transformers "
                        "config without running it) and project the figures onto catalog devices.")
    pr.add_argument("--workload", default="digits", help="built-in workload to measure (default: digits)")
    pr.add_argument("--config", help="analyze a transformers config instead: a bundled name "
                    "(llama-2-7b, llama-2-70b, gpt2, bert-base-uncased) or a config.json path")
    pr.add_argument("--seq-len", type=int, help="sequence length for --config")
    pr.add_argument("--batch-size", type=int, help="batch size (default: the workload's, 1 for --config)")
    pr.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="dtype to run/analyze in")
    pr.add_argument("--devices", default=DEFAULT_DEVICES, help=f"comma-separated catalog devices to project "
                    f"onto (default: {DEFAULT_DEVICES}; see `sigmastar catalog`)")
    pr.add_argument("--project-dtype", help="dtype of the projections (default: the profile's)")
    pr.add_argument("--device-file", action="append", help="extra devices TOML (repeatable)")
    pr.add_argument("--time-cap", type=float, default=5.0, help="seconds per timing loop (default 5)")
    pr.add_argument("--no-train", action="store_true", help="skip the training step")
    pr.add_argument("--output", help="folder to write profile.json and projections.json")
    pr.set_defaults(func=_cmd_profile)

    ca = sub.add_parser("catalog", help="list the device catalog", description="List the device catalog "
                        "(dense peaks, memory, bandwidth, TDP, source and date of every row).")
    ca.add_argument("--host", action="store_true", help="also detect and measure this machine's CPU")
    ca.add_argument("--device-file", action="append", help="extra devices TOML (repeatable)")
    ca.set_defaults(func=_cmd_catalog)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from profilers._config import SigmastarError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SigmastarError as e:
        print(f"sigmastar {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sigmastar {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
