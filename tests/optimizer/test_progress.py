"""The progress of a search (optimizer.progress): its state and time left on a fake clock, the
plain lines of a non-interactive stream, tqdm's bars on an interactive one, and what
``search(progress=...)`` means. No test depends on how fast anything runs."""

from __future__ import annotations

import io

import pytest

from optimizer.progress import SearchProgress, is_interactive, progress_callbacks
from profilers.config import ConfigError


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class V:
    def __init__(self, key: str, label: str) -> None:
        self.key, self.label = key, label


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_an_optuna_search_on_a_log_writes_one_plain_line_per_trial():
    clock, s = Clock(), io.StringIO()
    p = SearchProgress(method="tpe", min_quality=0.9, variants=8, n_trials=10, stream=s, clock=clock)
    assert not p.interactive  # a StringIO is no terminal
    clock.t = 5
    p.on_progress(1, 10, V("a", "prune 50%"), 0.95, 120.0)
    assert p.line() == "[tpe] trials 1/10, best $120.00 (prune 50%), elapsed 00:05"
    clock.t = 9
    p.on_progress(2, 10, V("b", "quantize"), 0.85, 80.0)  # cheaper but below the target: not the best
    # 4 s a trial after the first, 8 trials to go: 32 s
    assert p.line() == "[tpe] trials 2/10, best $120.00 (prune 50%), elapsed 00:09, left ~00:32"
    p.close()
    assert s.getvalue().splitlines() == ["[tpe] trials 1/10, best $120.00 (prune 50%), elapsed 00:05",
                                         "[tpe] trials 2/10, best $120.00 (prune 50%), elapsed 00:09, left ~00:32"]


def test_the_timeout_caps_the_time_left_and_a_resumed_study_counts_its_trial_numbers():
    clock, s = Clock(), io.StringIO()
    p = SearchProgress(method="random", min_quality=0.9, variants=8, n_trials=100, timeout_s=60, stream=s, clock=clock)
    clock.t = 10
    p.on_progress(41, 100, V("a", "a"), 0.5, 1.0)  # the study had 40 trials already
    clock.t = 20
    p.on_progress(42, 100, V("b", "b"), 0.5, 1.0)
    # 10 s a trial x 58 trials = 580 s, but the timeout (from the search's start) leaves 40 s
    assert p.time_left() == 40 and p.line().endswith("trials 42/100, best: none yet, elapsed 00:20, left ~00:40")


def test_a_lazy_search_knows_no_time_left_when_evaluating_but_an_exhaustive_one_does():
    clock = Clock()
    lazy = SearchProgress(method="lazy", min_quality=0.9, variants=3, stream=io.StringIO(), clock=clock)
    full = SearchProgress(method="exhaustive", min_quality=0.9, variants=3, stream=io.StringIO(), clock=clock)
    for p in (lazy, full):
        for i, cost in enumerate((10.0, 20.0, float("inf"))):  # the third has no feasible deployment
            p.on_progress(i + 1, 3, V(f"v{i}", f"v{i}"), None, cost)
        clock.t = 0
        p.on_evaluation(V("v0", "v0"), 0.5)
        clock.t = 30
        p.on_evaluation(V("v1", "v1"), 0.95)
    assert lazy.total() is None and lazy.time_left() is None
    assert lazy.line() == "[lazy] quality evaluations 2, best $20.00 (v1), elapsed 00:30"
    assert full.total() == 2 and full.time_left() == 0  # both feasible variants evaluated
    assert full.line() == "[exhaustive] quality evaluations 2/2, best $20.00 (v1), elapsed 00:30, left ~00:00"


def test_failures_and_rungs_are_noted_but_not_counted_as_quality():
    s = io.StringIO()
    p = SearchProgress(method="lazy", min_quality=0.9, variants=2, stream=s, clock=Clock())
    p.on_progress(1, 2, V("a", "a"), None, 5.0)
    p.on_evaluation(V("a", "a"), 0.99, 0.25, "")  # a rung after 25 % of the training: not a's quality
    p.on_evaluation(V("b", "b"), None, 1.0, "boom")
    p.on_log("pricing c failed: disk full")
    p.on_log("a chatty message")  # only with verbose
    assert (p.evaluated, p.failed, p.best) == (1, 1, None)
    text = s.getvalue()
    assert "quality b: failed: boom\n" in text and "pricing c failed: disk full\n" in text
    assert "chatty" not in text and "quality a after 25%" not in text


def test_an_interactive_stream_gets_tqdm_bars_one_per_phase():
    clock, s = Clock(), Terminal()
    p = SearchProgress(method="lazy", min_quality=0.9, variants=4, stream=s, clock=clock)
    assert p.interactive
    p.show()
    for i in range(4):
        clock.t = 2 * (i + 1)
        p.on_progress(i + 1, 4, V(f"v{i}", f"variant {i}"), None, 100.0 * (i + 1))
    clock.t = 20
    p.on_evaluation(V("v1", "variant 1"), 0.97, 1.0, "")
    p.on_log("pricing v3 failed: boom")
    p.close()
    text = s.getvalue()
    # tqdm redraws each bar in place; the pricing bar stays on screen when the evaluations start
    assert "\r[lazy] pricing |#####     | 2/4, best: none yet, elapsed 00:04, left ~00:04" in text
    assert "\r[lazy] pricing |##########| 4/4, best: none yet, elapsed 00:08, left ~00:00\n" in text
    assert "\r[lazy] quality evaluations 1, best $200.00 (variant 1), elapsed 00:20" in text
    assert "\rpricing v3 failed: boom\n" in text  # above the bar, which is drawn again below it
    assert text.endswith("elapsed 00:20\n")


def test_what_is_interactive():
    class KernelStream(io.StringIO):  # what Jupyter puts in sys.stderr
        pass

    KernelStream.__module__ = "ipykernel.iostream"
    assert is_interactive(Terminal()) and is_interactive(KernelStream())
    assert not is_interactive(io.StringIO())


STATE = dict(method="lazy", min_quality=0.9, variants=2)


def test_search_progress_argument():
    seen = []

    def log(m):
        seen.append(("log", m))

    def on_eval(*a):
        seen.append(("eval", a[1]))

    def mine(*a):
        seen.append(("progress", a[0]))

    # None (the default): a bar only on an interactive stream
    with progress_callbacks(None, log=log, on_evaluation=on_eval, stream=io.StringIO(), **STATE) as cb:
        assert cb == (None, log, on_eval)
    s = Terminal()
    with progress_callbacks(None, log=log, on_evaluation=on_eval, stream=s, **STATE) as (prog, lg, ev):
        prog(1, 2, V("a", "a"), None, 3.0)
        ev(V("a", "a"), 0.95, 1.0, "")
        lg("pricing b failed: x")
    assert seen == [("eval", 0.95), ("log", "pricing b failed: x")]  # the caller's callbacks, then the bar's
    assert "[lazy] quality evaluations 1, best $3.00 (a)" in s.getvalue() and s.getvalue().endswith("\n")
    # True: always, one plain line per event on a log; False: never; a callable: that one, no bar
    s = io.StringIO()
    with progress_callbacks(True, stream=s, **STATE) as (prog, _, _):
        prog(1, 2, V("a", "a"), None, 3.0)
    assert s.getvalue().splitlines()[-1] == "[lazy] pricing 1/2, best: none yet, elapsed 00:00"
    with progress_callbacks(False, log=log, stream=Terminal(), **STATE) as cb:
        assert cb == (None, log, None)
    with progress_callbacks(mine, stream=Terminal(), **STATE) as cb:
        assert cb == (mine, None, None)
    with pytest.raises(ConfigError, match=r"^search\.progress must be None \(a bar when stderr is interactive\), "
                                          r"True, False or a callable .*; got 'yes'\.$"):
        with progress_callbacks("yes", **STATE):
            pass


def test_the_bar_is_closed_when_the_search_raises():
    s = Terminal()
    with pytest.raises(KeyboardInterrupt):
        with progress_callbacks(True, stream=s, **STATE) as (prog, _, _):
            prog(1, 2, V("a", "a"), None, 3.0)
            raise KeyboardInterrupt
    assert s.getvalue().endswith("\n")  # the line is finished: the shell prompt starts on its own


def test_search_draws_a_bar_on_a_terminal_unless_told_not_to(wl, cost_model, one_thread, tmp_path, monkeypatch):
    from optimizer import SearchSpace, search

    space = SearchSpace(prune_amount=(0.0,), quantize=("none",), devices=("T4",), batch_sizes=(1024,))
    kw = dict(min_quality=0.5, method="exhaustive", profile_time_cap_s=0.1, output_dir=tmp_path)
    err = Terminal()
    monkeypatch.setattr("sys.stderr", err)
    search(wl, space, cost_model, progress=False, **kw)
    assert err.getvalue() == ""
    search(wl, space, cost_model, **kw)  # the default: a bar, as stderr is a terminal
    assert "\r[exhaustive] pricing |##########| 1/1" in err.getvalue()
