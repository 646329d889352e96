"""The Optuna methods of :func:`optimizer.search`: ``tpe``, ``random`` and ``nsga2``.

One trial = one model variant (its knob levels): the trial prices the variant (cheap), then
measures its quality (expensive) unless one of these settles it first:

* **no feasible deployment**: the trial fails with the reason (nothing to train);
* **dearer than the best feasible so far** (``skip_dearer``, single-objective only): the cost is
  known before any training, so a variant that cannot beat the incumbent is pruned untrained;
* **already measured**: a finished trial of the study (this worker's, another worker's, an earlier
  run's) or the output folder's journal has the variant's quality: it is reused, never retrained;
* **multi-fidelity** (``fidelities``, single-objective only): the variant is first trained with a
  fraction of its steps; after each rung the quality shortfall ``min_quality - q`` is reported
  (``trial.report``, step = rung number) and the pruner (Optuna's ``ThresholdPruner`` by default:
  prune when the shortfall exceeds ``prune_margin``; or ``median``, ``hyperband``,
  ``successive_halving``, or any ``optuna.pruners.BasePruner``) may stop it there. Each rung
  retrains from the base model, so a rung's result is reproducible under its own content key and
  the last rung is exactly the full evaluation the other methods share.

Counting: ``n_trials`` counts finished trials of the study (this worker's and others' on a
shared storage, from earlier runs too) except those cut short by Ctrl-C, a budget or a killed
worker (user attr ``unfinished``, or failed by the heartbeat and re-queued). A callback stops
every worker once the count is reached, so workers overshoot by at most the trials already
running elsewhere.

Several runs and workers on one study (``sigmastar worker``, docs/distributed.md):

* **seeds from the study**: each run seeds its sampler with the search's seed mixed with the number
  of trials already in the study and the worker's identity (:func:`run_seed`;
  ``SIGMASTAR_WORKER_ID``, else host:pid on a shared storage). A resumed run or another worker never
  replays the first trials; a fresh run on its own output folder keeps the search's seed (the same
  run twice gives the same trials). Each trial records ``seed`` and ``worker`` in its user attrs;
  the samplers condition on the study's finished trials (TPE with ``constant_liar`` also on the
  running ones).
* **one training per variant**: before training, a trial claims its variant through the storage
  (:func:`claim`): the lowest-numbered live (RUNNING) trial of a variant trains it; a later one
  waits for its outcome and takes it (user attr ``duplicate_of``). A claim is only as alive as its
  trial: a killed worker's trial stops beating and is failed, and the claim passes on.
* **the baseline first**: a study's first trial is the baseline (the variant with every knob at
  level 0, the model as trained; ``enqueue_trial``, user attr ``baseline``), so the savings are
  priced against a measured baseline that went through the claims like any trial (measured once
  however many workers finish at once) and the samplers start from it. It is never skipped as
  dearer than the best so far.
* **heartbeats**: trials beat every ``SIGMASTAR_HEARTBEAT_INTERVAL_S`` seconds (default 10) on RDB
  storages (Optuna's ``RDBStorage(heartbeat_interval, grace_period, heartbeat_stale_trial_callback)``)
  and on journal files (:func:`heartbeat_journal_storage`, the same interface). A trial silent for
  ``SIGMASTAR_HEARTBEAT_GRACE_S`` (default 30) is failed by the next worker that starts or starts a
  trial (``optuna.storages.fail_stale_trials``) and re-queued by Optuna's
  ``RetryHeartbeatStaleTrialCallback`` (at most :data:`MAX_RETRY` times). On the output folder's
  own journal (no ``storage``: the folder lock makes the run its only user) a trial left RUNNING is
  failed and re-queued at once when the next run starts.
* **Ctrl-C / SIGTERM** fail the running trial (user attr ``unfinished``, the reason) and re-queue
  its variant; no trial is left RUNNING.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from profilers.config import invalid, to_json_dict
from profilers.render import usd

from .evaluate import EvaluationStopped
from .methods import Outcome, SearchContext, SearchMethod, register_method

__all__ = ["PRUNERS", "make_pruner", "rungs", "run_optuna", "study_name", "storage_for", "counted", "claim",
           "run_seed", "worker_identity", "heartbeat_settings", "heartbeat_journal_storage", "display_url",
           "HEARTBEAT_INTERVAL_S", "GRACE_PERIOD_S", "MAX_RETRY", "OptunaMethod", "TPE", "Random", "NSGA2"]

PRUNERS = ("threshold", "median", "hyperband", "successive_halving", "none")
#: seconds between a running trial's heartbeats, and of silence after which it counts as dead
#: (overridden by the environment variables SIGMASTAR_HEARTBEAT_INTERVAL_S / SIGMASTAR_HEARTBEAT_GRACE_S)
HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S = 10, 30
#: how many times a trial whose worker died is re-queued (a variant that kills its worker every time
#: must not stop the study)
MAX_RETRY = 2
_BEAT = "sigmastar:heartbeat"  # a journal trial's last heartbeat: [trial_id, unix time]


def study_name(workload: Any, space: Any, cost_model: Any, min_quality: float, method: str, seed: int) -> str:
    payload = json.dumps({"space": to_json_dict(space), "scenario": to_json_dict(cost_model.scenario),
                          "min_quality": min_quality, "method": method, "seed": seed}, sort_keys=True, default=str)
    return f"sigmastar-{workload.name}-{method}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


# ------------------------------------------------------------------------------------------------
# seeds and workers
# ------------------------------------------------------------------------------------------------
def worker_identity(shared: bool) -> str:
    """Who runs trials: ``SIGMASTAR_WORKER_ID`` when set, else ``host:pid`` on a shared storage, else
    "" (a run on its own output folder's journal: the folder lock makes it the only one)."""
    from .evaluate import who

    return who() if shared or os.environ.get("SIGMASTAR_WORKER_ID", "").strip() else ""


def run_seed(seed: int, n_trials: int, identity: str) -> int:
    """The sampler seed of a run that starts on a study holding ``n_trials`` trials: ``seed`` itself
    for a fresh study and no identity (reproducible), else a 32-bit mix of the three, so neither a
    resumed run nor a second worker replays the trials already in the study."""
    if n_trials == 0 and not identity:
        return seed
    digest = hashlib.sha256(f"{seed}|{n_trials}|{identity}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


# ------------------------------------------------------------------------------------------------
# storages with heartbeats
# ------------------------------------------------------------------------------------------------
def heartbeat_settings() -> tuple[int, int]:
    """``(interval_s, grace_s)``: :data:`HEARTBEAT_INTERVAL_S` / :data:`GRACE_PERIOD_S`, or the
    environment's ``SIGMASTAR_HEARTBEAT_INTERVAL_S`` / ``SIGMASTAR_HEARTBEAT_GRACE_S`` (whole seconds;
    the grace period must exceed the interval)."""
    def read(name: str, default: int, floor: int) -> int:
        raw = os.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or value < floor:
            raise invalid("environment", name, f"a whole number of seconds >= {floor}", raw)
        return value

    interval = read("SIGMASTAR_HEARTBEAT_INTERVAL_S", HEARTBEAT_INTERVAL_S, 1)
    grace = read("SIGMASTAR_HEARTBEAT_GRACE_S", max(GRACE_PERIOD_S, 3 * interval), interval + 1)
    return interval, grace


def _retry_callback() -> Any:
    import optuna
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


@functools.lru_cache(maxsize=1)
def _heartbeat_journal_class() -> type:
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat  # the interface RDBStorage implements
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
        """Optuna's JournalStorage with the heartbeat interface of RDBStorage: a running trial's
        heartbeat is a system attr (``[trial_id, unix time]``, so a re-queued copy does not inherit
        it); a RUNNING trial whose last beat (or start) is older than the grace period is stale.
        Times are this machine's clock: share a journal file between processes of one machine."""

        def __init__(self, backend: Any, heartbeat_interval: int, grace_period: int,
                     heartbeat_stale_trial_callback: Callable | None = None) -> None:
            super().__init__(backend)
            self.heartbeat_interval = heartbeat_interval
            self.grace_period = grace_period
            self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                self.set_trial_system_attr(trial_id, _BEAT, [trial_id, time.time()])
            except (UpdateFinishedTrialError, KeyError):
                pass  # finished meanwhile (or failed as stale by another worker): nothing to keep alive

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now, stale = time.time(), []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                beat = t.system_attrs.get(_BEAT)
                last = beat[1] if isinstance(beat, list) and len(beat) == 2 and beat[0] == t._trial_id else \
                    (t.datetime_start.timestamp() if t.datetime_start is not None else None)
                if last is not None and now - last > self.grace_period:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self.heartbeat_interval

        def get_heartbeat_stale_trial_callback(self) -> Callable | None:
            return self.heartbeat_stale_trial_callback

    return HeartbeatJournalStorage


def heartbeat_journal_storage(path: str | Path, heartbeat_interval: int | None = None,
                              grace_period: int | None = None) -> Any:
    """A journal-file storage whose trials beat (see :func:`heartbeat_settings` for the defaults);
    stale trials are failed and re-queued by ``RetryHeartbeatStaleTrialCallback``."""
    from optuna.storages.journal import JournalFileBackend

    interval, grace = heartbeat_settings()
    return _heartbeat_journal_class()(JournalFileBackend(str(path)), heartbeat_interval or interval,
                                      grace_period or grace, _retry_callback())


def display_url(url: str) -> str:
    """``url`` with its password masked (for messages and logs)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for a message
        return url.split("@")[-1]


def storage_for(storage: Any, output_dir: Path | None):
    """An Optuna storage: None -> a journal file in ``output_dir`` (in memory without one); a URL
    with ``://`` -> RDBStorage (e.g. PostgreSQL, for several workers); a path -> a journal file.
    Both beat (:func:`heartbeat_settings`) and re-queue a dead worker's trial; a storage object is
    used as given."""
    if storage is None:
        if output_dir is None:
            return None
        output_dir.mkdir(parents=True, exist_ok=True)
        return heartbeat_journal_storage(output_dir / "study.journal")
    if isinstance(storage, str) and "://" in storage:
        return _rdb_storage(storage)
    if isinstance(storage, (str, Path)):
        return heartbeat_journal_storage(storage)
    return storage  # an optuna storage object


def _rdb_storage(url: str, attempts: int = 5) -> Any:
    """RDBStorage with heartbeats; workers starting together on an empty database race to create
    its tables (one wins, the others get a unique violation): they try again after a moment."""
    import random

    import optuna
    from optuna.exceptions import ExperimentalWarning

    interval, grace = heartbeat_settings()
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=interval,
                    grace_period=grace, heartbeat_stale_trial_callback=_retry_callback())
        except ImportError as e:
            hint = " (PostgreSQL: pip install 'sigmastar[postgres]', which brings psycopg 3)" \
                if url.startswith("postgresql") else ""
            raise invalid("search", "storage", f"a database URL whose driver is installed{hint}; "
                          f"{type(e).__name__}: {e}", display_url(url)) from None
        except Exception as e:  # noqa: BLE001 - sqlalchemy's OperationalError and kin: no server, bad login
            if not type(e).__module__.startswith(("sqlalchemy", "psycopg")):
                raise
            if type(e).__name__ in ("IntegrityError", "ProgrammingError") and attempt + 1 < attempts:
                time.sleep(0.2 + random.random())  # another worker is creating the tables
                continue
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise invalid("search", "storage", f"a database this machine can reach and log in to "
                          f"({type(e).__name__}: {first})", display_url(url)) from None
    raise AssertionError("unreachable")


def _fail_stale(study: Any, everything: bool = False) -> None:
    """Fail the study's stale trials (``optuna.storages.fail_stale_trials``, which re-queues them).
    ``everything``: every RUNNING trial is stale (the output folder's own journal, under its lock)."""
    import optuna
    from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    if everything:
        callback = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            try:
                storage.set_trial_user_attr(t._trial_id, "unfinished", "left running by a run that was killed; "
                                                                       "failed and re-queued by the next run")
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue
            if callback is not None:
                callback(study, storage.get_trial(t._trial_id))
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


# ------------------------------------------------------------------------------------------------
# one training per variant
# ------------------------------------------------------------------------------------------------
def _result(t: Any) -> bool:
    """Whether finished trial ``t`` settled its variant (an outcome another trial of it may take):
    a measured quality, a pruning, or an evaluation error; not a dead worker or an interrupt."""
    from optuna.trial import TrialState

    if t.user_attrs.get("unfinished"):
        return False
    return (t.state == TrialState.COMPLETE and "quality" in t.user_attrs) or \
        (t.state == TrialState.PRUNED and "pruned" in t.user_attrs) or \
        (t.state == TrialState.FAIL and bool(t.user_attrs.get("error")))


def claim(study: Any, trial: Any, variant: str, *, poll_s: float = 0.5, grace_s: float = 30.0,
          stop: Callable[[], str | None] = lambda: None, log: Callable[[str], None] = lambda m: None,
          on_stale: Callable[[], None] = lambda: None, stale_every_s: float = 10.0) -> Any:
    """Claim ``variant`` for ``trial`` through the study's storage before training it.

    Returns None when this trial trains the variant (user attr ``training``), else the finished
    trial whose outcome it takes: a COMPLETE one with a quality, or the outcome (pruned, failed
    with an error) of the trial it waited for. The rule: among the live (RUNNING) trials of a
    variant, the lowest-numbered one trains it, and one already training keeps it. Every trial
    labels itself (user attr ``variant``) right after sampling, and a trial decides only once every
    lower-numbered live trial is labelled (or ``grace_s`` passed), so of two trials that sample one
    variant at once the later one always sees the earlier. A claim lives as long as its trial:
    ``on_stale`` (every ``stale_every_s``) fails trials whose worker stopped beating, and the claim
    passes to the next trial. ``stop()`` is called on every poll (a budget that ends the wait raises
    from it).
    """
    from optuna.trial import TrialState

    me, since, checked = trial.number, time.monotonic(), time.monotonic()
    watched: set[int] = set()
    told = None
    while True:
        trials = study.get_trials(deepcopy=False)
        same = [t for t in trials if t.number != me and t.user_attrs.get("variant") == variant]
        done = [t for t in same if t.state == TrialState.COMPLETE and "quality" in t.user_attrs and _result(t)]
        done += [t for t in same if t.number in watched and t.state.is_finished() and _result(t)]
        if done:
            return min(done, key=lambda t: (t.state != TrialState.COMPLETE, t.number))
        running = [t for t in trials if t.state == TrialState.RUNNING and t.number != me]
        unlabelled = [t for t in running if t.number < me and "variant" not in t.user_attrs]
        holders = [t for t in same if t.state == TrialState.RUNNING
                   and (t.number < me or t.user_attrs.get("training"))]
        if not holders and (not unlabelled or time.monotonic() - since > grace_s):
            trial.set_user_attr("training", True)
            return None
        if holders:
            holder = min(holders, key=lambda t: (not t.user_attrs.get("training"), t.number))
            watched.add(holder.number)
            if told != holder.number:
                told = holder.number
                trial.set_user_attr("waiting_for", holder.number)
                log(f"trial {me}: {variant} is claimed by trial {holder.number}; waiting for its result "
                    "instead of training it again")
        stop()
        time.sleep(poll_s)
        if time.monotonic() - checked >= stale_every_s:
            checked = time.monotonic()
            on_stale()


# ------------------------------------------------------------------------------------------------
# the study
# ------------------------------------------------------------------------------------------------
def rungs(fidelities: Any) -> tuple[float, ...]:
    """The rungs of checked ``fidelities`` (see :mod:`optimizer.search_options`), ending at the full
    run 1.0 (appended when missing); () = single fidelity."""
    if fidelities is None:
        return ()
    vals = [float(f) for f in fidelities]
    return tuple(vals if vals[-1] >= 1 else [*vals, 1.0])


def make_pruner(pruner: Any, n_rungs: int, margin: float):
    """An Optuna pruner from a name (:data:`PRUNERS`) or a ``BasePruner`` instance (both checked by
    :mod:`optimizer.search_options`); ``margin`` in quality units for the threshold pruner."""
    import optuna

    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner == "threshold":
        return optuna.pruners.ThresholdPruner(upper=float(margin))
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, n_rungs), reduction_factor=3)
    if pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def counted(study: Any) -> int:
    """Finished trials that use up ``n_trials``: not those cut short by Ctrl-C, a budget or a killed
    worker (``unfinished``), nor a dead worker's trial that the heartbeat re-queued."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    return sum(1 for t in trials if t.state.is_finished() and not t.user_attrs.get("unfinished")
               and not (t.state == TrialState.FAIL and t.number in retried))


def _best_feasible(study: Any, min_quality: float) -> float:
    import optuna

    costs = [t.values[0] for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
             if t.user_attrs.get("quality", -math.inf) >= min_quality]
    return min(costs, default=math.inf)


def _settle_interrupted(study: Any, mine: Sequence[int], reason: str) -> None:
    """After an interrupt: fail this run's trials still RUNNING (with the reason) and re-queue the
    interrupted one's variant, so no trial is left RUNNING and a resumed run continues with it."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    for tid in mine[-1:]:  # one trial runs at a time: the last one taken is the one interrupted
        t = storage.get_trial(tid)
        if t.state == TrialState.RUNNING:
            try:
                storage.set_trial_user_attr(tid, "unfinished", reason)
                storage.set_trial_state_values(tid, TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue
        elif not (t.state == TrialState.FAIL and str(t.user_attrs.get("unfinished", "")).startswith("interrupted")):
            continue
        if t.params:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})


def _interrupt_behind(e: BaseException) -> bool:
    """Whether ``e`` is a KeyboardInterrupt or was raised while handling one (its context chain)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def run_optuna(ev: Any, variants: Sequence[Any], make_sampler: Callable[[int], Any], single: bool,
               min_quality: float, *, n_trials: int | None, budget: Any, storage: Any, name: str,
               progress: Callable | None, seed: int = 0, identity: str = "", private: bool = False,
               fidelities: tuple[float, ...] = (), pruner: Any = "threshold", prune_margin: float = 0.05,
               skip_dearer: bool = True) -> Any:
    """Run (or resume, or join) the study; returns it. See the module docstring. One integer
    parameter per declared knob of the space (its level, 0 = least compressed).

    ``make_sampler(seed)`` builds the sampler once the study is loaded, with :func:`run_seed` of
    ``seed``, the trials already there and ``identity`` (:func:`worker_identity`). ``private``: the
    storage is this run's alone (the output folder's journal under its lock), so any trial left
    RUNNING there is dead."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are recorded on the trials and in the journal
    by_knobs = {v.knobs: v for v in variants}
    space = ev.space
    sizes = space.shape
    knob_names = [n for n, _ in space.knob_fields()]
    study = optuna.create_study(study_name=name, storage=storage, directions=["minimize"] if single else
                                ["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=seed),
                                pruner=make_pruner(pruner if fidelities else "none", len(fidelities) - 1, prune_margin),
                                load_if_exists=True)
    _fail_stale(study, everything=private)  # a dead worker's (or killed run's) trials: failed and re-queued
    used_seed = run_seed(seed, len(study.get_trials(deepcopy=False)), identity)
    study.sampler = make_sampler(used_seed)
    mine: list[int] = []  # the trials this run created or took from the queue
    before_trial = study.sampler.before_trial

    def track(st: Any, frozen: Any) -> None:
        mine.append(frozen._trial_id)
        before_trial(st, frozen)

    study.sampler.before_trial = track
    remaining = None if n_trials is None else max(0, n_trials - counted(study))
    interval, grace = heartbeat_settings()
    base = variants[0] if variants and not any(variants[0].knobs) else None
    if base is not None and remaining != 0 and not ev.evaluated(base) and ev.price(base).feasible and \
            not any(t.user_attrs.get("variant") == base.key for t in study.get_trials(deepcopy=False)):
        # labelled at creation, so a claim sees the variant from the moment a worker takes the trial
        study.enqueue_trial(dict(zip(knob_names, base.knobs)), user_attrs={"variant": base.key, "baseline": True},
                            skip_if_exists=True)

    def stop_reason(fidelity: float = 1.0) -> str | None:
        return budget.exhausted(ev.quality_calls, ev.mean_seconds(fidelity))

    def cut_short(trial: Any, reason: str) -> None:
        trial.set_user_attr("unfinished", reason)
        trial.study.stop()
        raise optuna.TrialPruned(reason)

    def evaluate(trial: Any, v: Any, fidelity: float) -> float:
        if not ev.evaluated(v) or fidelity < 1:
            reason = stop_reason(fidelity)
            if reason:
                cut_short(trial, reason)
        q = ev.quality(v, fidelity)
        if q is None:
            err = ev.quality_error(v, fidelity) + ("" if fidelity >= 1 else f" (at fidelity {fidelity:g})")
            trial.set_user_attr("error", err)
            raise RuntimeError(err)
        return q

    def measured_elsewhere(trial: Any, v: Any, study_too: bool = True) -> None:
        """Take ``v``'s quality from a finished trial of the study, or from the output folder's journal
        (another worker may have journaled it since this one started, even one killed right after)."""
        if study_too:
            for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if t.user_attrs.get("variant") == v.key and "quality" in t.user_attrs:
                    ev.record_quality(v, float(t.user_attrs["quality"]))
                    return
        if ev.output_dir is not None:
            from .durable import read_rows
            from .evaluate import journal_row_problem

            key = ev.content_key(v)
            rows, _ = read_rows(ev.output_dir / "evaluations.jsonl", journal_row_problem)
            for r in rows:
                if r["content"] == key and r.get("quality") is not None and not r.get("error"):
                    ev.record_quality(v, float(r["quality"]))
                    return

    def take_claim(trial: Any, v: Any) -> None:
        """Train ``v`` only if no live trial holds it (:func:`claim`); else take the holder's outcome."""
        def waited_too_long() -> None:
            reason = budget.exhausted(0, 0.0)
            if reason:
                cut_short(trial, reason)

        holder = claim(trial.study, trial, v.key, poll_s=max(0.1, min(1.0, interval / 5)), grace_s=grace,
                       stop=waited_too_long, log=ev.log, on_stale=lambda: _fail_stale(trial.study),
                       stale_every_s=interval)
        if holder is None:
            measured_elsewhere(trial, v, study_too=False)  # journaled by a worker that died before finishing its trial
            return
        trial.set_user_attr("duplicate_of", holder.number)
        if holder.state == TrialState.COMPLETE:
            ev.record_quality(v, float(holder.user_attrs["quality"]))
        elif holder.state == TrialState.PRUNED:
            trial.set_user_attr("pruned", f"{holder.user_attrs['pruned']} (as trial {holder.number})")
            raise optuna.TrialPruned(f"as trial {holder.number}")
        else:
            trial.set_user_attr("error", f"{holder.user_attrs['error']} (trial {holder.number})")
            raise RuntimeError(holder.user_attrs["error"])

    def objective(trial: Any):
        knobs = tuple(trial.suggest_int(n, 0, s - 1) for n, s in zip(knob_names, sizes))
        v = by_knobs[knobs]
        trial.set_user_attr("variant", v.key)  # the claim's label: set before anything else
        trial.set_user_attr("seed", used_seed)
        trial.set_user_attr("worker", identity or "local")
        for key, blank in (("unfinished", ""), ("training", False), ("waiting_for", None)):
            if trial.user_attrs.get(key):  # inherited by a re-queued copy of a dead or interrupted trial
                trial.set_user_attr(key, blank)
        try:
            if not ev.evaluated(v):
                measured_elsewhere(trial, v)
            dep = ev.price(v)
            if not dep.feasible:
                trial.set_user_attr("error", dep.error or "no feasible deployment")
                trial.set_constraint("quality", 1.0)  # infeasible: nothing meets the scenario
                raise RuntimeError(dep.error or f"{v.key}: no feasible deployment")
            if single and skip_dearer and not ev.evaluated(v) and not trial.user_attrs.get("baseline"):
                best = _best_feasible(trial.study, min_quality)
                if dep.cost_usd >= best:
                    trial.set_user_attr("pruned", f"not trained: its cost {usd(dep.cost_usd)} cannot beat the best "
                                                  f"feasible so far ({usd(best)})")
                    raise optuna.TrialPruned("dearer than the best feasible so far")
            if not ev.evaluated(v):  # measured by no one yet: train it here unless a live trial holds it
                take_claim(trial, v)
            if fidelities and space.trains(v) and not ev.evaluated(v):
                for step, f in enumerate(fidelities[:-1], start=1):
                    qf = evaluate(trial, v, f)
                    trial.report(min_quality - qf, step)
                    if trial.should_prune():
                        trial.set_user_attr("pruned", f"quality {qf:.4f} after {f:.0%} of its training "
                                                      f"(target {min_quality:g}); pruned by {type(trial.study.pruner).__name__}")
                        trial.set_user_attr("partial_quality", qf)
                        raise optuna.TrialPruned(f"pruned at fidelity {f:g}")
            q = evaluate(trial, v, 1.0)
            trial.set_constraint("quality", min_quality - q)
            trial.set_user_attr("quality", q)
            if progress is not None:
                progress(trial.number + 1, n_trials, v, q, dep.cost_usd)
        except KeyboardInterrupt:
            trial.set_user_attr("unfinished", "interrupted (Ctrl-C)")
            raise
        except EvaluationStopped as e:  # the user's evaluate() raised: every worker of this run stops
            trial.set_user_attr("unfinished", f"the search stopped: {e.__cause__!r}")
            stopped.append(e)
            trial.study.stop()
            raise
        return dep.cost_usd if single else (dep.cost_usd, q)

    stopped: list[EvaluationStopped] = []

    def cap(study: Any, trial: Any) -> None:  # every worker stops once the study has its trials
        if (n_trials is not None and counted(study) >= n_trials) or stop_reason():
            study.stop()

    while (remaining is None or remaining > 0) and not stop_reason():
        timeout = None if budget.timeout_s is None else max(0.0, budget.timeout_s - budget.elapsed_s)
        try:
            study.optimize(objective, n_trials=remaining, timeout=timeout, catch=(Exception,), callbacks=[cap])
            if stopped:
                raise stopped[0]
            break
        except BaseException as e:
            if isinstance(e, ValueError) and str(e).startswith("Cannot tell a"):
                # another worker failed this worker's running trial as stale (its heartbeats were late):
                # Optuna re-queued it, so the worker goes on (an evaluation it journaled is reused)
                ev.log(f"a trial of this worker was failed by another one (no heartbeat for {grace} s); it is "
                       "queued again")
                remaining = None if n_trials is None else max(0, n_trials - counted(study))
                continue
            interrupt = _interrupt_behind(e)
            reason = "interrupted (Ctrl-C)" if interrupt else f"interrupted ({type(e).__name__}: {e})"
            try:
                _settle_interrupted(study, mine, reason)
            except Exception:  # noqa: BLE001 - the storage may be what failed: the heartbeat settles it then
                pass
            if interrupt and not isinstance(e, KeyboardInterrupt):
                # Ctrl-C or SIGTERM inside Optuna's tell can surface as another error raised while handling
                # it (seen: UnboundLocalError from optuna.study._optimize._run_trial): still an interrupt
                raise KeyboardInterrupt(str(e)) from e
            raise
    return study


# ------------------------------------------------------------------------------------------------
# the search methods
# ------------------------------------------------------------------------------------------------
class OptunaMethod(SearchMethod):
    """One trial per variant on an Optuna study (see the module docstring); subclasses say which sampler."""

    single: ClassVar[bool] = True  # one objective (cost, quality as a constraint) or two (Pareto)
    options = frozenset({"n_trials", "fidelities", "pruner", "prune_margin", "skip_dearer", "storage"})

    #: the ``optuna.samplers`` class this method runs, seeded from the study (:func:`run_seed`)
    sampler_class: ClassVar[str]

    def sampler_kwargs(self, ctx: SearchContext) -> dict[str, Any]:
        return {}

    def sampler(self, ctx: SearchContext, seed: int | None = None) -> Any:
        import optuna

        return getattr(optuna.samplers, self.sampler_class)(seed=ctx.seed if seed is None else seed,
                                                            **self.sampler_kwargs(ctx))

    def run(self, ctx: SearchContext) -> Outcome:
        o = ctx.options
        steps = rungs(o.get("fidelities"))
        name = study_name(ctx.workload, ctx.ev.space, ctx.cost_model, ctx.min_quality, self.name, ctx.seed)
        n_trials = o.get("n_trials")
        private = o.get("storage") is None
        study = run_optuna(ctx.ev, ctx.variants, lambda seed: self.sampler(ctx, seed), self.single, ctx.min_quality,
                           n_trials=n_trials if n_trials is not None else len(ctx.variants), budget=ctx.budget,
                           storage=storage_for(o.get("storage"), ctx.output_dir), name=name, progress=ctx.progress,
                           seed=ctx.seed, identity=worker_identity(shared=not private), private=private,
                           fidelities=steps, pruner=o.get("pruner", "threshold"),
                           prune_margin=o.get("prune_margin", 0.05), skip_dearer=o.get("skip_dearer", True))
        # trials finished earlier (a resumed study, or other workers on a shared storage) count too:
        # price their variants (cheap) and take their measured quality from the study
        ev, pruned = ctx.ev, {}
        by_key = {v.key: v for v in ctx.variants}
        for t in study.trials:
            v = by_key.get(t.user_attrs.get("variant"))
            if v is not None and "quality" in t.user_attrs:
                ev.price(v)
                ev.record_quality(v, float(t.user_attrs["quality"]))  # kept if already known
            elif v is not None and "pruned" in t.user_attrs:
                ev.price(v)
                pruned.setdefault(v.key, t.user_attrs["pruned"])
        for v in ctx.variants:  # evaluations journaled in this folder (earlier runs, other workers)
            if ev.evaluated(v):
                ev.price(v)
        message = f"Optuna {self.name} study {name!r}: the best of the trials run"
        reason = ctx.stop()
        if reason:
            message += f"; stopped: {reason}"
        return Outcome("best found", message, stopped=bool(reason), pruned=pruned)


@register_method
class TPE(OptunaMethod):
    name = "tpe"
    rank = 2
    summary = "Optuna's TPESampler over the knob levels: cost as the objective, quality as a constraint"
    sampler_class = "TPESampler"

    def sampler_kwargs(self, ctx: SearchContext) -> dict[str, Any]:
        return {"constant_liar": True}  # several workers: running trials count as likely-bad, not as unknown


@register_method
class Random(OptunaMethod):
    name = "random"
    rank = 3
    summary = "Optuna's RandomSampler over the knob levels (a baseline for the other methods)"
    sampler_class = "RandomSampler"


@register_method
class NSGA2(OptunaMethod):
    name = "nsga2"
    rank = 4
    summary = "Optuna's NSGAIISampler on (cost, quality): the Pareto front"
    sampler_class = "NSGAIISampler"
    single = False
    options = frozenset({"n_trials", "storage"})

    def sampler_kwargs(self, ctx: SearchContext) -> dict[str, Any]:
        return {"population_size": max(4, min(20, len(ctx.variants) // 2))}
