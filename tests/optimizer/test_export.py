"""The chosen model, saved: ``SearchResult.export`` and ``sigmastar export``, through the public API.

Each search is one variant on the digits CNN (one device, one batch), so the file stays quick. The
README's code blocks are run as written: they are the documented way to load an export.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

from optimizer import SearchSpace, search
from optimizer.cli import main
from profilers.config import ConfigError, from_json_dict, loads
from profilers.flops import cast_inputs
from profilers.techniques import TechniqueCache, apply, quality

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(devices=("T4",), **knobs) -> SearchSpace:
    return SearchSpace(**knobs, devices=devices, batch_sizes=(1024,))


@pytest.fixture(scope="module")
def pruned_int8(wl, cost_model, tmp_path_factory):
    """A search whose one variant (so its best) is structurally pruned and int8-quantized, exported."""
    out = tmp_path_factory.mktemp("pruned")
    res = search(wl, tiny(prune_amount=(0.5,), quantize=("int8_dynamic",), finetune_steps=30), cost_model,
                 min_quality=0.5, method="exhaustive", output_dir=out, profile_time_cap_s=0.1)
    return res, out, res.export(out / "best")


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def readme_blocks(folder: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S)


def run_block(code: str) -> dict:
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    return scope


def measured_model(wl, res, out):
    """The model the search measured: its entry in the run's model cache (a hit, nothing retrained)."""
    cache = TechniqueCache(out / "models")
    model = apply(wl.build(), res.best.techniques, wl, cache=cache, seed=0).eval()
    assert cache.hits == 1 and cache.misses == 0
    return model


def check_round_trip(wl, res, out, folder, dtype=torch.float32):
    """The README's recipes load the model: the same outputs as the model the search measured, and its
    quality measured again equals the manifest's (and the search's)."""
    ref = measured_model(wl, res, out)
    state_dict_recipe, program_recipe = readme_blocks(folder)
    loaded = run_block(state_dict_recipe)["model"]
    program = run_block(program_recipe)["model"]
    with torch.no_grad():
        for b in (1, 5):  # the torch.export program takes any batch (traced at 2, the batch dynamic)
            x = cast_inputs(wl.inputs(b), None, dtype)
            assert torch.equal(loaded(x), ref(x)) and torch.equal(program(x), ref(x))
    m = manifest_of(folder)
    assert quality(loaded, wl) == m["quality"]["value"] == res.best.quality
    assert m["quality"]["source"] == "measured"
    assert m["model"]["weights_from"].startswith(f"the search's model cache ({out / 'models'})")
    return loaded


def test_export_after_a_search_round_trips_a_pruned_quantized_model(wl, pruned_int8):
    res, out, folder = pruned_int8
    assert folder == out / "best"
    assert [type(t).__name__ for t in res.best.techniques] == ["Prune", "Quantize"]
    loaded = check_round_trip(wl, res, out, folder)
    # a different architecture (pruned channels) and numerics (torchao int8 weights) from wl.build()
    assert loaded.features[0].out_channels == 8 and wl.build().features[0].out_channels == 16
    assert "Int8" in type(loaded.classifier[1].weight).__name__
    with pytest.raises(RuntimeError, match="size mismatch"):
        wl.build().load_state_dict(torch.load(folder / "model.pt", weights_only=True))


def test_a_distilled_bf16_best_loads_too(wl, cost_model, tmp_path):
    res = search(wl, tiny(("L4",), distill_width=(0.5,), quantize=("bf16",), distill_steps=30), cost_model,
                 min_quality=0.1, method="exhaustive", output_dir=tmp_path, profile_time_cap_s=0.1)  # T4: no bf16
    assert [type(t).__name__ for t in res.best.techniques] == ["Distill", "Quantize"]
    folder = res.export(tmp_path / "chosen")
    assert manifest_of(folder)["model"]["input_dtype"] == "torch.bfloat16"
    assert "floating tensors in torch.bfloat16" in (folder / "README.md").read_text()
    check_round_trip(wl, res, tmp_path, folder, dtype=torch.bfloat16)


def test_the_manifest_says_what_was_chosen_measured_and_priced(pruned_int8):
    res, _, folder = pruned_int8
    m = manifest_of(folder)
    b = res.best
    assert m["type"] == "sigmastar.export" and m["version"] == 1
    # sigma: the whole strategy round-trips, techniques JSON-tagged
    assert from_json_dict(m["strategy"]) == b
    assert [t["type"] for t in m["strategy"]["techniques"]] == ["prune", "quantize"]
    assert m["strategy"]["variant"] == b.variant and m["strategy"]["label"] == b.label
    assert m["quality"] == {"value": b.quality, "source": "measured", "metric": "top-1 accuracy (held-out 25 % of "
                            "sklearn digits)", "target": ">= 0.5"}
    assert m["cost"]["total_usd"] == b.cost_usd and m["cost"]["breakdown_usd"] == b.cost_breakdown
    assert m["cost"]["band_usd"] == list(b.cost_band_usd)
    assert m["deployment"] == {"device": "T4", "batch_size": 1024, "replicas": b.replicas, "pool": {}}
    assert m["provenance"] == list(b.provenance) and m["provenance"][0].startswith("projected for T4")
    assert m["search"] == {"method": "exhaustive", "status": res.status, "message": res.message, "seed": 0}
    assert m["workload"] == {"name": "digits-cnn", "spec": "digits", "quality_metric": m["quality"]["metric"],
                             "higher_is_better": True}
    v = m["library_versions"]
    assert v["torch"] == torch.__version__ and set(v) == {"torch", "torchao", "sigmastar", "python"}
    written = dt.datetime.fromisoformat(m["written"])
    assert abs((dt.datetime.now(dt.timezone.utc) - written).total_seconds()) < 3600
    assert m["model"]["class"] == "profilers.workloads.digits.DigitsCNN" and m["model"]["parameters"] > 0
    assert [r["optimizer_steps"] for r in m["model"]["applied"]] == [30, 0]  # what building it took
    assert m["torch_export"]["available"] and m["torch_export"]["batch"] == "dynamic"
    # every file, with its checksum; the manifest itself is written last
    assert set(m["files"]) == {"model.pt", "model.pt2", "README.md"}
    for name, f in m["files"].items():
        data = (folder / name).read_bytes()
        assert f == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "manifest.json", "model.pt", "model.pt2"]


def test_when_torch_export_fails_the_manifest_and_readme_say_why(wl, pruned_int8, tmp_path, monkeypatch):
    import shutil

    res, out, folder = pruned_int8
    again = tmp_path / "again"
    shutil.copytree(folder, again)  # an earlier export's model.pt2 must not survive beside new weights

    def refuse(*a, **k):
        raise RuntimeError("data-dependent control flow in forward")

    monkeypatch.setattr(torch.export, "export", refuse)
    res.export(again)
    m = manifest_of(again)
    te = m["torch_export"]
    assert te["available"] is False
    assert te["reason"] == ("torch.export.export failed: dynamic batch: RuntimeError: data-dependent control flow in "
                            "forward; static batch 1024: RuntimeError: data-dependent control flow in forward")
    assert not (again / "model.pt2").exists() and set(m["files"]) == {"model.pt", "README.md"}
    readme = (again / "README.md").read_text()
    assert f"Not available: {te['reason']}" in readme
    blocks = readme_blocks(again)
    assert len(blocks) == 1 and str(again.resolve()) in blocks[0]
    x = wl.inputs(4)
    with torch.no_grad():
        assert torch.equal(run_block(blocks[0])["model"](x), measured_model(wl, res, out)(x))


def test_a_result_loaded_from_json_needs_its_workload(wl, pruned_int8, tmp_path):
    res, out, _ = pruned_int8
    loaded = loads(res.to_json())
    assert loaded.source is None
    with pytest.raises(ConfigError, match=re.escape(
            "export_result.workload must be a profilers.Workload (a result loaded from JSON does not carry its "
            "search's workload: pass workload=..., or run `sigmastar export RUN_DIR`); got None.")):
        loaded.export(tmp_path / "x")
    # given the workload and the run's model cache, it exports the measured model (nothing retrained)
    folder = loaded.export(tmp_path / "x", workload=wl, cache_dir=out / "models")
    m = manifest_of(folder)
    assert m["model"]["weights_from"].startswith("the search's model cache")
    assert m["files"]["model.pt"] == manifest_of(out / "best")["files"]["model.pt"]  # the very same bytes
    # without the cache it trains the model again, and says so
    folder = loaded.export(tmp_path / "y", workload=wl)
    assert manifest_of(folder)["model"]["weights_from"] == ("trained here with seed 0 (no model cache given): "
                                                            "profilers.techniques.apply")


def test_no_best_or_a_run_folder_as_target_is_a_clear_error(pruned_int8, tmp_path):
    res, out, _ = pruned_int8
    none = dataclasses.replace(res, best=None, status="infeasible", message="no variant meets quality >= 0.99")
    with pytest.raises(ConfigError, match=re.escape(
            "export_result.result.best must be a chosen strategy (this search found none that meets the constraints: "
            "infeasible: no variant meets quality >= 0.99); got None.")):
        none.export(tmp_path / "x")
    with pytest.raises(ConfigError, match=re.escape(
            f"export_result.path must be a folder of its own (e.g. RUN_DIR/best), not a run folder; got '{out}'.")):
        res.export(out)
    assert not (tmp_path / "x").exists()


JOB = """
name = "tiny"
workload = "digits"
[space]
prune_amount = [0.5]
finetune_steps = 30
devices = ["T4"]
batch_sizes = [1024]
[constraints]
min_quality = 0.5
[search]
method = "exhaustive"
profile_time_cap_s = 0.1
[scenario.serving]
avg_requests_per_s = 50_000
peak_requests_per_s = 100_000
samples_per_request = 100
latency_slo_s = 0.05
[scenario.training]
samples_per_epoch = 1347
epochs = 15
"""


def cli(*argv: str) -> tuple[int, str, str]:
    o, e = io.StringIO(), io.StringIO()
    with redirect_stdout(o), redirect_stderr(e):
        rc = main(list(argv))
    return rc, o.getvalue(), e.getvalue()


def test_sigmastar_search_then_export(wl, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    job, out = tmp_path / "job.toml", tmp_path / "run"
    job.write_text(JOB)
    rc, stdout, stderr = cli("search", str(job), "--output", str(out))
    assert rc == 0, stderr
    # the search saves the chosen model beside its report, and says where
    assert f"model                {out / 'best'}\n" in stdout
    first = manifest_of(out / "best")
    assert first["strategy"]["label"] == "prune 50%" and first["workload"]["spec"] == "digits"

    rc, stdout, stderr = cli("export", str(out), "--to", str(tmp_path / "exported"))
    assert rc == 0, stderr
    folder = tmp_path / "exported"
    m = manifest_of(folder)
    assert stdout.splitlines() == [
        f"model                {folder}", "strategy             prune 50%",
        f"weights              the search's model cache ({out / 'models'}): the model the search measured, not "
        "trained again", f"torch.export         {folder / 'model.pt2'} (batch dynamic)"]
    assert m["strategy"] == first["strategy"] and m["files"]["model.pt"] == first["files"]["model.pt"]
    res = loads((out / "results.json").read_text())
    loaded = run_block(readme_blocks(folder)[0])["model"]
    assert quality(loaded, wl) == m["quality"]["value"] == res.best.quality
    # the default target is RUN_DIR/best
    rc, stdout, _ = cli("export", str(out))
    assert rc == 0 and stdout.startswith(f"model                {out / 'best'}\n")

    # the same search with a target nothing meets: the earlier run's model is not left as the chosen one,
    # and a run that chose nothing has nothing to export (exit 1, as search's "no feasible strategy")
    (out / "best" / "notes.txt").write_text("mine")  # only an export's own files are removed
    job.write_text(JOB.replace("min_quality = 0.5", "min_quality = 0.999"))
    rc, stdout, stderr = cli("search", str(job), "--output", str(out))
    assert rc == 1 and "model   " not in stdout
    assert f"sigmastar search: removed {out / 'best'} (the model an earlier run in this folder chose)" in stderr
    assert [p.name for p in (out / "best").iterdir()] == ["notes.txt"]
    rc, _, stderr = cli("export", str(out))
    assert rc == 1 and stderr.startswith("sigmastar export: nothing to export: no strategy meets quality >= 0.999")


def test_sigmastar_export_of_a_folder_that_is_no_search_run(tmp_path):
    rc, _, stderr = cli("export", str(tmp_path))
    assert rc == 2
    assert stderr == ("sigmastar export: error: export.run_dir must be a run folder of `sigmastar search` holding "
                      "results.json and run.json (LLM serving and what-if runs choose no model weights; a search run "
                      f"from Python exports with result.export(path)); got '{tmp_path}'.\n")
