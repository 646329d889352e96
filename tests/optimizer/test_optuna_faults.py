"""Optuna methods under faults, on journal storages (no database): a resumed run does not replay the
first trials, workers get their own seeds, one variant is trained once however many trials sample
it, a dead worker's claim passes on, and an interrupted trial is never left RUNNING.

The real digits workload on a six-variant space; the interrupted search and its resumption run
once (module fixture) and the other tests continue copies of that folder, reusing its measured
profiles, so the file stays quick.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections import Counter

import optuna
import pytest
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import TrialState

from optimizer import SearchSpace, search
from optimizer.evaluate import Evaluator
from optimizer.optuna_search import (_fail_stale, claim, heartbeat_journal_storage, heartbeat_settings, run_seed,
                                     worker_identity)

pytestmark = [pytest.mark.usefixtures("one_thread"),
              # the claim tests drive trials with study.ask(), which warns that heartbeats are for optimize()
              pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")]

SPACE = SearchSpace(prune_amount=(0.0, 0.5), quantize=("none", "int8_dynamic", "fp16"), finetune_steps=50,
                    devices=("T4", "H100-SXM"), batch_sizes=(1024, 4096))
KW = dict(min_quality=0.95, profile_time_cap_s=0.1, raise_infeasible=False, skip_dearer=False)


def _study(storage):
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def _journal_study(folder, name="study.journal"):
    return _study(optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / name))))


def _rows(out):
    return [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines() if line.strip()]


# ---- seeds --------------------------------------------------------------------------------------


def test_a_run_seeds_its_sampler_from_the_study_and_the_worker():
    assert run_seed(7, 0, "") == 7  # a fresh study on its own folder: the search's seed (reproducible)
    seeds = {run_seed(7, n, who) for n in (0, 5) for who in ("", "a", "b")} - {7}
    assert len(seeds) == 5  # resumed (5 trials in), or another worker: every one its own stream
    assert all(0 <= s < 2**32 for s in seeds)
    assert worker_identity(shared=False) == "" and worker_identity(shared=True).endswith(f":{os.getpid()}")


def test_heartbeat_settings_come_from_the_environment(monkeypatch):
    for name in ("SIGMASTAR_HEARTBEAT_INTERVAL_S", "SIGMASTAR_HEARTBEAT_GRACE_S"):
        monkeypatch.delenv(name, raising=False)
    assert heartbeat_settings() == (10, 30)
    monkeypatch.setenv("SIGMASTAR_HEARTBEAT_INTERVAL_S", "2")
    assert heartbeat_settings() == (2, 30)
    monkeypatch.setenv("SIGMASTAR_HEARTBEAT_GRACE_S", "2")
    with pytest.raises(ValueError, match=r"^environment.SIGMASTAR_HEARTBEAT_GRACE_S must be a whole number of "
                                         r"seconds >= 3; got '2'.$"):
        heartbeat_settings()


# ---- claims and heartbeats (no training) --------------------------------------------------------


def _labelled(study, variant, beat=True):
    t = study.ask()
    t.suggest_int("level", 0, 3)
    t.set_user_attr("variant", variant)
    if beat:
        study._storage.record_heartbeat(t._trial_id)
    return t


def test_the_lowest_live_trial_of_a_variant_trains_it_and_the_others_take_its_result(tmp_path):
    study = optuna.create_study(storage=heartbeat_journal_storage(tmp_path / "s.journal", 1, 2))
    a, b = _labelled(study, "v"), _labelled(study, "v")
    assert claim(study, a, "v", poll_s=0.05) is None and a.user_attrs["training"] is True
    got = []
    waiter = threading.Thread(target=lambda: got.append(claim(study, b, "v", poll_s=0.05)))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and b.user_attrs["waiting_for"] == a.number  # b does not train v again
    a.set_user_attr("quality", 0.97)
    study.tell(a, 1.0)
    waiter.join(10)
    assert [t.number for t in got] == [a.number] and got[0].user_attrs["quality"] == 0.97
    assert claim(study, _labelled(study, "w"), "w", poll_s=0.05) is None  # another variant: no wait


def test_a_dead_workers_claim_passes_on_and_its_trial_is_failed_and_requeued(tmp_path):
    study = optuna.create_study(storage=heartbeat_journal_storage(tmp_path / "s.journal", 1, 2))
    dead = _labelled(study, "v")  # beat once, then its worker died (kill -9: nothing more is written)
    heir = _labelled(study, "v")
    t0 = time.monotonic()
    with get_heartbeat_thread(heir._trial_id, study._storage):  # the heir's worker is alive: it beats
        assert claim(study, heir, "v", poll_s=0.05, on_stale=lambda: _fail_stale(study), stale_every_s=0.2) is None
    assert time.monotonic() - t0 >= 1.5  # it waited for the grace period (2 s) before taking over
    trials = study.get_trials(deepcopy=False)
    assert trials[dead.number].state == TrialState.FAIL
    (copy,) = [t for t in trials if t.state == TrialState.WAITING]  # RetryHeartbeatStaleTrialCallback
    assert copy.params == dead.params and copy.system_attrs["failed_trial"] == dead.number


# ---- the real search: an interrupted run and its resumption --------------------------------------


@pytest.fixture(scope="module")
def resumed(wl, cost_model, tmp_path_factory):
    """random, 6 trials: Ctrl-C at the end of the third trial, then the same search again."""
    out = tmp_path_factory.mktemp("resumed")
    done = []

    def ctrl_c_after_three(n, total, v, q, cost):
        done.append(v.key)
        if len(done) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(wl, SPACE, cost_model, method="random", n_trials=6, output_dir=out, progress=ctrl_c_after_three, **KW)
    first = _journal_study(out).get_trials()
    res = search(wl, SPACE, cost_model, method="random", n_trials=6, output_dir=out, **KW)
    return out, first, _journal_study(out).get_trials(), res


def test_an_interrupted_trial_is_failed_with_the_reason_and_requeued(resumed):
    _, first, _, _ = resumed
    assert [t.state for t in first] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL, TrialState.WAITING]
    assert first[2].user_attrs["unfinished"] == "interrupted (Ctrl-C)"
    assert first[3].user_attrs["retry_of"] == 2 and first[3].system_attrs["fixed_params"] == first[2].params


def test_a_resumed_run_does_not_replay_the_first_trials_and_trains_nothing_twice(resumed):
    out, first, trials, res = resumed
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert trials[3].state == TrialState.COMPLETE and trials[3].user_attrs["variant"] == first[2].user_attrs["variant"]
    sampled_before = [t.user_attrs["variant"] for t in first[:3]]
    sampled_after = [t.user_attrs["variant"] for t in trials[4:]]  # the resumed run's own samples
    assert len(sampled_after) == 3 and sampled_after != sampled_before  # the old seeding replayed these exactly
    seeds = {t.user_attrs["seed"] for t in trials if t.state == TrialState.COMPLETE}
    assert seeds == {0, run_seed(0, 4, "")}  # the search's seed, then one mixed with the 4 trials found
    rows = _rows(out)
    assert max(Counter(r["content"] for r in rows).values()) == 1  # no variant trained twice
    assert res.quality_evaluations >= len(rows)


def test_workers_with_different_identities_get_different_seeds(wl, cost_model, resumed, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(resumed[0], out)
    storage = str(tmp_path / "shared.journal")  # a shared storage: the output folder is not locked
    for who, n in (("a", 2), ("b", 4)):
        monkeypatch.setenv("SIGMASTAR_WORKER_ID", who)
        search(wl, SPACE, cost_model, method="tpe", n_trials=n, storage=storage, output_dir=out, **KW)
    trials = _journal_study(tmp_path, "shared.journal").get_trials()
    by_worker = {t.user_attrs["worker"]: t.user_attrs["seed"] for t in trials}
    assert by_worker == {"a": run_seed(0, 0, "a"), "b": run_seed(0, 2, "b")} and len(set(by_worker.values())) == 2
    assert max(Counter(r["content"] for r in _rows(out)).values()) == 1


def test_an_interrupt_outside_the_objective_leaves_no_trial_running(wl, cost_model, resumed, tmp_path, monkeypatch):
    """Ctrl-C while Optuna creates the trial (before the objective runs): Optuna alone left it RUNNING."""
    out = tmp_path / "out"
    shutil.copytree(resumed[0], out)

    def interrupted(self, study, trial):
        raise KeyboardInterrupt

    monkeypatch.setattr(optuna.samplers.RandomSampler, "before_trial", interrupted)
    with pytest.raises(KeyboardInterrupt):
        search(wl, SPACE, cost_model, method="random", n_trials=7, output_dir=out, **KW)
    last = _journal_study(out).get_trials()[-1]
    assert last.state == TrialState.FAIL and last.user_attrs["unfinished"] == "interrupted (Ctrl-C)"
    assert not last.params  # nothing was sampled: nothing to re-queue


def test_an_interrupt_inside_optunas_tell_stays_an_interrupt(wl, cost_model, resumed, tmp_path, monkeypatch):
    """Ctrl-C/SIGTERM landing in Optuna's tell: optuna.study._optimize._run_trial's ``finally`` then
    raises UnboundLocalError while handling it (seen from the fault benchmark: exit 1 with a
    traceback instead of 143). The search still raises KeyboardInterrupt and leaves no trial RUNNING."""
    from optuna.study import _optimize

    out = tmp_path / "out"
    shutil.copytree(resumed[0], out)

    def interrupted(**kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(_optimize, "_tell_with_warning", interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        search(wl, SPACE, cost_model, method="random", n_trials=7, output_dir=out, **KW)
    assert isinstance(info.value.__cause__, UnboundLocalError)  # what Optuna 5.0 raises instead
    assert not [t for t in _journal_study(out).get_trials() if t.state == TrialState.RUNNING]


def test_sigterm_mid_trial_leaves_no_trial_running_and_a_trial_left_running_is_retried(resumed, tmp_path,
                                                                                      monkeypatch, capsys):
    from optimizer.cli import main

    from .test_cli_search import SMALL

    out = tmp_path / "out"
    shutil.copytree(resumed[0] / "profiles", out / "profiles")  # measured figures only: everything trains here
    job = tmp_path / "job.toml"
    job.write_text(SMALL.format(method="tpe", extra="n_trials = 3\nskip_dearer = false").replace(
        '"int8_dynamic"]', '"int8_dynamic", "fp16"]'))
    real = Evaluator.quality

    def sigterm_while_training(self, v, fidelity=1.0):
        os.kill(os.getpid(), signal.SIGTERM)  # the CLI turns it into KeyboardInterrupt (exit 143)
        return real(self, v, fidelity)

    monkeypatch.setattr(Evaluator, "quality", sigterm_while_training)
    assert main(["search", str(job), "--output", str(out), "--quiet"]) == 143
    assert "interrupted (SIGTERM)" in capsys.readouterr().err
    trials = _journal_study(out).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["unfinished"].startswith("interrupted")
    # a run killed outright leaves its trial RUNNING: the next run on the folder fails and re-queues it
    monkeypatch.setattr(Evaluator, "quality", real)
    storage = heartbeat_journal_storage(out / "study.journal")
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    killed = study.ask()  # pops the queued copy: RUNNING, as `kill -9` would leave it
    assert killed.number == 1
    assert main(["search", str(job), "--output", str(out), "--quiet"]) == 0
    trials = _journal_study(out).get_trials()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert trials[1].state == TrialState.FAIL and "left running by a run that was killed" in \
        trials[1].user_attrs["unfinished"]
    assert sum(1 for t in trials if t.state == TrialState.COMPLETE) == 3


def test_a_worker_whose_trial_was_failed_as_stale_goes_on(wl, cost_model, resumed, tmp_path, monkeypatch):
    """Heartbeats late past the grace period (a stalled database, a suspended machine): another worker
    fails the trial while it still runs. Optuna then cannot record its result; the worker goes on."""
    out = tmp_path / "out"
    shutil.copytree(resumed[0], out)
    storage = heartbeat_journal_storage(out / "study.journal")
    real, calls = Evaluator.price, []

    def failed_meanwhile(self, v):
        if not calls:  # the first trial of this run: "another worker" fails it as stale
            study = _study(storage)
            (running,) = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            storage.set_trial_state_values(running._trial_id, TrialState.FAIL)
            calls.append(running.number)
        return real(self, v)

    monkeypatch.setattr(Evaluator, "price", failed_meanwhile)
    logs = []
    res = search(wl, SPACE, cost_model, method="random", n_trials=8, output_dir=out, log=logs.append, **KW)
    assert any("was failed by another one" in m for m in logs)
    trials = _journal_study(out).get_trials()
    assert trials[calls[0]].state == TrialState.FAIL and len(trials) > calls[0] + 1
    assert not [t for t in trials if t.state == TrialState.RUNNING] and res.best is not None
