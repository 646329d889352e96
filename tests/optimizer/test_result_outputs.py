"""What a search from Python shows and writes, and that it is as quiet as the CLI.

``repr(res)`` is a short summary; ``res.report(dir)`` writes the run folder ``sigmastar search``
writes, from the search's own record (``res.source``); importing the packages and running a small
search print nothing on stderr: no kineto trace lines, no torchao or torch notices, no warnings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from optimizer import SearchSpace, search
from profilers.config import ConfigError, loads

#: at 4096 a batch, pruning halves the T4s serving the model: it pays for its engineering hours
SPACE = SearchSpace(prune_amount=(0.0, 0.5), quantize=("none",), finetune_steps=20, devices=("T4",),
                    batch_sizes=(4096,))
KW = dict(method="exhaustive", profile_time_cap_s=0.1)
#: the sections of the CLI's report.md (tests/optimizer/test_cli_search.py)
SECTIONS = ("## Answer", "## What was chosen and why", "## Cost breakdown per component", "## Pareto front",
            "## Sensitivity of the chosen strategy", "## Every variant", "## Assumptions", "### Prices",
            "## Provenance")


@pytest.fixture(scope="module")
def found(wl, cost_model, one_thread, tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    return search(wl, SPACE, cost_model, min_quality=0.5, output_dir=out, **KW), out


def test_repr_is_a_short_summary(found):
    res, _ = found
    text = repr(res)
    assert str(res) == text and len(text) < 700 and len(text.splitlines()) == 5, text
    best, base = res.best, res.baseline
    assert text.startswith(f"SearchResult (exhaustive): {res.status}: {res.message}\n")
    assert f"  best      {best.label} on {best.device} x{best.replicas}, batch {best.batch_size}: $" in text
    assert best.variant != base.variant  # the pruned model meets a target this low, for less
    assert f"quality {best.quality:.4f} (target >= 0.5)" in text
    saved = res.savings_usd["total"]
    assert f"  baseline  {base.label} on {base.device}" in text
    assert f"; saved ${saved:,.2f} ({saved / base.cost_usd:.1%})" in text
    assert "  searched  2 variants, 2 quality evaluations, 0 failures, " in text
    assert ".report(dir): report.md and plots; .export(dir): the chosen model; .trials_dataframe(); .to_text()" in text
    assert "Trial(" not in text and "cost_breakdown" not in text  # never the dataclass itself
    assert "<table" in res._repr_html_()  # Jupyter still gets the full tables


def test_repr_when_nothing_meets_the_target(found, wl, cost_model):
    _, out = found  # the same folder: both evaluations are reused, nothing is trained again
    res = search(wl, SPACE, cost_model, min_quality=0.999, output_dir=out, raise_infeasible=False, **KW)
    text = repr(res)
    assert res.best is None and len(text.splitlines()) == 5
    assert f"  best      none meets quality >= 0.999; closest {res.closest[0]['label']}: quality " in text


def test_report_writes_the_run_folder_the_cli_writes(found, tmp_path):
    from optimizer.report import rerender

    res, out = found
    d = tmp_path / "report"
    files = res.report(d)
    assert files["report"] == d / "report.md"
    assert {"results", "run", "trials", "report", "pareto", "components"} <= set(files)
    for p in files.values():
        assert p.is_file() and p.parent == d, p
    for png in d.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert loads((d / "results.json").read_text()) == res
    report = (d / "report.md").read_text()
    for section in SECTIONS:
        assert section in report, section
    assert report.startswith(f"# sigmastar search: {res.source.workload.name}\n")
    assert f"**{res.best.label}**" in report and "saves **$" in report
    assert f"each evaluation is journaled in `{out / 'evaluations.jsonl'}`" in report
    assert f"the search's journals and caches are in `{out}`" in report
    run = json.loads((d / "run.json").read_text())
    assert run["job"]["type"] == "search_call" and run["prices"] and run["evaluations_before"] is None
    # `sigmastar report DIR` renders the same report from the folder
    rerender(d)
    assert (d / "report.md").read_text() == report


def _recorded(res, **options):
    """A copy of ``res`` whose search recorded ``options`` (RunSource.options)."""
    return dataclasses.replace(res).with_source(dataclasses.replace(res.source, options=options))


def test_the_report_itemizes_the_best_with_the_searchs_own_pricing_options(found, tmp_path):
    res, _ = found
    files = _recorded(res, profile_time_cap_s=0.1, pool=False, runtime="eager").report(tmp_path)
    report = files["report"].read_text()
    assert "### Line items of the chosen strategy" in report and "### Line items of the baseline" in report
    assert files["sensitivity"].name == "sensitivity.png" and "![sensitivity](sensitivity.png)" in report
    assert "- method exhaustive, seed 0, profile time cap 0.1 s" in report and "not recorded" not in report


def test_the_report_says_what_the_search_did_not_record(found, tmp_path):
    res, _ = found
    files = _recorded(res).report(tmp_path)  # nothing recorded: nothing made up
    report = files["report"].read_text()
    missing = "the search's profile_time_cap_s, pool, runtime were not recorded"
    assert f"Line items: not computed: {missing}" in report and f"Not computed: {missing}" in report
    assert "- method exhaustive, seed 0, profile time cap not recorded" in report
    assert "sensitivity" not in files and "### Line items" not in report
    assert json.loads(files["run"].read_text())["job"]["profile_time_cap_s"] is None


def test_a_result_read_from_json_has_no_search_to_report(found, tmp_path):
    res, _ = found
    again = loads(res.to_json())
    assert again.source is None
    with pytest.raises(ConfigError, match=r"^SearchResult\.source must be the search that returned this result .*; "
                                          r"got None \(a result read from JSON: render its run folder with "
                                          r"`sigmastar report DIR`\)\.$"):
        again.report(tmp_path)


# ---- quiet ----------------------------------------------------------------------------------------

def _python(code: str, *flags: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python [flags] -c code`` from the repository root, with none of the quieting variables set."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KINETO_LOG_LEVEL", "HF_HUB_DISABLE_PROGRESS_BARS", "PYTHONWARNINGS")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")  # one thread: faster on 2 cores
    return subprocess.run([sys.executable, *flags, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=Path(__file__).resolve().parents[2])


def test_a_search_from_python_writes_nothing_on_stderr(tmp_path):
    # int8_dynamic loads torchao (its CUDA-kernel and pytree notices); measuring runs the torch profiler
    # (kineto's USDT profiler_start / profiler_stop lines, two per memory profile)
    proc = _python(f"""
        from cost_models import CostModel, Scenario, ServingPlan
        from optimizer import SearchSpace, search
        from profilers import workloads

        cm = CostModel(Scenario(serving=ServingPlan(avg_requests_per_s=100, latency_slo_s=0.05, horizon_months=12)))
        space = SearchSpace(prune_amount=(0.0,), quantize=("none", "int8_dynamic"), devices=("T4",), batch_sizes=(64,))
        res = search(workloads.get("digits"), space, cm, min_quality=0.5, method="exhaustive",
                     profile_time_cap_s=0.1, output_dir={str(tmp_path)!r}, raise_infeasible=False)
        print(res.status, res.quality_evaluations)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["optimal", "2"]
    assert proc.stderr == ""  # no USDT / profiler_start lines, no "Failed to load", no warnings


def test_importing_the_packages_warns_nothing():
    proc = _python("""
        import warnings

        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            import cost_models, optimizer, profilers
            from optimizer import SearchResult, search
            from optimizer import cli, report
            import profilers.techniques, torchao  # torchao's import logs its notices
        assert not seen, [str(w.message) for w in seen]
        print("ok")
    """, "-W", "error")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n" and proc.stderr == ""


def test_only_the_known_records_are_dropped(caplog):
    import profilers  # noqa: F401  (its import attaches the filters)

    with caplog.at_level(logging.WARNING):
        logging.getLogger("torchao").warning("Failed to load /x/torchao/_C_mxfp8.so: Could not load this library")
        logging.getLogger("torchao").warning("Failed to load my_own_model.pt")
        logging.getLogger("torch.utils._pytree").warning(
            "%s is an Enum subclass and is now natively supported by torch.compile as an opaque value type.", "E")
        logging.getLogger("torch.utils._pytree").warning("another pytree notice")
    assert [r.getMessage() for r in caplog.records] == ["Failed to load my_own_model.pt", "another pytree notice"]


def test_the_users_environment_wins(monkeypatch):
    from profilers.quiet import quiet_libraries

    monkeypatch.setenv("KINETO_LOG_LEVEL", "2")
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    quiet_libraries()
    assert os.environ["KINETO_LOG_LEVEL"] == "2" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
