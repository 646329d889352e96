"""The chosen model, saved: :func:`export_result` (``SearchResult.export``) and ``sigmastar export``.

An export folder holds::

    model.pt        the chosen model's state_dict (torch.save; loads with weights_only=True)
    model.pt2       a torch.export program of it (batch dimension dynamic where it traces so), when
                    torch.export works on the model; otherwise manifest.json says why it is absent
    README.md       how to load it (code that runs as written for a built-in or importable workload)
    manifest.json   sigma (variant, label, techniques), measured quality and its source, the cost
                    breakdown and total, the deployment, provenance, library versions, the workload,
                    the date, where the weights came from, and every file with its SHA-256

The model is rebuilt as the search built it, ``profilers.techniques.apply(workload.build(),
best.techniques, workload, seed=seed)``, through the search's checksummed model cache
(``<output_dir>/models``), so exporting after a search does not train again (the manifest says
whether the weights came from that cache or were trained here). A quantized, pruned or distilled
model has another architecture than ``workload.build()``: it loads by rebuilding the architecture
with ``apply(..., structure_only=True)`` (no training) and loading the state_dict into it.
Every file is written atomically; manifest.json last, so a folder with a manifest is complete.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import io
import json
import platform
from pathlib import Path
from typing import Any

from profilers.config import invalid, to_json_dict

__all__ = ["EXPORT_SCHEMA", "EXPORT_VERSION", "export_result", "export_run", "chosen_model", "export_program",
           "manifest_data", "readme_text", "remove_export", "add_export_parser"]

EXPORT_SCHEMA = "sigmastar.export"
EXPORT_VERSION = 1
MODEL_FILE, PROGRAM_FILE, README_FILE, MANIFEST_FILE = "model.pt", "model.pt2", "README.md", "manifest.json"


# ----------------------------------------------------------------------------------------------
# the model, rebuilt as the search built it
# ----------------------------------------------------------------------------------------------
def chosen_model(workload: Any, techniques: Any, *, seed: int = 0, cache_dir: str | Path | None = None
                 ) -> tuple[Any, str]:
    """``(model, weights_from)``: the deployed model of a strategy with ``techniques`` (in eval mode),
    built as :meth:`optimizer.evaluate.Evaluator.quality` builds it, through the model cache in
    ``cache_dir`` (a search's ``<output_dir>/models``); ``weights_from`` says whether the weights came
    from that cache or were trained here."""
    from profilers.techniques import TechniqueCache, apply

    cache = TechniqueCache(cache_dir)
    model = apply(workload.build(), list(techniques), workload, cache=cache, seed=seed).eval()
    if not techniques:
        how = "the unmodified model (workload.build()): no technique to apply"
    elif cache.misses == 0 and cache.hits > 0:
        how = f"the search's model cache ({cache_dir}): the model the search measured, not trained again"
    else:
        where = f"no cached copy in {cache_dir}" if cache_dir is not None else "no model cache given"
        how = f"trained here with seed {seed} ({where}): profilers.techniques.apply"
    for p in cache.problems:
        how += f"; {p}"
    return model, how


def _example_inputs(model: Any, workload: Any, batch: int) -> Any:
    """``workload.inputs(batch)`` on the model's device, floating tensors in the model's dtype."""
    from profilers.flops import cast_inputs
    from profilers.measurement import model_dtype

    p = next(iter(model.parameters()), None)
    return cast_inputs(workload.inputs(batch), None if p is None else p.device, model_dtype(model)[1])


def _call_args(inputs: Any) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of ``model(...)`` for a tensor, a tuple of positional inputs or a dict of kwargs
    (as :func:`profilers.flops.call_model` calls it)."""
    if isinstance(inputs, dict):
        return (), dict(inputs)
    return (tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)), {}


def _batch_dynamic(args: tuple, kwargs: dict) -> Any:
    """``dynamic_shapes`` for torch.export: dimension 0 of every tensor input is one dynamic batch."""
    import torch
    from torch.utils._pytree import tree_map

    batch = torch.export.Dim("batch")

    def spec(t: Any) -> Any:
        return {0: batch} if isinstance(t, torch.Tensor) and t.ndim >= 1 else None

    return {k: tree_map(spec, v) for k, v in kwargs.items()} if kwargs else tuple(tree_map(spec, a) for a in args)


def export_program(model: Any, workload: Any, batch_size: int) -> tuple[bytes | None, dict]:
    """``(bytes of torch.export.save, info)``: ``model`` exported with a dynamic batch dimension (traced
    at batch 2) or, when that fails, at the static ``batch_size``; ``(None, info)`` with the exception
    messages in ``info["reason"]`` when neither works."""
    import torch

    errors = []
    for dynamic in (True, False):
        b = 2 if dynamic else batch_size
        try:
            args, kwargs = _call_args(_example_inputs(model, workload, b))
            with torch.no_grad():
                program = torch.export.export(model, args, kwargs or None,
                                              dynamic_shapes=_batch_dynamic(args, kwargs) if dynamic else None)
            buf = io.BytesIO()
            torch.export.save(program, buf)
        except Exception as e:  # noqa: BLE001 - recorded in the manifest, never silently dropped
            errors.append(f"{'dynamic batch' if dynamic else f'static batch {b}'}: {type(e).__name__}: {e}")
            continue
        return buf.getvalue(), {"available": True, "file": PROGRAM_FILE, "example_batch": b,
                                "batch": "dynamic" if dynamic else f"static {b}", "notes": errors}
    return None, {"available": False, "reason": "torch.export.export failed: " + "; ".join(errors)}


# ----------------------------------------------------------------------------------------------
# the folder
# ----------------------------------------------------------------------------------------------
def _builtin_name(workload: Any) -> str:
    """The name of the built-in workload (:mod:`profilers.workloads`) whose model factory ``workload``
    uses ("" when none): how README.md builds it when the caller gives no ``workload_spec``."""
    from profilers import workloads

    pkg, _, leaf = (getattr(workload.model, "__module__", None) or "").rpartition(".")
    return leaf if pkg == "profilers.workloads" and leaf in workloads.names() else ""


def _workload_code(name: str, spec: str | None) -> tuple[list[str], str]:
    """(import lines, the line that builds ``wl``) for the README: a built-in name or an importable
    ``package.module:function``; anything else is left for the reader to fill in."""
    from profilers import workloads

    if spec and ":" not in spec and spec in workloads.names():
        return ["from profilers import workloads"], f"wl = workloads.get({spec!r})"
    mod, _, fn = (spec or "").rpartition(":")
    if mod and not mod.endswith(".py") and fn.isidentifier():
        return [f"from {mod} import {fn}"], f"wl = {fn}()"
    how = f" (job.workload = {spec!r})" if spec else ""
    return [], f"wl = ...  # build the workload {name!r} here, as the search did{how}"


def readme_text(manifest: dict, folder: Path) -> str:
    """README.md of an export folder: what it holds and how to load it (rendering only)."""
    from profilers.render import fmt_num

    s, q, d = manifest["strategy"], manifest["quality"], manifest["deployment"]
    imports, build = _workload_code(manifest["workload"]["name"], manifest["workload"]["spec"])
    te = manifest["torch_export"]
    lines = [f"# {s['label']}: the model sigmastar chose", "",
             f"Workload `{manifest['workload']['name']}`; variant `{s['variant']}`; quality "
             f"{fmt_num(q['value'], '.4f')} ({q['metric']}, {q['source']}); served on {d['device']} x "
             f"{d['replicas']} at batch {d['batch_size']} for ${manifest['cost']['total_usd']:,.2f} in total. "
             f"Everything else is in `{MANIFEST_FILE}`.", "",
             "## Load the weights", "",
             f"`{MODEL_FILE}` is the state_dict. The techniques change the architecture and numerics (pruned "
             "channels, a distilled student, quantized tensors), so it loads into the architecture rebuilt by "
             "`apply(..., structure_only=True)` (no training runs), not into `wl.build()`:", "",
             "```python", "import json", "from pathlib import Path", "", "import torch", "", *imports,
             "from profilers.techniques import apply, from_json", "",
             f"folder = Path({str(folder.resolve())!r})", build,
             f"manifest = json.loads((folder / {MANIFEST_FILE!r}).read_text())",
             'techniques = [from_json(t) for t in manifest["strategy"]["techniques"]]',
             "model = apply(wl.build(), techniques, wl, structure_only=True, cache=False)",
             f"model.load_state_dict(torch.load(folder / {MODEL_FILE!r}, weights_only=True))",
             "model.eval()", "```", "",
             f"Inputs are `wl.inputs(batch)`, floating tensors in {manifest['model']['input_dtype']}.", "",
             "## The torch.export program", ""]
    if te["available"]:
        lines += [f"`{PROGRAM_FILE}` needs torch (and torchao for a torchao-quantized model), not sigmastar or the "
                  f"workload's code (batch: {te['batch']}):", "",
                  "```python", "import torch", "",
                  f"program = torch.export.load({str((folder / PROGRAM_FILE).resolve())!r})",
                  "model = program.module()", "```", ""]
    else:
        lines += [f"Not available: {te['reason']}", ""]
    lines += ["## Where the weights came from", "", manifest["model"]["weights_from"], ""]
    return "\n".join(lines)


def _sha256(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def manifest_data(result: Any, workload: Any, workload_spec: str, seed: int, model: Any, weights_from: str,
                  torch_export: dict) -> dict:
    """manifest.json (without its ``files``) of the export of ``result.best``, built as ``model``."""
    from profilers.measurement import model_dtype
    from profilers.techniques.base import records
    from profilers.techniques.cache import library_versions

    best = result.best
    return {
        "type": EXPORT_SCHEMA, "version": EXPORT_VERSION,
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "workload": {"name": workload.name, "spec": workload_spec or _builtin_name(workload) or None,
                     "quality_metric": workload.quality_metric, "higher_is_better": workload.higher_is_better},
        "strategy": to_json_dict(best),
        "quality": {"value": best.quality, "source": best.quality_source,
                    "metric": workload.quality_metric or "quality",
                    "target": f"{result.target_op} {result.min_quality:g}"},
        "cost": {"total_usd": best.cost_usd, "breakdown_usd": dict(best.cost_breakdown),
                 "band_usd": list(best.cost_band_usd) if best.cost_band_usd is not None else None},
        "deployment": {"device": best.device, "batch_size": best.batch_size, "replicas": best.replicas,
                       "pool": dict(best.pool)},
        "provenance": list(best.provenance),
        "search": {"method": result.method, "status": result.status, "message": result.message, "seed": seed},
        "model": {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "input_dtype": str(model_dtype(model)[1]), "weights_from": weights_from,
                  "applied": [to_json_dict(r) for r in records(model)]},
        "torch_export": torch_export,
        "library_versions": {**library_versions(), "python": platform.python_version()},
    }


def export_result(result: Any, path: str | Path, *, workload: Any = None, seed: int | None = None,
                  cache_dir: str | Path | None = None, workload_spec: str = "") -> Path:
    """Write the chosen model of ``result`` (its ``best``) into the folder ``path``; returns ``path``.

    ``workload``, ``seed`` and ``cache_dir`` default to the search's (``result.source``: its workload,
    seed and ``<output_dir>/models``); a result loaded from JSON needs ``workload`` (and the run's
    ``cache_dir`` and ``seed``, or the model is trained again). ``workload_spec``: how README.md builds
    the workload (a built-in name or ``package.module:function``, as a job's ``workload``; default: the
    built-in workload whose model factory it uses, else a line for the reader to fill in).

    Writes model.pt, model.pt2 (when torch.export works; an earlier one is removed when it does not),
    README.md and manifest.json (see the module docstring); an earlier manifest.json is removed first.
    Raises :class:`profilers.config.ConfigError` when the result has no best strategy, no workload is
    known, or ``path`` is a run folder.
    """
    from profilers import Workload

    from .durable import atomic_write_bytes, atomic_write_text, check_writable

    best, src = result.best, result.source
    if best is None:
        raise invalid("export_result", "result.best", "a chosen strategy (this search found none that meets the "
                      f"constraints: {result.status}: {result.message})", None)
    workload = workload if workload is not None else getattr(src, "workload", None)
    if not isinstance(workload, Workload):
        raise invalid("export_result", "workload", "a profilers.Workload (a result loaded from JSON does not carry "
                      "its search's workload: pass workload=..., or run `sigmastar export RUN_DIR`)",
                      None if workload is None else type(workload).__name__)
    seed = seed if seed is not None else getattr(src, "seed", 0)
    if cache_dir is None and src is not None and src.output_dir is not None:
        cache_dir = Path(src.output_dir) / "models"
    folder = Path(path)
    if (folder / "results.json").exists() or (folder / "run.json").exists():
        raise invalid("export_result", "path", "a folder of its own (e.g. RUN_DIR/best), not a run folder",
                      str(folder))
    check_writable(folder)
    (folder / MANIFEST_FILE).unlink(missing_ok=True)  # a folder with a manifest is a complete export

    import torch

    model, weights_from = chosen_model(workload, best.techniques, seed=seed, cache_dir=cache_dir)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(folder / MODEL_FILE, buf.getvalue())
    files = {MODEL_FILE: _sha256(buf.getvalue())}
    program, te = export_program(model, workload, best.batch_size or workload.batch_size)
    if program is not None:
        atomic_write_bytes(folder / PROGRAM_FILE, program)
        files[PROGRAM_FILE] = _sha256(program)
    else:
        (folder / PROGRAM_FILE).unlink(missing_ok=True)  # never an earlier export's program beside these weights
    manifest = manifest_data(result, workload, workload_spec, seed, model, weights_from, te)
    readme = readme_text(manifest, folder).encode()
    atomic_write_bytes(folder / README_FILE, readme)
    files[README_FILE] = _sha256(readme)
    manifest["files"] = files
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=1, default=str) + "\n")
    return folder


def remove_export(path: str | Path) -> bool:
    """Remove an earlier export from the folder ``path`` (a run whose new result chose nothing must not
    keep the model an earlier run chose): only a folder whose manifest.json is an export's, and only
    the files an export writes; the folder itself when nothing else is left. True when it removed one."""
    folder = Path(path)
    try:
        if json.loads((folder / MANIFEST_FILE).read_text()).get("type") != EXPORT_SCHEMA:
            return False
    except (OSError, ValueError, AttributeError):
        return False
    for name in (MANIFEST_FILE, MODEL_FILE, PROGRAM_FILE, README_FILE):  # the manifest first: never half an export
        (folder / name).unlink(missing_ok=True)
    if not any(folder.iterdir()):
        folder.rmdir()
    return True


# ----------------------------------------------------------------------------------------------
# sigmastar export RUN_DIR
# ----------------------------------------------------------------------------------------------
def export_run(run_dir: str | Path, to: str | Path | None = None) -> tuple[Any, Path | None]:
    """``(result, folder)``: the chosen model of the search run in ``run_dir`` exported to ``to``
    (default ``RUN_DIR/best``), its workload rebuilt from the run's job (run.json), its weights read
    from the run's model cache. ``folder`` is None when the run has no best strategy."""
    from profilers.config import loads

    from .report import load_run

    run_dir = Path(run_dir)
    if not all((run_dir / f).is_file() for f in ("results.json", "run.json")):
        raise invalid("export", "run_dir", "a run folder of `sigmastar search` holding results.json and run.json "
                      "(LLM serving and what-if runs choose no model weights; a search run from Python exports "
                      "with result.export(path))", str(run_dir))
    job = load_run(run_dir)["job"]
    result = loads((run_dir / "results.json").read_text())
    if result.best is None:
        return result, None
    out = export_result(result, Path(to) if to is not None else run_dir / "best", workload=job.build_workload(),
                        seed=job.seed, cache_dir=run_dir / "models", workload_spec=job.workload)
    return result, out


def _cmd_export(args: argparse.Namespace) -> int:
    import sys

    from .cli import EXIT_INFEASIBLE, EXIT_OK
    from .result import InfeasibleError

    result, out = export_run(args.run_dir, args.to)
    if out is None:
        print(f"sigmastar export: nothing to export: {InfeasibleError(result)}", file=sys.stderr)
        return EXIT_INFEASIBLE
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    print(f"{'model':<20} {out}")
    print(f"{'strategy':<20} {result.best.label}")
    print(f"{'weights':<20} {manifest['model']['weights_from']}")
    te = manifest["torch_export"]
    print(f"{'torch.export':<20} " + (f"{out / PROGRAM_FILE} (batch {te['batch']})" if te["available"]
                                     else f"not available: {te['reason']}"))
    return EXIT_OK


def add_export_parser(subparsers: Any) -> None:
    """The ``export`` sub-command on ``sigmastar``'s sub-parsers."""
    ex = subparsers.add_parser(
        "export", help="save a search run's chosen model (weights, torch.export program, manifest)",
        description="Rebuild a finished search's chosen model from its run folder (the workload from the job in "
        "run.json, the weights from the run's model cache, so nothing trains again) and write model.pt (state_dict), "
        "model.pt2 (torch.export, when it works; otherwise the manifest says why), manifest.json (sigma, measured "
        "quality, cost breakdown, deployment, provenance, library versions, file checksums) and README.md (how to "
        "load it). Exit status: 0 exported, 1 the run found no strategy to export, 2 bad input (not a search run "
        "folder), 4 error (a folder or file that cannot be used).")
    ex.add_argument("run_dir", help="a folder written by `sigmastar search`")
    ex.add_argument("--to", metavar="PATH", help="folder to write (default: RUN_DIR/best)")
    ex.set_defaults(func=_cmd_export)
