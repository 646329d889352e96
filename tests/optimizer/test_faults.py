"""Faults are results, not evidence: failed evaluations and pricings are recorded, retried and
reported ("incomplete"), never taken for a quality (optimizer.evaluate, optimizer.search)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from optimizer import SearchSpace, search
from optimizer.cli import EXIT_ERROR, main

# three variants, no training: quick. On this scenario the unmodified model is the cheapest
# (the techniques' engineering hours do not pay back), so a fault on it can change the answer
SPACE = SearchSpace(quantize=("none", "int8_dynamic", "bf16"), devices=("T4", "H100-SXM"), batch_sizes=(1024, 4096))
BEST, DEARER = "w1-p0-qnone", "w1-p0-qbf16"


@pytest.fixture(autouse=True)
def tagged(monkeypatch):
    """Each model the techniques build carries its variant key (the evaluation sees only the model)."""
    import profilers.techniques as techniques

    real = techniques.apply

    def apply(base, techs, *a, **k):
        model = real(base, techs, *a, **k)
        model._test_variant = "w1-p0-q" + ("".join(getattr(t, "mode", "") for t in techs) or "none")
        return model

    monkeypatch.setattr(techniques, "apply", apply)


def _faulty(wl, fault: dict):
    """``wl`` whose evaluate returns (or raises) ``fault[variant]``, once, for the variants named."""
    orig = wl.evaluate

    def evaluate(model):
        key = getattr(model, "_test_variant", None)
        if key in fault:
            what = fault.pop(key)
            if isinstance(what, BaseException):
                raise what
            return what
        return orig(model)

    return dataclasses.replace(wl, evaluate=evaluate)


def _rows(out):
    return [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def clean(wl, cost_model):
    return search(wl, SPACE, cost_model, min_quality=0.9, method="exhaustive", profile_time_cap_s=0.1)


def test_the_clean_search_has_the_cheapest_variant_this_file_faults(clean):
    assert clean.status == "optimal" and clean.best.variant == BEST and not clean.failures


def test_a_transient_failure_is_incomplete_then_retried_on_resume(wl, cost_model, clean, tmp_path):
    out = tmp_path / "out"
    res = search(_faulty(wl, {BEST: RuntimeError("CUDA error: an illegal memory access")}), SPACE, cost_model,
                 min_quality=0.9, method="exhaustive", output_dir=out, profile_time_cap_s=0.1, on_error="skip")
    # the failure is not a quality: the answer is not certified, it names the variant and why
    assert res.status == "incomplete" and res.best.variant != BEST
    (f,) = res.failures
    assert f["variant"] == BEST and f["stage"] == "quality" and f["could_change_answer"] and f["attempts"] == 1
    assert "RuntimeError" in f["error"] and "illegal memory access" in f["error"] and BEST in f["error"]
    failed = [r for r in _rows(out) if r["error"]]
    assert len(failed) == 1 and failed[0]["quality"] is None and "Traceback" in failed[0]["traceback"]
    # fixed: the same search retries the failed evaluation only, and certifies the clean answer
    res2 = search(wl, SPACE, cost_model, min_quality=0.9, method="exhaustive", output_dir=out, profile_time_cap_s=0.1)
    assert res2.status == "optimal" and res2.best.variant == BEST == clean.best.variant and not res2.failures
    assert res2.best.cost_usd == pytest.approx(clean.best.cost_usd, rel=0.05)
    assert len(_rows(out)) == 4  # 3 finished + the failed attempt; nothing else ran again


@pytest.mark.parametrize("method", ["exhaustive", "tpe"])
def test_an_evaluate_that_raises_stops_the_search_with_its_traceback_and_keeps_finished_work(wl, cost_model, clean,
                                                                                           tmp_path, method):
    from optimizer import EvaluationStopped

    out = tmp_path / "out"
    kw = dict(min_quality=0.9, method=method, output_dir=out, profile_time_cap_s=0.1,
              **({"n_trials": 6, "skip_dearer": False} if method == "tpe" else {}))
    boom = ZeroDivisionError("division by zero in my metric")
    with pytest.raises(EvaluationStopped, match=r"variant .*evaluate\(model\) raised ZeroDivisionError: division by "
                                                r"zero in my metric.*kept in .*evaluations\.jsonl.*on_error='skip'") as info:
        search(_faulty(wl, {BEST: boom}), SPACE, cost_model, **kw)
    assert info.value.__cause__ is boom and boom.__traceback__ is not None  # the user's own traceback
    before = _rows(out)
    assert [r["variant"] for r in before if r["error"]] == [BEST]  # journaled as failed, retried next time
    res = search(wl, SPACE, cost_model, **kw)  # fixed: resumes, reusing what finished
    assert res.best.variant == clean.best.variant and not res.failures
    finished = {r["content"] for r in before if not r["error"]}
    assert not [r for r in _rows(out)[len(before):] if r["content"] in finished]  # nothing finished ran again
    with pytest.raises(Exception, match=r"search\.on_error must be 'raise' .* or 'skip'"):
        search(wl, SPACE, cost_model, **{**kw, "on_error": "ignore"})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.99", None, True])
def test_a_non_finite_or_non_numeric_quality_is_a_fault_naming_the_variant(wl, cost_model, bad, tmp_path):
    res = search(_faulty(wl, {BEST: bad}), SPACE, cost_model, min_quality=0.9, method="exhaustive",
                 output_dir=tmp_path, profile_time_cap_s=0.1)
    assert res.status == "incomplete"
    (f,) = res.failures
    assert f["variant"] == BEST and "BadQuality" in f["error"] and BEST in f["error"]
    assert "finite real number" in f["error"]
    bad_rows = [r for r in _rows(tmp_path) if r["variant"] == BEST]
    assert bad_rows and all(r["quality"] is None for r in bad_rows)  # never journaled as a quality


def test_a_failure_dearer_than_the_best_is_reported_but_cannot_change_the_answer(wl, cost_model):
    res = search(_faulty(wl, {DEARER: ValueError("boom")}), SPACE, cost_model, min_quality=0.9,
                 method="exhaustive", profile_time_cap_s=0.1, on_error="skip")
    assert res.status == "optimal" and res.best.variant == BEST
    (f,) = res.failures
    assert f["variant"] == DEARER and not f["could_change_answer"]


def test_retries_are_bounded(wl, cost_model, tmp_path):
    kw = dict(min_quality=0.9, method="exhaustive", output_dir=tmp_path, profile_time_cap_s=0.1, retries=0,
              on_error="skip")
    search(_faulty(wl, {BEST: RuntimeError("flaky")}), SPACE, cost_model, **kw)
    res = search(wl, SPACE, cost_model, **kw)  # retries=0: the failed evaluation is not run again
    assert res.status == "incomplete" and "not retried" in res.failures[0]["error"]
    assert len(_rows(tmp_path)) == 3
    with pytest.raises(Exception, match=r"search\.retries.*integer >= 0"):
        search(wl, SPACE, cost_model, **{**kw, "retries": -1})


def test_lazy_never_certifies_over_a_failed_evaluation(wl, cost_model):
    res = search(_faulty(wl, {BEST: RuntimeError("disk full")}), SPACE, cost_model, min_quality=0.9,
                 method="lazy", profile_time_cap_s=0.1, on_error="skip")
    assert res.status == "incomplete" and res.best is not None and res.best.variant != BEST
    assert res.failures[0]["variant"] == BEST and res.failures[0]["could_change_answer"]


def test_a_pricing_fault_is_incomplete_not_a_dropped_variant(wl, cost_model, monkeypatch):
    from optimizer.evaluate import Evaluator

    real = Evaluator._measured

    def broken(self, key, run):
        if key == "base-train" or self.space is None:
            return real(self, key, run)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Evaluator, "_measured", broken)
    res = search(wl, SPACE, cost_model, min_quality=0.9, method="lazy", profile_time_cap_s=0.1,
                 raise_infeasible=False)
    assert res.status == "incomplete"
    assert {f["stage"] for f in res.failures} == {"pricing"} and all(f["could_change_answer"] for f in res.failures)
    assert all("No space left on device" in f["error"] for f in res.failures)
    assert all(math.isinf(t.cost_usd) and t.state == "failed" for t in res.trials)


def test_an_output_folder_that_cannot_be_created_is_one_clean_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["search", "--output", str(blocker / "out")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert str(blocker) in err and "Traceback" not in err


def test_a_torn_or_garbage_journal_row_is_skipped_logged_and_repaired(wl, cost_model, tmp_path):
    kw = dict(min_quality=0.9, method="exhaustive", output_dir=tmp_path, profile_time_cap_s=0.1)
    search(wl, SPACE, cost_model, **kw)
    journal = tmp_path / "evaluations.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    # a garbage row in the middle, and the last row cut short by a killed writer
    journal.write_bytes(lines[0] + b"garbage \xff\n" + lines[1] + lines[2][: len(lines[2]) // 2])
    logs: list[str] = []
    res = search(wl, SPACE, cost_model, log=logs.append, **kw)
    assert res.status == "optimal" and res.best.variant == BEST
    assert any("line 2" in m for m in logs) and any("torn" in m for m in logs)
    rows = _rows_valid(journal)
    assert len(rows) == 3 and len({r["content"] for r in rows}) == 3  # the torn one ran again, once
    assert (tmp_path / "evaluations.jsonl.torn").exists()


def _rows_valid(journal):
    from optimizer.durable import read_rows
    from optimizer.evaluate import journal_row_problem

    return read_rows(journal, journal_row_problem)[0]


def test_a_second_search_on_a_busy_output_folder_is_refused(wl, cost_model, tmp_path):
    from optimizer.durable import FolderLock, OutputBusy

    with FolderLock(tmp_path, command="another search"):
        with pytest.raises(OutputBusy, match="another search"):
            search(wl, SPACE, cost_model, min_quality=0.9, method="exhaustive", output_dir=tmp_path)
    assert not (tmp_path / "evaluations.jsonl").exists()  # refused before any work


def test_a_full_disk_keeps_the_previous_results_and_exits_with_the_error_code(tmp_path, monkeypatch, capsys):
    import errno
    import os

    from tests.optimizer.test_cli_search import job_file

    job, out = job_file(tmp_path), tmp_path / "out"
    assert main(["search", str(job), "--output", str(out), "--quiet"]) == 0
    before = (out / "results.json").read_text()
    real = os.replace

    def full(src, dst, *a, **k):
        if str(dst).endswith("results.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", full)
    assert main(["search", str(job), "--output", str(out), "--quiet"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "results.json" in err and "no space left on device" in err and "Traceback" not in err
    assert (out / "results.json").read_text() == before  # never a 0-byte or half-written file
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_the_cli_prints_the_users_traceback_when_evaluate_raises_and_exits_with_the_error_code(tmp_path, capsys):
    from tests.optimizer.test_cli_search import SMALL

    (tmp_path / "wl.py").write_text(
        "import dataclasses\nfrom profilers import workloads\n\n"
        "def make():\n    wl = workloads.get('digits')\n    seen = []\n\n"
        "    def my_metric(model):\n        seen.append(1)\n        if len(seen) == 2:\n"
        "            raise ZeroDivisionError('empty validation split')\n        return wl.evaluate(model)\n\n"
        "    return dataclasses.replace(wl, evaluate=my_metric)\n")
    job = tmp_path / "job.toml"
    job.write_text(SMALL.format(method="exhaustive", extra="").replace('workload = "digits"', 'workload = "wl.py:make"'))
    out = tmp_path / "out"
    assert main(["search", str(job), "--output", str(out), "--quiet"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "Traceback" in err and "in my_metric" in err and "ZeroDivisionError: empty validation split" in err
    assert "the search stopped: variant" in err and "run it again to resume" in err
    assert len(_rows(out)) == 2  # the finished evaluation and the failed one are kept


def test_zeroed_model_cache_files_are_rebuilt_and_the_answer_is_unchanged(wl, cost_model, clean, tmp_path):
    kw = dict(min_quality=0.9, method="exhaustive", profile_time_cap_s=0.1)
    search(wl, SPACE, cost_model, output_dir=tmp_path, **kw)
    models = list((tmp_path / "models").glob("*.pt"))
    assert models
    for p in models:
        p.write_bytes(b"\0" * p.stat().st_size)
    (tmp_path / "evaluations.jsonl").unlink()  # evaluate again: the models are read back from the cache
    logs: list[str] = []
    res = search(wl, SPACE, cost_model, output_dir=tmp_path, log=logs.append, **kw)
    assert res.status == "optimal" and res.best.variant == clean.best.variant
    assert [t.quality for t in res.trials] == [t.quality for t in clean.trials]
    assert any("checksum mismatch" in m and "rebuilt" in m for m in logs)
