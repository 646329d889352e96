"""Three `sigmastar worker` processes on one PostgreSQL study, one of them killed with SIGKILL mid-trial.

Needs a server: SIGMASTAR_TEST_POSTGRES_URL (``postgresql+psycopg://user@host:port/db``, a user who
may create databases). ``./run tests`` starts a throwaway one with ``.ci/postgres start`` when the
PostgreSQL server binaries are installed; otherwise these tests are skipped. Each run gets its own
database (created and dropped here). Heartbeats every second and a 3 s grace period
(SIGMASTAR_HEARTBEAT_INTERVAL_S / _GRACE_S) keep the killed worker's trial short-lived.

Checked: no variant trained twice (rows of the shared evaluations.jsonl per content key; the
issue's tolerance, one duplicate per 100 trials, is 0 at this size; the count is printed), no
trial left RUNNING, every worker its own seed, and the answer of `sigmastar search --storage` over
the study equals a one-worker run's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from .test_cli_search import job_file

URL = os.environ.get("SIGMASTAR_TEST_POSTGRES_URL", "")
pytestmark = [
    pytest.mark.skipif(not URL, reason="SIGMASTAR_TEST_POSTGRES_URL is not set: no PostgreSQL server to test "
                                       "against (`./run tests` starts one with .ci/postgres when the server "
                                       "binaries are installed; see docs/distributed.md)"),
    pytest.mark.usefixtures("one_thread"),
]

N_TRIALS = 24  # 4 variants: every worker samples each one several times, so claims collide often
FAST_BEAT = {"SIGMASTAR_HEARTBEAT_INTERVAL_S": "1", "SIGMASTAR_HEARTBEAT_GRACE_S": "3"}
SCRIPT = Path(sys.executable).parent / "sigmastar"


@pytest.fixture
def database():
    """``make()`` -> the URL of a new, empty database on the test server (dropped afterwards)."""
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed: pip install 'sigmastar[postgres]'")
    import sqlalchemy
    from sqlalchemy.engine import make_url

    admin = sqlalchemy.create_engine(URL, isolation_level="AUTOCOMMIT")
    made = []

    def make() -> str:
        name = f"sigmastar_{uuid.uuid4().hex[:12]}"
        with admin.connect() as c:
            c.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return make_url(URL).set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as c:
        for name in made:
            c.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _study(url: str):
    import optuna

    storage = optuna.storages.RDBStorage(url)
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage), storage


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines() if line.strip()]


def _duplicates(out: Path) -> int:
    return sum(n - 1 for n in Counter(r["content"] for r in _rows(out)).values())


def _explain(out: Path, trials: list) -> str:
    """What a duplicated training looked like: its journal rows and every trial of its variant."""
    rows = _rows(out)
    twice = {k for k, n in Counter(r["content"] for r in rows).items() if n > 1}
    lines = [f"row {r['variant']} by {r.get('worker')} at {r.get('at')}" for r in rows if r["content"] in twice]
    names = {r["variant"] for r in rows if r["content"] in twice}
    keys = ("worker", "training", "duplicate_of", "waiting_for", "retry_of", "unfinished", "error", "pruned")
    for t in trials:
        if t.user_attrs.get("variant") in names:
            lines.append(f"trial {t.number} (id {t._trial_id}) {t.state.name} {t.datetime_start}..{t.datetime_complete} "
                         + " ".join(f"{k}={t.user_attrs[k]!r}" for k in keys if k in t.user_attrs)
                         + f" system={ {k: v for k, v in t.system_attrs.items() if 'fail' in k or 'retr' in k} }")
    return "\n".join(lines)


def _search_answer(job: Path, url: str, out: Path) -> str:
    from optimizer.cli import main
    from profilers.config import loads

    assert main(["search", str(job), "--storage", url, "--output", str(out), "--quiet"]) == 0
    return loads((out / "results.json").read_text()).best.variant


def test_three_workers_one_killed_train_each_variant_once_and_agree_with_one_worker(database, tmp_path, monkeypatch,
                                                                                    capsys):
    import optuna

    if not SCRIPT.exists():
        pytest.skip("console script not installed next to the interpreter (pip install -e .)")
    for k, v in FAST_BEAT.items():
        monkeypatch.setenv(k, v)
    job = job_file(tmp_path, "tpe", f"n_trials = {N_TRIALS}")
    url, out = database(), tmp_path / "shared"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", **FAST_BEAT)
    procs, logs = [], []
    for i in range(3):
        log = open(tmp_path / f"w{i}.err", "w+")
        logs.append(log)
        # a test run started in the background inherits SIGINT ignored: give the workers the default
        procs.append(subprocess.Popen(
            [str(SCRIPT), "worker", str(job), "--storage", url, "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE if i == 0 else log, text=True,
            env=dict(env, SIGMASTAR_WORKER_ID=f"w{i}"),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)))
    victim, seen, deadline = procs[0], [], time.monotonic() + 180
    for line in victim.stderr:  # kill -9 right after its first finished trial: it is inside that trial's tell
        seen.append(line)
        if " trials " in line or time.monotonic() > deadline:
            break
    victim.kill()
    victim.wait(30)
    killed_at = time.monotonic()
    study, _ = _study(url)
    held = [t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == "w0"
            and t.state == optuna.trial.TrialState.RUNNING]
    for p in procs[1:]:
        assert p.wait(240) == 0, (tmp_path / "w1.err").read_text()[-3000:] + (tmp_path / "w2.err").read_text()[-3000:]
    time.sleep(max(0.0, killed_at + 4 - time.monotonic()))  # past the grace period
    answer = _search_answer(job, url, out)  # fails what is stale, then reports over every trial

    study, _ = _study(url)
    trials = study.get_trials(deepcopy=False)
    running = [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    dup = _duplicates(out)
    explained = _explain(out, trials) if dup else ""
    seeds = {t.user_attrs["worker"]: t.user_attrs["seed"] for t in trials if "seed" in t.user_attrs}
    took = sum(1 for t in trials if "duplicate_of" in t.user_attrs)  # waited on a claim, took its result
    killed = [(t.number, t.state.name) for t in trials if t.number in held]

    # one worker, same job, its own database and folder (the measured profiles copied, so both price alike)
    url1, out1 = database(), tmp_path / "one"
    shutil.copytree(out / "profiles", out1 / "profiles")
    monkeypatch.setenv("SIGMASTAR_WORKER_ID", "w0")
    from optimizer.cli import main

    assert main(["worker", str(job), "--storage", url1, "--output", str(out1), "--quiet"]) == 0
    answer1 = _search_answer(job, url1, out1)
    study1, _ = _study(url1)
    trials1 = study1.get_trials(deepcopy=False)
    running1 = [t.number for t in trials1 if t.state == optuna.trial.TrialState.RUNNING]
    dup1 = _duplicates(out1)
    with capsys.disabled():
        print(f"\n[postgres] 3 workers (w0 killed holding trial(s) {killed}): {len(trials)} trials, {took} took a "
              f"claimed variant's result, {dup} trained twice ({100 * dup / len(trials):.1f} per 100 trials), "
              f"{len(running)} left RUNNING, answer {answer}; "
              f"1 worker: {len(trials1)} trials, {dup1} trained twice, {len(running1)} left RUNNING, answer "
              f"{answer1}; equal: {answer == answer1}" + (f"\n{explained}" if explained else ""))
    assert held, "the killed worker held no running trial: the kill came too late to test the heartbeat"
    assert not running and not running1
    # the target: at most one duplicated training per 100 trials (0 at this size). The race once seen here
    # (every worker measuring the baseline for its summary at the same moment) is gone: the baseline is
    # the study's first trial and goes through the claims; _explain prints what a duplicate looked like
    assert dup <= len(trials) // 100 and dup1 == 0, explained
    assert len(set(seeds.values())) == 3 and set(seeds) == {"w0", "w1", "w2"}
    assert answer == answer1
