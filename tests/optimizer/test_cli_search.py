"""`sigmastar search / whatif / report / worker` end to end on small jobs, through the CLI.

One small digits job (4 variants, 2 GPUs) is searched exhaustively once; an interrupted copy of the
same search is resumed and must match it without re-running a finished evaluation.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optimizer.cli import main
from optimizer.progress import SearchProgress
from profilers.config import loads

SMALL = """
name = "small"
workload = "digits"
[space]
prune_amount = [0.0, 0.5]
quantize = ["none", "int8_dynamic"]
finetune_steps = 50
devices = ["T4", "H100-SXM"]
batch_sizes = [1024, 4096]
[constraints]
min_quality = 0.95
[search]
method = "{method}"
profile_time_cap_s = 0.1
{extra}
[scenario.serving]
avg_requests_per_s = 50_000
peak_requests_per_s = 100_000
samples_per_request = 100
latency_slo_s = 0.05
horizon_months = 12
[scenario.training]
samples_per_epoch = 1347
epochs = 15
"""

WHATIF = """
name = "tiny-whatif"
kind = "whatif"
[whatif]
models = ["gpt2", "llama-2-7b"]
devices = ["L4", "H100-SXM"]
serve_seq_len = 128
serve_batch_sizes = [1, 8]
serve_dtypes = ["bf16", "int8"]
train_seq_len = 1024
global_batch = 64
train_device_counts = [8]
[scenario.serving]
avg_requests_per_s = 5
peak_requests_per_s = 10
latency_slo_s = 1.0
[scenario.training]
samples_per_epoch = 100_000_000
unit = "tokens"
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def job_file(tmp: Path, method: str = "exhaustive", extra: str = "", name: str = "job.toml") -> Path:
    p = tmp / name
    p.write_text(SMALL.format(method=method, extra=extra))
    return p


def evaluations(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The small job searched exhaustively, uninterrupted."""
    tmp = tmp_path_factory.mktemp("clean")
    out = tmp / "out"
    import io
    from contextlib import redirect_stderr, redirect_stdout

    o, e = io.StringIO(), io.StringIO()
    with redirect_stdout(o), redirect_stderr(e):
        rc = main(["search", str(job_file(tmp)), "--output", str(out)])
    assert rc == 0, e.getvalue()
    return out, o.getvalue(), e.getvalue()


def test_search_writes_the_run_folder(clean):
    out, stdout, stderr = clean
    for f in ("results.json", "run.json", "trials.csv", "report.md", "pareto.png", "components.png",
              "sensitivity.png", "evaluations.jsonl"):
        assert (out / f).is_file(), f
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "results.json").read_text())
    assert data["type"] == "search_result" and data["version"] == 1
    res = loads((out / "results.json").read_text())
    assert res.status == "optimal" and res.best is not None and res.best.quality >= 0.95
    assert res.quality_evaluations == 4 and len(evaluations(out)) == 4  # exhaustive: every variant
    run = json.loads((out / "run.json").read_text())
    assert run["type"] == "sigmastar.run" and run["version"] == 1 and run["kind"] == "search"
    assert run["job"]["type"] == "job" and run["sensitivity"]["rows"] and set(run["breakdowns"]) == {"best", "baseline"}
    csv = (out / "trials.csv").read_text().splitlines()
    assert csv[0].startswith("number,variant,label,cost_usd,device,batch_size,quality,state") and len(csv) == 5
    report = (out / "report.md").read_text()
    for section in ("## Answer", "## What was chosen and why", "## Cost breakdown per component",
                    "### Line items of the chosen strategy", "## Pareto front", "## Sensitivity of the chosen strategy",
                    "## Every variant", "## Assumptions", "### Prices", "## Provenance"):
        assert section in report, section
    assert f"**{res.best.label}**" in report and "saves **$" in report
    # the device times are calibrated projections: the total's band, and the overlap note when there is one
    assert "80 % band of the total from the projected device times' calibration: $" in report
    assert ("**Ranking not certain" in report) == bool(res.ranking_note)
    assert "![Pareto front](pareto.png)" in report and "![sensitivity](sensitivity.png)" in report
    # stdout: the summary; stderr: what runs, the progress
    assert f"best                 {res.best.label} on {res.best.device}" in stdout
    assert f"report               {out / 'report.md'}" in stdout
    # not a terminal: one plain line per event (optimizer.progress), the same text a bar shows
    assert "sigmastar search: job 'small'" in stderr and "\n[exhaustive] pricing 4/4, " in stderr
    assert "\n[exhaustive] quality evaluations 4/4, best $" in stderr and "resuming" not in stderr
    assert "\r" not in stderr


def test_sensitivity_is_of_the_chosen_strategy(clean):
    out, _, _ = clean
    res = loads((out / "results.json").read_text())
    run = json.loads((out / "run.json").read_text())
    # GPU figures are projections from FLOP counts: re-pricing reproduces the search's total exactly
    assert run["sensitivity"]["base_total_usd"] == pytest.approx(res.best.cost_usd, rel=1e-9)
    knobs = [r["knob"] for r in run["sensitivity"]["rows"]]
    assert "traffic_requests_per_s" in knobs and "price:gpu_hour" in knobs


def test_an_interrupted_search_resumes_and_loses_nothing(clean, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    job = job_file(tmp_path)
    real = SearchProgress.on_evaluation
    seen = []

    def interrupt_after_two(self, variant, quality, fidelity=1.0, error=""):  # Ctrl-C once 2 are journaled
        real(self, variant, quality, fidelity, error)
        seen.append(variant)
        if len(seen) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(SearchProgress, "on_evaluation", interrupt_after_two)
    assert main(["search", str(job), "--output", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"sigmastar search: interrupted (Ctrl-C). 2 finished quality evaluations are saved in {out / 'evaluations.jsonl'}" in err
    assert f"run the same command to resume: sigmastar search {job} --output {out}" in err
    assert len(evaluations(out)) == 2 and not (out / "results.json").exists()

    monkeypatch.setattr(SearchProgress, "on_evaluation", real)
    assert main(["search", str(job), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert (f"resuming in {out}: 2 quality evaluations already finished there (evaluations.jsonl) will be reused, "
            "not re-run") in err
    assert "resumed: reused 2 finished evaluations, ran 2 new" in err
    rows = evaluations(out)
    assert len(rows) == 4 and len({r["content"] for r in rows}) == 4  # nothing evaluated twice
    clean_out = clean[0]
    a, b = loads((clean_out / "results.json").read_text()), loads((out / "results.json").read_text())
    assert [(t.variant, t.state, t.quality) for t in a.trials] == [(t.variant, t.state, t.quality) for t in b.trials]
    # costs match to measurement noise: a quantized variant's training is priced from the base model's step
    # measured here (micro-dollars of the total)
    assert [t.cost_usd for t in a.trials] == pytest.approx([t.cost_usd for t in b.trials], rel=1e-6)
    assert a.best.variant == b.best.variant and a.best.quality == b.best.quality
    assert a.best.cost_usd == pytest.approx(b.best.cost_usd, rel=1e-6)
    assert "Resumed: 2 evaluations were already journaled in this folder and reused; 2 ran in this session." in \
           (out / "report.md").read_text()


def test_an_infeasible_target_exits_1_and_still_writes_the_report(clean, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(clean[0], out)  # evaluations are keyed by content, not by the target: all reused
    job = tmp_path / "strict.toml"
    job.write_text(SMALL.format(method="exhaustive", extra="").replace("min_quality = 0.95", "min_quality = 0.999"))
    assert main(["search", str(job), "--output", str(out)]) == 1
    cap = capsys.readouterr()
    assert "resumed: reused 4 finished evaluations, ran 0 new" in cap.err
    assert "sigmastar search: no strategy meets quality >= 0.999 with a feasible deployment" in cap.err
    assert "To fix: lower min_quality" in cap.err
    report = (out / "report.md").read_text()
    assert "**No strategy meets the constraints**" in report and re.search(r"\| closest candidate +\|", report)
    assert "Not computed: no strategy meets the constraints" in report


def test_a_budgeted_multi_fidelity_search_reports_its_spend_and_pruned_variants(tmp_path):
    out = tmp_path / "out"  # a fresh folder: a variant already evaluated in full needs no rung
    extra = 'n_trials = 8\nfidelities = [0.25]\nprune_margin = 0.0\nbudget_usd = 5.0\nusd_per_hour = 0.5'
    job = job_file(tmp_path, "random", extra)
    assert main(["search", str(job), "--output", str(out)]) in (0, 1)
    res = loads((out / "results.json").read_text())
    assert res.spend["budget_usd"] == 5.0 and res.spend["usd_per_hour"] == 0.5
    report = (out / "report.md").read_text()
    assert "The search itself cost $" in report and "of a $5.00 budget (derived: wall time x search(usd_per_hour" in report
    pruned = [t for t in res.trials if t.state == "pruned"]
    # with no margin, a rung below the target stops its variant (the 50 % pruned digits CNN scores
    # well below 0.95 after 12 of its 50 fine-tuning steps)
    assert pruned and all(t.error for t in pruned)
    assert "pruned before a full evaluation" in report


def test_storage_needs_an_optuna_method(tmp_path, capsys):
    assert main(["search", str(job_file(tmp_path, "lazy")), "--storage", "sqlite:///x.db"]) == 2
    assert capsys.readouterr().err == ("sigmastar search: error: search.--storage must be absent with method 'lazy' "
                                       "(Optuna storage is for 'tpe', 'random' and 'nsga2'; every method keeps its "
                                       "evaluations in the output folder); got 'sqlite:///x.db'.\n")


def test_report_renders_a_run_again(clean, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(clean[0], out)
    before = (out / "report.md").read_text().replace(str(clean[0]), str(out))
    for f in ("report.md", "trials.csv", "pareto.png", "components.png", "sensitivity.png"):
        (out / f).unlink()
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out / 'trials.csv'}, {out / 'report.md'}")
    assert (out / "report.md").read_text() == before
    for f in ("trials.csv", "pareto.png", "components.png", "sensitivity.png"):
        assert (out / f).is_file()


def test_report_from_a_fresh_process(clean, tmp_path):
    """The type tags results.json and run.json name load without anything imported beforehand."""
    import shutil

    script = Path(sys.executable).parent / "sigmastar"
    if not script.exists():
        pytest.skip("console script not installed next to the interpreter (pip install -e .)")
    out = tmp_path / "copy"
    shutil.copytree(clean[0], out)
    (out / "report.md").unlink()
    r = subprocess.run([str(script), "report", str(out)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert r.returncode == 0, r.stderr
    assert (out / "report.md").is_file()


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "report.run_dir must be a run folder (written by sigmastar search or whatif); got '{d}/none' "
                     "(no such folder)."),
    (lambda d: (d / "none").mkdir(), "report.run_dir must be a run folder holding run.json; got '{d}/none' (no "
                                     "run.json: the run did not finish, or this is not a run folder)."),
    (lambda d: ((d / "none").mkdir(), (d / "none" / "run.json").write_text('{"type": "sigmastar.run", "version": 9}')),
     "run.json.version must be 1 (this release reads version 1); got 9."),
])
def test_report_errors(setup, message, tmp_path, capsys):
    setup(tmp_path)
    assert main(["report", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == f"sigmastar report: error: {message.format(d=tmp_path)}\n"


def test_search_refuses_a_whatif_job_and_a_worker_needs_optuna(tmp_path, capsys):
    w = tmp_path / "w.toml"
    w.write_text(WHATIF)
    assert main(["search", str(w)]) == 2
    assert capsys.readouterr().err == (f"sigmastar search: error: job.kind must be 'search' for `sigmastar search`; "
                                       f"got 'whatif' (run it with `sigmastar whatif {w}`).\n")
    assert main(["worker", str(job_file(tmp_path, "lazy")), "--storage", str(tmp_path / "s.journal")]) == 2
    assert capsys.readouterr().err == ("sigmastar worker: error: job.search.method must be one of 'tpe', 'random', "
                                       "'nsga2' for a worker (workers share an Optuna study); got 'lazy'.\n")
    assert main(["whatif", str(job_file(tmp_path))]) == 2
    assert "job.kind must be 'whatif' for `sigmastar whatif`; got 'search'" in capsys.readouterr().err


def test_a_bad_job_file_exits_2_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.format(method="lazy", extra="").replace("[0.0, 0.5]", "[0.0, 1.5]"))
    assert main(["search", str(bad), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == ("sigmastar search: error: job.space.prune_amount[1] must be a fraction in [0, 1) (0.0 = no "
                   "pruning); got 1.5.\n")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def shared_study(tmp_path_factory):
    """Two workers, one after the other, on one journal storage and one output folder."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    tmp = tmp_path_factory.mktemp("workers")
    job, storage, out = job_file(tmp, "tpe", "n_trials = 3"), tmp / "study.journal", tmp / "shared"
    outs = []
    for _ in range(2):
        o, e = io.StringIO(), io.StringIO()
        with redirect_stdout(o), redirect_stderr(e):
            rc = main(["worker", str(job), "--storage", str(storage), "--output", str(out)])
        assert rc == 0, e.getvalue()
        outs.append(o.getvalue())
    return job, storage, out, outs


def test_workers_share_a_study_and_stop_at_n_trials(shared_study):
    import optuna

    job, storage, out, outs = shared_study
    assert outs[0].startswith("worker done: ")
    assert outs[1].startswith("worker done: 0 new quality evaluations here")  # the study was complete
    assert f"when every worker is done: sigmastar search {job} --storage {storage} --output {out}" in outs[1]
    st = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage)))
    (summary,) = optuna.get_all_study_summaries(st)
    assert summary.n_trials == 3


def test_search_over_a_finished_shared_study_reports_its_trials(shared_study, capsys):
    job, storage, out, _ = shared_study
    main(["search", str(job), "--storage", str(storage), "--output", str(out)])
    res = loads((out / "results.json").read_text())
    assert res.method == "tpe" and res.quality_evaluations == len(evaluations(out))
    evaluated = [t for t in res.trials if t.quality is not None]
    assert len(evaluated) == len({r["variant"] for r in evaluations(out)})
    assert all(t.state in ("feasible", "below target") and t.cost_usd < float("inf") for t in evaluated)
    if any(t.quality >= 0.95 for t in evaluated):
        assert res.best is not None


def test_whatif_end_to_end_and_report_again(tmp_path, capsys):
    w = tmp_path / "w.toml"
    w.write_text(WHATIF)
    out = tmp_path / "wi"
    assert main(["whatif", str(w), "--output", str(out), "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[0].startswith("gpt2           serve on ")
    assert f"report: {out / 'report.md'}" in stdout
    for f in ("whatif.json", "run.json", "serving.csv", "training.csv", "report.md", "whatif.png"):
        assert (out / f).is_file(), f
    res = loads((out / "whatif.json").read_text())
    assert {p["model"] for p in res.plans} == {"gpt2", "llama-2-7b"}
    # 2 models x 2 batch sizes x 2 devices x 2 dtypes
    assert len(res.serving) == 16 and len(res.training) == 4
    for p in res.plans:
        assert p["status"] == "ok"
        br = p["breakdown"]
        assert br.total_usd == pytest.approx(p["total_usd"]) and br.training_runs == 1
        assert any(it.name.startswith("training compute") for it in br.items)
        assert any(it.name.startswith("serving compute") for it in br.items)
    report = (out / "report.md").read_text()
    for section in ("## Cheapest plan per model", "## Prompt scoring", "## Training", "## Assumptions", "## Provenance"):
        assert section in report
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == report


@pytest.mark.parametrize("cmd", ["search", "whatif", "report", "worker"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as info:
        main([cmd, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: sigmastar {cmd}")


def test_search_without_a_job_runs_the_bundled_digits_job(monkeypatch, tmp_path, capsys):
    from optimizer import jobs

    seen = {}

    def fake(job, out, **kw):
        seen["job"], seen["out"] = job, out
        raise KeyboardInterrupt  # stop before any work

    monkeypatch.setattr(jobs, "run_search", fake)
    monkeypatch.chdir(tmp_path)
    assert main(["search"]) == 130
    assert seen["job"].name == "digits-bulk-scan" and seen["job"].source.endswith("optimizer/data/digits.toml")
    assert seen["out"] == Path("runs/digits")


# ---- a real Ctrl-C ---------------------------------------------------------------------------------


def test_sigint_stops_the_command_cleanly_and_the_same_command_resumes(tmp_path):
    script = Path(sys.executable).parent / "sigmastar"
    if not script.exists():
        pytest.skip("console script not installed next to the interpreter (pip install -e .)")
    job = job_file(tmp_path, "exhaustive")
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    # a test run started in the background inherits SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the command the default disposition, as a terminal would
    proc = subprocess.Popen([str(script), "search", str(job), "--output", str(out)], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    deadline = time.monotonic() + 240
    for line in proc.stderr:  # interrupt once the first evaluation is journaled
        lines.append(line)
        if "[exhaustive] quality evaluations 1/" in line or time.monotonic() > deadline:
            proc.send_signal(signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=120)
    err = "".join(lines) + (rest or "")
    assert proc.returncode == 130, err
    assert "USDT" not in err and "profiler_start" not in err  # kineto's trace lines are off (profilers.quiet)
    done = len(evaluations(out))
    assert 1 <= done < 4
    # the same command, in a new process as a user would run it (this test process may hold a base
    # model trained under other thread settings: another fingerprint, so nothing would be reused)
    again = subprocess.run([str(script), "search", str(job), "--output", str(out)], capture_output=True, text=True,
                           env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"resuming in {out}: {done} quality evaluation" in again.stderr
    rows = evaluations(out)
    assert len(rows) == 4 and len({r["content"] for r in rows}) == 4


def test_sigterm_is_a_stop_like_ctrl_c_even_when_the_interrupt_is_swallowed(tmp_path, monkeypatch, capsys):
    """SIGTERM stops a search as Ctrl-C does (message, resume command, exit 143 = 128 + 15); an
    interrupt swallowed on its way up (as a finalizer or a library callback may do) still stops the
    search at the next progress checkpoint instead of letting it finish with 0."""
    import optimizer.jobs as jobs

    calls = []

    def fake_run_search(job, out, *, progress, log, on_evaluation, **kw):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises here
        except KeyboardInterrupt:
            calls.append("swallowed")  # dropped, as "Exception ignored in ..." would
        on_evaluation("variant", 0.9, 1.0, None)  # the next checkpoint raises again
        calls.append("went on")  # never reached
        raise AssertionError("the search went on after SIGTERM")

    monkeypatch.setattr(jobs, "run_search", fake_run_search)
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGTERM)
    assert main(["search", str(job_file(tmp_path)), "--output", str(out), "--quiet"]) == 143
    assert calls == ["swallowed"]
    err = capsys.readouterr().err
    assert "interrupted (SIGTERM)" in err and "run the same command to resume" in err
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is restored afterwards
