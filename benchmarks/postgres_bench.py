"""Several `sigmastar worker` processes on one study: one killed with kill -9 on PostgreSQL, and
trials/s with 1, 2 and 4 workers on PostgreSQL against a journal file.

    python benchmarks/postgres_bench.py [--write] [--kill-runs 3] [--trials 60]

Needs a PostgreSQL server: SIGMASTAR_TEST_POSTGRES_URL (a user who may create databases), else one
is started for the run with ``.ci/postgres start`` and stopped at the end. Every run gets its own
database.

* **kill -9**: three workers on the small digits job (tpe, 24 trials, 4 variants, heartbeat every
  1 s, grace 3 s); the first is killed right after its first finished trial; the other two finish,
  then ``sigmastar search --storage`` reports over the study. Counted: trials, trainings run twice
  (rows of the shared evaluations.jsonl per content key), trials left RUNNING, whether the answer
  equals the exhaustive (fault-free) one.
* **trials/s**: N workers (1, 2, 4) run ``--trials`` trials of the same job on one study, with every
  variant's quality already journaled in the shared output folder, so a trial costs what the
  coordination costs: sampling, the storage (claims, heartbeats, tell) and pricing. trials/s =
  finished trials / (last trial's end - first trial's start), from the storage's own timestamps
  (process start-up excluded). This machine has 2 cores: 4 workers share them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fault_bench import JOB, best_of, sigmastar  # noqa: E402

FAST_BEAT = {"SIGMASTAR_HEARTBEAT_INTERVAL_S": "1", "SIGMASTAR_HEARTBEAT_GRACE_S": "3"}
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")


def job(folder: Path, method: str, trials: int | None = None) -> Path:
    p = folder / f"{method}-{trials}.toml"
    p.write_text(JOB.format(method=method, extra=f"n_trials = {trials}\nseed = 0" if trials else ""))
    return p


class Server:
    """The admin URL of a PostgreSQL server, started here when none is given; ``database()`` makes a new one."""

    def __init__(self) -> None:
        self.url, self.folder = os.environ.get("SIGMASTAR_TEST_POSTGRES_URL", ""), None
        if not self.url:
            out = subprocess.run([str(ROOT / ".ci" / "postgres"), "start"], capture_output=True, text=True,
                                 env=dict(os.environ, PYTHON=sys.executable))
            exports = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.split()
                           if "=" in line)
            self.url = exports.get("SIGMASTAR_TEST_POSTGRES_URL", "").strip("'\"")
            self.folder = exports.get("SIGMASTAR_TEST_POSTGRES_DIR", "").strip("'\"")
            if not self.url:
                sys.exit(f"no PostgreSQL server: set SIGMASTAR_TEST_POSTGRES_URL or install the server binaries "
                         f"(.ci/postgres start said: {out.stderr.strip()[-500:]})")
        import sqlalchemy

        self.admin = sqlalchemy.create_engine(self.url, isolation_level="AUTOCOMMIT")

    def database(self) -> str:
        import sqlalchemy
        from sqlalchemy.engine import make_url

        name = f"sigmastar_bench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as c:
            c.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        self.admin.dispose()
        if self.folder:
            subprocess.run([str(ROOT / ".ci" / "postgres"), "stop", self.folder], capture_output=True)


def workers(job_path: Path, storage: str, out: Path, n: int, env: dict, kill_first: bool = False) -> str | None:
    """Start ``n`` workers on one study and wait for them; with ``kill_first``, kill -9 the first right
    after its first finished trial. Returns the killed worker's identity (None when none was killed)."""
    procs = []
    for i in range(n):
        procs.append(subprocess.Popen(sigmastar("worker", str(job_path), "--storage", storage, "--output", str(out)),
                                      stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE if (kill_first and i == 0) else subprocess.DEVNULL,
                                      text=True, env=dict(env, SIGMASTAR_WORKER_ID=f"w{i}"),
                                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)))
    killed = None
    if kill_first:
        deadline = time.monotonic() + 300
        for line in procs[0].stderr:
            if " trials " in line or time.monotonic() > deadline:
                break
        procs[0].kill()
        procs[0].wait(30)
        killed = "w0"
    for p in procs[1 if kill_first else 0:]:
        if p.wait(900) != 0:
            raise RuntimeError(f"a worker exited {p.returncode}")
    return killed


def study_trials(storage: str) -> list:
    import optuna

    if "://" in storage:
        st = optuna.storages.RDBStorage(storage)
    else:
        from optuna.storages.journal import JournalFileBackend

        st = optuna.storages.JournalStorage(JournalFileBackend(storage))
    (name,) = optuna.get_all_study_names(st)
    return optuna.load_study(study_name=name, storage=st).get_trials(deepcopy=False)


def duplicated(out: Path) -> int:
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines() if line.strip()]
    return sum(n - 1 for n in Counter(r["content"] for r in rows if not r.get("error")).values())


def kill_rows(server: Server, work: Path, runs: int, truth: str) -> list[dict]:
    import optuna

    rows = []
    for r in range(runs):
        url, out = server.database(), work / f"kill-{r}"
        j = job(work, "tpe", 24)
        t0 = time.perf_counter()
        workers(j, url, out, 3, dict(ENV, **FAST_BEAT), kill_first=True)
        time.sleep(4)  # past the grace period: the search below fails the killed worker's trial
        rc = subprocess.run(sigmastar("search", str(j), "--storage", url, "--output", str(out), "--quiet"),
                            env=dict(ENV, **FAST_BEAT), capture_output=True, text=True).returncode
        trials = study_trials(url)
        best, status = best_of(out)
        rows.append({"run": r + 1, "trials": len(trials), "duplicated": duplicated(out),
                     "running": sum(t.state == optuna.trial.TrialState.RUNNING for t in trials),
                     "killed_held": sum(t.user_attrs.get("worker") == "w0" and t.state == optuna.trial.TrialState.FAIL
                                        for t in trials),
                     "search_exit": rc, "answer_equal": best == truth, "status": status,
                     "seconds": time.perf_counter() - t0})
        print(f"kill -9 run {r + 1}: {rows[-1]}", flush=True)
    return rows


def throughput_rows(server: Server, work: Path, trials: int, counts: tuple[int, ...]) -> list[dict]:
    import optuna

    warm = work / "warm"
    subprocess.run(sigmastar("search", str(job(work, "exhaustive")), "--output", str(warm), "--quiet"), env=ENV,
                   check=True, capture_output=True)
    rows = []
    for engine in ("postgresql", "journal file"):
        for n in counts:
            out = work / f"tp-{engine.split()[0]}-{n}"
            out.mkdir()
            for name in ("profiles", "models"):  # every variant measured already: a trial costs its coordination
                if (warm / name).exists():
                    shutil.copytree(warm / name, out / name)
            shutil.copy(warm / "evaluations.jsonl", out / "evaluations.jsonl")
            storage = server.database() if engine == "postgresql" else str(out / "study.journal")
            workers(job(work, "tpe", trials), storage, out, n, ENV)
            done = [t for t in study_trials(storage) if t.state.is_finished() and t.datetime_complete]
            span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
            rows.append({"engine": engine, "workers": n, "trials": len(done), "seconds": span,
                         "trials_per_s": len(done) / span if span > 0 else float("nan"),
                         "evaluations_run": duplicated(out),
                         "running": sum(t.state == optuna.trial.TrialState.RUNNING for t in study_trials(storage))})
            print(f"throughput: {rows[-1]}", flush=True)
    return rows


def markdown(kills: list[dict], tps: list[dict], truth: str, seconds: float, trials: int, version: str) -> str:
    import optuna
    import sqlalchemy
    import torch

    from profilers.render import markdown_table

    base = {(r["engine"], r["workers"]): r["trials_per_s"] for r in tps}
    lines = ["## Several workers on PostgreSQL: a killed worker, and trials/s against a journal file", "",
             f"Command: `python benchmarks/postgres_bench.py --write --kill-runs {len(kills)} --trials {trials}` "
             f"({_dt.date.today().isoformat()}, {seconds:.0f} s; PostgreSQL {version} on 127.0.0.1, optuna "
             f"{optuna.__version__}, SQLAlchemy {sqlalchemy.__version__}, torch {torch.__version__}). The small "
             f"digits job (tpe over 4 variants; the exhaustive answer is {truth}).", "",
             "### Three workers, one killed with kill -9 after its first finished trial (heartbeat 1 s, grace 3 s)",
             "",
             markdown_table(["run", "trials", "trainings duplicated", "per 100 trials", "left RUNNING",
                             "killed worker's trials failed", "search exit", "answer = fault-free", "seconds"],
                            [[r["run"], r["trials"], r["duplicated"], f"{100 * r['duplicated'] / r['trials']:.1f}",
                              r["running"], r["killed_held"], r["search_exit"],
                              "yes" if r["answer_equal"] else f"no ({r['status']})", f"{r['seconds']:.0f}"]
                             for r in kills]), "",
             f"Totals: {sum(r['trials'] for r in kills)} trials, {sum(r['duplicated'] for r in kills)} trainings "
             f"duplicated, {sum(r['running'] for r in kills)} trials left RUNNING, "
             f"{sum(not r['answer_equal'] for r in kills)} answers different from the fault-free one.", "",
             f"### trials/s, {trials} trials per study, every variant's quality already journaled", "",
             markdown_table(["storage", "workers", "finished trials", "seconds (first start to last end)", "trials/s",
                             "x 1 worker", "evaluations run", "left RUNNING"],
                            [[r["engine"], r["workers"], r["trials"], f"{r['seconds']:.1f}",
                              f"{r['trials_per_s']:.2f}", f"{r['trials_per_s'] / base[(r['engine'], 1)]:.2f}",
                              r["evaluations_run"], r["running"]] for r in tps]), "",
             "A trial here costs sampling (TPE), the storage round trips (the claim's reads of the study, "
             "heartbeats, tell) and pricing; \"evaluations run\" counts journal rows beyond the one per "
             "variant already there (0: no variant was trained again). The machine has 2 cores, so 4 workers share them."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kill-runs", type=int, default=3)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--write", action="store_true", help="write benchmarks/results/postgres.md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    server = Server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            truth_out = work / "truth"
            subprocess.run(sigmastar("search", str(job(work, "exhaustive")), "--output", str(truth_out), "--quiet"),
                           env=ENV, check=True, capture_output=True)
            truth, _ = best_of(truth_out)
            kills = kill_rows(server, work, args.kill_runs, truth)
            tps = throughput_rows(server, work, args.trials, tuple(int(n) for n in args.workers.split(",")))
        with server.admin.connect() as c:
            version = c.exec_driver_sql("SHOW server_version").scalar()
        text = markdown(kills, tps, truth, time.perf_counter() - t0, args.trials, version)
    finally:
        server.close()
    print(text)
    if args.write:
        out = ROOT / "benchmarks" / "results" / "postgres.md"
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
