"""The ``sigmastar`` command line.

    sigmastar search                       # the bundled digits job: train, search, write runs/digits/report.md
    sigmastar search examples/minilm.toml --output runs/minilm    # a job file; the same command resumes
    sigmastar whatif                       # Llama-2-7B/70B served and trained across the GPU catalog
    sigmastar plan llama-2-7b --counts 256,512 --tokens 2e12    # a training run's layout and price per GPU
    sigmastar report runs/digits           # render the report again from results.json and run.json
    sigmastar export runs/digits --to m/   # the chosen model: state_dict, torch.export program, manifest
    sigmastar worker job.toml --storage postgresql://...   # join an Optuna search on a shared storage
    sigmastar profile                      # measure the bundled digits CNN here, project onto GPUs
    sigmastar profile --config llama-2-7b --seq-len 4096 --devices A100-80GB,H100-SXM --dtype bf16
    sigmastar catalog                      # the device catalog with sources and dates
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from profilers.render import usd

__all__ = ["main", "build_parser"]

DEFAULT_DEVICES = "host,T4,L4,A100-80GB,H100-SXM"
#: exit statuses of ``sigmastar search`` (and the other commands where they apply); 130 / 143 interrupted
EXIT_OK, EXIT_INFEASIBLE, EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_ERROR = 0, 1, 2, 3, 4


def _cmd_profile(args: argparse.Namespace) -> int:
    from profilers import analyze, hardware, measure, project, workloads
    from profilers.config import invalid, to_json_dict
    from profilers.render import text_table
    from profilers.report import PROJECTION_HEADER, profile_text, projection_table

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
    from profilers.projection import unsupported_dtypes

    for d in devices:
        spec = hardware.get(d)
        # each op at its own dtype unless --project-dtype asks for the cast what-if
        missing = [args.project_dtype] if args.project_dtype and not spec.supports(args.project_dtype) else \
            ([] if args.project_dtype else unsupported_dtypes(prof, spec))
        if missing:
            skipped.append(f"{spec.name}: {', '.join(missing)} unsupported (has {', '.join(spec.peak_tflops)})")
            continue
        projections.append(project(prof, spec, args.project_dtype, runtime=args.runtime))
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
    from profilers.render import text_table

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


def _takes(option: str) -> tuple[str, ...]:
    """The registered search methods that take ``option`` (optimizer.methods.METHODS)."""
    from .methods import registered

    return tuple(n for n, m in registered().items() if option in m.options)


def _methods_help() -> str:
    from .methods import registered

    return "Methods (job.search.method): " + "; ".join(f"{n}: {m.summary}" for n, m in registered().items()) + "."


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _load(args: argparse.Namespace, kind: str):
    from profilers.config import ConfigError

    from .jobs import default_job_path, load_job

    path = Path(args.job) if args.job else default_job_path(kind)
    job = load_job(path)
    if job.kind != kind and not (kind == "search" and job.kind == "llm"):  # `search` runs LLM serving searches too
        other = "whatif" if job.kind == "whatif" else "search"
        raise ConfigError(f"job.kind must be {kind!r} for `sigmastar {args.command}`; got {job.kind!r} "
                          f"(run it with `sigmastar {other} {path}`).")
    return job, path


def _progress(job, args: argparse.Namespace):
    from .progress import SearchProgress

    return SearchProgress(method=job.method, min_quality=job.min_quality, variants=job.space.size,
                          n_trials=job.n_trials if job.method in _takes("n_trials") else None, timeout_s=job.timeout_s,
                          max_evaluations=job.max_evaluations, verbose=args.verbose,
                          stream=io.StringIO() if args.quiet else sys.stderr)


def _resume_note(out: Path) -> str:
    from .jobs import finished_evaluations

    n = finished_evaluations(out)
    if n:
        return (f"resuming in {out}: {n} quality evaluation{'s' if n != 1 else ''} already finished there "
                "(evaluations.jsonl) will be reused, not re-run")
    if (out / "study.journal").exists():
        return f"resuming in {out}: the Optuna study in study.journal continues"
    return ""


def _summary(result, files: dict) -> list[str]:
    lines = []
    for k, v in result.summary_rows():
        lines.append(f"{k:<20} {v}")
    lines.append(f"{'report':<20} {files['report']}")
    return lines


class _Stop:
    """Ctrl-C (SIGINT) and SIGTERM during a search: both stop it the same way, keeping finished work.

    The handler records the signal and raises :class:`KeyboardInterrupt`. An interrupt can be
    swallowed on its way up (raised inside a finalizer or a library callback that reports and
    drops exceptions), so every progress callback checks the record too and raises again: the
    search stops at its next evaluation or pricing at the latest, never finishes as if nothing
    happened. Exit status 130 for SIGINT, 143 for SIGTERM (128 + the signal number).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.signum is None
        self.signum = signum
        if first:
            raise KeyboardInterrupt

    def check(self) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt

    def wrap(self, fn: Any) -> Any:
        def checked(*a: Any, **k: Any) -> Any:
            self.check()
            out = fn(*a, **k)
            self.check()
            return out

        return checked

    @property
    def name(self) -> str:
        import signal

        return "SIGTERM" if self.signum == signal.SIGTERM else "Ctrl-C"

    @property
    def code(self) -> int:
        return 128 + (self.signum or 2)


def _run_with_progress(run_search: Any, job: Any, out: Path, args: argparse.Namespace, prog: Any, stop: _Stop,
                       **kw: Any) -> Any:
    """``run_search`` with every callback of the progress bar wired in (search and worker share it),
    each one a checkpoint for ``stop``; a stop recorded when the search returns counts as an interrupt."""
    run = run_search(job, out, storage=args.storage, progress=stop.wrap(prog.on_progress),
                     log=stop.wrap(prog.on_log), on_evaluation=stop.wrap(prog.on_evaluation), **kw)
    stop.check()
    return run


def _shown_storage(storage: str) -> str:
    """A storage as messages show it: a database URL with its password masked."""
    from .optuna_search import display_url

    return display_url(storage) if "://" in storage else storage


def _cmd_search(args: argparse.Namespace) -> int:
    from .export import export_result, remove_export
    from .jobs import finished_evaluations, run_search
    from .report import write_search_report

    job, path = _load(args, "search")
    if job.kind == "llm":
        return _cmd_llm(job, path, args)
    if args.storage and job.method not in _takes("storage"):
        from profilers.config import ConfigError

        from .methods import why_not

        raise ConfigError(f"search.--storage must be absent with method {job.method!r} ({why_not('storage')}); "
                          f"got {args.storage!r}.")
    out = Path(args.output or job.output)
    _err(f"sigmastar search: job {job.name!r} ({path}) -> {out}/")
    note = _resume_note(out)
    if note:
        _err(note)
    prog = _progress(job, args)
    prog.show()
    stop = _Stop()
    try:
        with stop:
            run = _run_with_progress(run_search, job, out, args, prog, stop)
    except KeyboardInterrupt:
        prog.close()
        n = finished_evaluations(out)
        import shlex

        again = shlex.join(["sigmastar", "search"] + ([args.job] if args.job else [])
                           + (["--output", args.output] if args.output else [])
                           + (["--storage", _shown_storage(args.storage)] if args.storage else []))
        _err(f"sigmastar search: interrupted ({stop.name}). {n} finished quality evaluation{'s are' if n != 1 else ' is'} saved "
             f"in {out / 'evaluations.jsonl'}" + (" (and the finished trials in the Optuna storage)"
                                                  if job.method in _takes("storage") else "")
             + f"; run the same command to resume: {again}")
        return stop.code
    prog.close()
    if run.resumed:
        _err(f"resumed: reused {run.evaluations_before} finished evaluations, ran "
             f"{run.evaluations_after - run.evaluations_before} new")
    files = write_search_report(run, out)
    print("\n".join(_summary(run.result, files)))
    if run.result.best is not None:  # the chosen model, saved beside the report (optimizer.export)
        print(f"{'model':<20} {export_result(run.result, out / 'best', workload_spec=run.job.workload)}")
    elif remove_export(out / "best"):
        _err(f"sigmastar search: removed {out / 'best'} (the model an earlier run in this folder chose)")
    if run.result.best is None:
        from .result import InfeasibleError

        _err(f"sigmastar search: {InfeasibleError(run.result)}")
        return EXIT_INCOMPLETE if run.result.status == "incomplete" else EXIT_INFEASIBLE
    if run.result.status == "incomplete":
        _err(f"sigmastar search: incomplete: {run.result.message}. The best found is reported, not certified.")
        return EXIT_INCOMPLETE
    return EXIT_OK


def _cmd_worker(args: argparse.Namespace) -> int:
    from profilers.config import ConfigError

    from .jobs import finished_evaluations, run_search

    job, path = _load(args, "search")
    if job.method not in _takes("storage"):
        raise ConfigError(f"job.search.method must be one of {', '.join(map(repr, _takes('storage')))} for a worker "
                          f"(workers share an Optuna study); got {job.method!r}.")
    from .optuna_search import storage_for

    out = Path(args.output or job.output)
    storage = _shown_storage(args.storage)
    if "://" in args.storage:
        storage_for(args.storage, None)  # a missing driver or an unreachable database: exit 2 now, not after the build
    _err(f"sigmastar worker: job {job.name!r} ({path}), study on {storage}, evaluations in {out}/")
    note = _resume_note(out)
    if note:
        _err(note)
    prog = _progress(job, args)
    before = finished_evaluations(out)
    stop = _Stop()
    try:
        with stop:
            run = _run_with_progress(run_search, job, out, args, prog, stop, analyze=False)
    except KeyboardInterrupt:
        prog.close()
        _err(f"sigmastar worker: interrupted ({stop.name}); finished trials are in the study, a trial it was running "
             f"is marked failed and queued again, and {finished_evaluations(out) - before} new evaluations are in "
             f"{out / 'evaluations.jsonl'}")
        return stop.code
    prog.close()
    res = run.result
    print(f"worker done: {run.evaluations_after - before} new quality evaluations here; this worker's best: "
          + (f"{res.best.label} on {res.best.device} ({usd(res.best.cost_usd)})" if res.best else "none"))
    print(f"when every worker is done: sigmastar search {path} --storage {storage} --output {out}")
    return 0


def _cmd_llm(job, path: Path, args: argparse.Namespace) -> int:
    from .jobs import environment
    from .llm_search import run_llm, write_llm_report

    out = Path(args.output or job.output)
    _err(f"sigmastar search: LLM serving job {job.name!r} ({path}) -> {out}/: {job.llm.size:,} configurations")
    res = run_llm(job, log=_err, progress=lambda done, total: _err(f"[llm] priced {done:,}/{total:,}"))
    files = write_llm_report(res, job, out, environment())
    for model, b in sorted(res.best.items()):
        print(f"{model:<12} {b['weights']} weights, {b['kv']} KV, tp {b['tp']}, batch {b['batch']} on {b['device']} "
              f"x {b['replicas']} ({b['ownership']}): ${b['total_usd']:,.2f} (band ${b['band_usd'][0]:,.0f} - "
              f"${b['band_usd'][1]:,.0f}), ${b['usd_per_m_output']:.3f} per M output tokens")
    for model in job.llm.models:
        if model not in {m.lower() for m in res.best} and not any(model in m for m in res.best):
            print(f"{model:<12} no configuration meets the targets and the quality bound")
    print(f"report               {files['report']}")
    return 0 if res.best else 1


def _cmd_whatif(args: argparse.Namespace) -> int:
    from .jobs import environment, run_whatif
    from .report import write_whatif_report

    job, path = _load(args, "whatif")
    out = Path(args.output or job.output)
    _err(f"sigmastar whatif: job {job.name!r} ({path}) -> {out}/")
    res = run_whatif(job, log=(lambda m: _err(m)) if not args.quiet else None)
    files = write_whatif_report(res, job, out, environment())
    for p in res.plans:
        if p["status"] == "ok":
            train = (f"train on {p['train_devices']} x {p['train_device']} ({p['train_layout']})"
                     if p.get("train_device") else "no training")
            print(f"{p['model']:<14} serve on {p['serve_device']} {p['serve_dtype']} x {p['replicas']}, {train}: "
                  f"{usd(p['total_usd'])}")
        else:
            print(f"{p['model']:<14} {p['status']}: {p.get('message', '')}")
    print(f"report: {files['report']}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    """Lay a transformer's training out on each device and price it (rented and owned)."""
    import dataclasses

    from cost_models import PriceBook, Scenario
    from cost_models.scenario import Ownership, TrainingPlan
    from profilers import hardware
    from profilers.config import invalid
    from profilers.parallel import TransformerShape

    from .report import training_table
    from .training_price import price_training
    from .whatif import WhatIf, _config_dict, _model_label

    def ints(field: str, text: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise invalid("plan", field, "comma-separated integers", text) from None

    w = WhatIf(models=(args.model,), devices=tuple(d for d in args.devices.split(",") if d.strip()),
               train_seq_len=args.seq_len, global_batch=args.global_batch,
               train_device_counts=ints("counts", args.counts), train_precision=args.precision)
    if not args.tokens > 0:
        raise invalid("plan", "tokens", "a number > 0 (tokens per training run)", args.tokens)
    model = w.models[0]
    label = _model_label(model)
    shape = TransformerShape.from_hf_config(_config_dict(model), seq_len=w.train_seq_len, name=label)
    sc = Scenario(name="plan", training=TrainingPlan(samples_per_epoch=args.tokens, unit="tokens",
                                                     tokens_per_sample=w.train_seq_len),
                  ownership=Ownership(mode="own" if args.own else "rent", rent_tier=args.rent_tier))
    book = PriceBook.default()
    log = None if args.quiet else _err
    rows = []
    for d in w.device_list():
        spec = hardware.get(d)
        rows.append(price_training(shape, spec, w.train_device_counts, w.global_batch, sc, book,
                                   precision=w.train_precision if spec.supports(w.train_precision) else None,
                                   label=label, log=log))
    print(f"{label}: {args.tokens:,.0f} tokens, {w.global_batch} x {w.train_seq_len}-token sequences per step, "
          f"over {', '.join(map(str, w.train_device_counts))} devices; {'owned' if args.own else args.rent_tier}; "
          "the cheapest fitting layout per device (profilers.parallel.plan, training calibration)")
    print(training_table(rows))
    ok = [r for r in rows if r["status"] == "ok"]
    if ok:
        best = min(ok, key=lambda r: r["total_usd"])
        print(f"cheapest: {best['devices']} x {best['device']} ({best['layout']}), {best['gpu_hours_paid']:,.0f} "
              f"GPU-hours paid, {best['wall_days_per_run']:.1f} days, {usd(best['total_usd'])}")
    if args.json:
        out = [{k: (dataclasses.asdict(v) if k == "config" else v) for k, v in r.items() if k not in ("breakdown", "figures")}
               for r in rows]
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0 if ok else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import rerender

    files = rerender(args.run_dir)
    print(f"wrote {', '.join(str(p) for k, p in files.items() if k not in ('results', 'run', 'whatif'))}")
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
    pr.add_argument("--project-dtype", help="cast every op to this dtype in the projections (a what-if; default: "
                    "each op at the dtype it computes in)")
    pr.add_argument("--runtime", choices=("eager", "fused"), default="eager",
                    help="how the kernels run on a GPU: eager (PyTorch, the default) or fused (TensorRT, "
                    "torch.compile, FlashAttention)")
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

    se = sub.add_parser("search", help="run a search job (default: the bundled digits job)",
                        description="Run a search job: build the workload, search the space for the cheapest "
                        "strategy at the quality target, and write results.json, trials.csv, report.md and plots "
                        "to the output folder. Ctrl-C (or SIGTERM) stops it and keeps every finished evaluation; the same "
                        "command resumes. Without JOB, runs the bundled digits job (examples/digits.toml). Exit status: 0 "
                        "a strategy was found, 1 none meets the constraints (the report says why), 2 bad input, "
                        "3 incomplete (failed evaluations could change the answer; run again to retry them), "
                        "4 error (an output folder or file that cannot be used: unwritable, full, busy; or the "
                        "workload's evaluate() raised: its traceback is printed), "
                        "130 interrupted by Ctrl-C, 143 stopped by SIGTERM. " + _methods_help())
    se.add_argument("job", nargs="?", help="job file (TOML); see examples/*.toml")
    se.add_argument("--output", help="output folder (default: the job's `output`, else runs/<name>)")
    se.add_argument("--storage", help="Optuna storage URL or journal path (overrides job.search.storage)")
    se.add_argument("--verbose", action="store_true", help="print every evaluation and log message")
    se.add_argument("--quiet", action="store_true", help="no progress bar")
    se.set_defaults(func=_cmd_search)

    wi = sub.add_parser("whatif", help="price transformer configs across devices (default: Llama-2 7B/70B)",
                        description="Run a what-if job (kind = \"whatif\"): analyze each model config without "
                        "weights, project serving onto each device, plan training layouts, price both with the "
                        "scenario, and write report.md, whatif.json, serving.csv, training.csv and a plot. "
                        "Without JOB, runs the bundled Llama-2-7B/70B what-if (examples/llama_whatif.toml).")
    wi.add_argument("job", nargs="?", help="job file (TOML) with kind = \"whatif\"")
    wi.add_argument("--output", help="output folder (default: the job's `output`, else runs/<name>)")
    wi.add_argument("--quiet", action="store_true", help="no progress messages")
    wi.set_defaults(func=_cmd_whatif)

    pl = sub.add_parser("plan", help="price a transformer's training layouts across devices",
                        description="Lay out a decoder transformer's training on each device type (data, tensor "
                        "and pipeline parallel, ZeRO, recomputation; profilers.parallel.plan with the training "
                        "calibration), take the cheapest layout that fits, and price the run: GPU-hours ideal and "
                        "paid (failures, restarts, checkpoints and evaluation pauses), days, energy, dollars rented "
                        "and owned. Exit status: 0 some device trains it, 1 none does, 2 bad input.")
    pl.add_argument("model", help="a bundled config (llama-2-7b, llama-2-70b, gpt2, ...) or a config.json path")
    pl.add_argument("--devices", default="A100-80GB,H100-SXM", help="comma-separated catalog GPUs "
                    "(default: A100-80GB,H100-SXM)")
    pl.add_argument("--counts", default="64,128,256", help="device counts to try (default: 64,128,256)")
    pl.add_argument("--global-batch", type=int, default=1024, help="sequences per optimizer step (default 1024)")
    pl.add_argument("--seq-len", type=int, default=4096, help="tokens per sequence (default 4096)")
    pl.add_argument("--tokens", type=float, default=1e11, help="tokens per training run (default 1e11)")
    pl.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp32", "fp8"),
                    help="training precision (fp8: fp8 GEMMs where the device has them, else bf16)")
    pl.add_argument("--own", action="store_true", help="price as owned hardware (default: rented)")
    pl.add_argument("--rent-tier", default="on_demand", choices=("on_demand", "spot", "reserved"))
    pl.add_argument("--json", help="also write the rows to this JSON file")
    pl.add_argument("--quiet", action="store_true", help="no progress messages")
    pl.set_defaults(func=_cmd_plan)

    rp = sub.add_parser("report", help="render a run folder's report again",
                        description="Read results.json (or whatif.json) and run.json of a finished run and write "
                        "report.md, the CSV files and the plots again.")
    rp.add_argument("run_dir", help="a folder written by `sigmastar search` or `sigmastar whatif`")
    rp.set_defaults(func=_cmd_report)

    wo = sub.add_parser("worker", help="join an Optuna search on a shared storage",
                        description="Run trials of a job's Optuna study (method tpe, random or nsga2) on a shared "
                        "storage; start as many workers as you like, on any machines that reach the storage. "
                        "The study stops at the job's n_trials. Then `sigmastar search JOB --storage URL` writes "
                        "the report (give the workers and the search one shared --output folder so it sees "
                        "every evaluation).")
    wo.add_argument("job", help="job file (TOML)")
    wo.add_argument("--storage", required=True, help="Optuna storage: an RDB URL (postgresql://..., "
                    "sqlite:///file.db) or a journal file path")
    wo.add_argument("--output", help="folder for this worker's evaluations and model cache (default: the job's)")
    wo.add_argument("--verbose", action="store_true", help="print every evaluation and log message")
    wo.add_argument("--quiet", action="store_true", help="no progress bar")
    wo.set_defaults(func=_cmd_worker)
    from .export import add_export_parser

    add_export_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from profilers.config import SigmastarError
    from profilers.quiet import quiet_libraries

    from .durable import OutputBusy, OutputError
    from .evaluate import EvaluationStopped

    quiet_libraries()  # already done on import of profilers; here too, before any command runs
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OutputError, OutputBusy) as e:
        print(f"sigmastar {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except EvaluationStopped as e:  # the workload's evaluate() raised: its traceback, then what was kept
        import traceback

        cause = e.__cause__ or e
        traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
        print(f"sigmastar {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except SigmastarError as e:
        print(f"sigmastar {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # a file the command needed, not wrapped where it was used
        where = f"{e.filename}: " if e.filename else ""
        print(f"sigmastar {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"sigmastar {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
