"""Progress of a running search: phase, how many done, best cost so far, elapsed and time left.

:class:`SearchProgress` receives what :func:`optimizer.search` reports (its ``progress``,
``on_evaluation`` and ``log`` callbacks) and keeps the state: the phase (building the workload,
pricing the variants, quality evaluations, Optuna trials), how many of how many are done, the best
feasible cost so far, the time elapsed and, where the budget makes it knowable, the time left.

Drawing is tqdm's (``tqdm.auto``): on an interactive stream (a terminal, or Jupyter's) each phase is
a bar, in Jupyter a widget when ipywidgets is installed (else a text bar). On any other stream (a
log file, a pipe, CI) a bar redrawn with carriage returns would be one unreadable line, so each
event writes one plain line instead: the same text without the bar (:meth:`SearchProgress.line`).

Where the figures come from: the pricing phase of ``lazy``/``exhaustive`` and every Optuna trial
arrive through ``progress(done, total, variant, quality_or_None, cost_usd)``; every quality
evaluation (and multi-fidelity rung) through ``on_evaluation(variant, quality, fidelity, error)``;
``log`` messages are shown when they report a failure, or all of them with ``verbose``.

:func:`progress_callbacks` is what ``search(progress=...)`` means: ``None`` (the default) a bar
when stderr is interactive, nothing otherwise; ``True`` always (plain lines on a non-interactive
stream); ``False`` none; a callable: that callback, no bar.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from typing import Any, Callable, Iterator, TextIO

from profilers.render import usd

__all__ = ["SearchProgress", "format_duration", "is_interactive", "progress_callbacks"]

_PHASES = {"starting": "building the workload", "pricing": "pricing", "evaluating": "quality evaluations",
           "trials": "trials"}


def format_duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def is_interactive(stream: Any = None) -> bool:
    """Whether ``stream`` (default: stderr) is read by a person as it is written: a terminal, or
    the output of a Jupyter cell (ipykernel's stream)."""
    stream = sys.stderr if stream is None else stream
    if type(stream).__module__.startswith("ipykernel"):
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _tqdm() -> Any:
    """``tqdm.auto.tqdm``, without its import-time hint that ipywidgets is missing (a text bar then)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm
    return tqdm


class SearchProgress:
    """State of a running search, drawn as a tqdm bar (interactive) or one line per event.

    ``method`` and the budget (``n_trials``, ``timeout_s``, ``max_evaluations``) decide what
    "time left" can say: Optuna methods extrapolate from the trials done (capped by the
    timeout); a lazy search stops when its answer is certified, which nobody can foresee, so it
    shows an upper bound only under ``max_evaluations``. ``interactive`` None: decided by
    :func:`is_interactive` from ``stream`` (default stderr).
    """

    def __init__(self, *, method: str, min_quality: float, variants: int, n_trials: int | None = None,
                 timeout_s: float | None = None, max_evaluations: int | None = None, stream: TextIO | None = None,
                 interactive: bool | None = None, verbose: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.method, self.min_quality, self.variants = method, min_quality, variants
        self.n_trials, self.timeout_s, self.max_evaluations = n_trials, timeout_s, max_evaluations
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = is_interactive(self.stream) if interactive is None else interactive
        self.verbose = verbose
        self.clock = clock
        self.t0 = clock()
        self.phase = "starting"
        self.priced = 0
        self.trials = 0  # Optuna trials finished (this run's count of callbacks)
        self.trial_number = 0  # the study's trial number (counts resumed trials too)
        self.evaluated = 0
        self.failed = 0
        self.costs: dict[str, float] = {}
        self.labels: dict[str, str] = {}
        self.best: tuple[float, str] | None = None
        self._phase_t0 = self.t0
        self._phase_n0 = 0
        self._bar: Any = None  # the current phase's tqdm bar (interactive)
        self._bar_phase = ""

    # ---- callbacks --------------------------------------------------------------------------------
    def on_progress(self, done: int, total: int | None, variant: Any, quality: float | None, cost_usd: float) -> None:
        key, label = getattr(variant, "key", str(variant)), getattr(variant, "label", str(variant))
        self.costs[key], self.labels[key] = cost_usd, label
        if quality is None:  # the pricing pass of lazy / exhaustive
            self.priced = done
            if self.phase != "pricing":
                self._enter("pricing")
        else:  # an Optuna trial finished
            self.trials += 1
            if self.phase != "trials":
                self._enter("trials")
            self.trial_number = done
            self._consider(key, quality)
        self.show()

    def on_evaluation(self, variant: Any, quality: float | None, fidelity: float = 1.0, error: str = "") -> None:
        """A quality evaluation finished (``quality`` None: it failed with ``error``)."""
        key, label = getattr(variant, "key", str(variant)), getattr(variant, "label", str(variant))
        at = "" if fidelity >= 1 else f" after {fidelity:.0%} of its training"
        text = f"quality {label}{at}: " + (f"{quality:.4f}" if quality is not None else f"failed: {error}")
        if fidelity < 1:  # a multi-fidelity rung: not the variant's quality
            self._say(text)
            return
        self.evaluated += 1
        if self.phase != "evaluating" and self.method in ("lazy", "exhaustive"):
            self._enter("evaluating")
        if quality is None:
            self.failed += 1
            self.note(text)
            return
        self._consider(key, quality)
        self._say(text)

    def on_log(self, message: str) -> None:
        if "failed" in message or self.verbose:
            self.note(message)

    def _say(self, text: str) -> None:
        if self.verbose:
            self.note(text)
        else:
            self.show()

    def _enter(self, phase: str) -> None:
        self.phase, self._phase_t0 = phase, self.clock()
        self._phase_n0 = self._events()

    def _consider(self, key: str, quality: float) -> None:
        cost = self.costs.get(key, math.inf)
        if quality >= self.min_quality and math.isfinite(cost) and (self.best is None or cost < self.best[0]):
            self.best = (cost, self.labels.get(key, key))

    # ---- state ------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.clock() - self.t0

    def count(self) -> int:
        """Events done in the current phase (for trials: the study's trial number)."""
        return {"pricing": self.priced, "trials": self.trial_number, "evaluating": self.evaluated}.get(self.phase, 0)

    def total(self) -> int | None:
        """How many events the current phase has at most, where that is known."""
        if self.phase == "pricing":
            return self.variants
        if self.phase == "trials":
            return self.n_trials or None
        if self.phase == "evaluating":
            if self.max_evaluations:
                return self.max_evaluations
            if self.method == "exhaustive":  # every variant with a feasible deployment
                return sum(1 for c in self.costs.values() if math.isfinite(c))
        return None

    def _events(self) -> int:
        """Events this process saw in the current phase (trials: this run's, not the study's)."""
        return self.trials if self.phase == "trials" else self.count()

    def _rate_s(self) -> float | None:
        """Seconds per event in the current phase, from the events after the phase's first."""
        n = self._events() - self._phase_n0
        return (self.clock() - self._phase_t0) / n if n > 0 else None

    def time_left(self) -> float | None:
        """Seconds left, when the budget makes that knowable; None otherwise."""
        rate, total = self._rate_s(), self.total()
        left = rate * max(0, total - self.count()) if rate is not None and total is not None else None
        if self.timeout_s is not None and self.phase == "trials":  # the timeout counts from the search's start
            cap = max(0.0, self.timeout_s - self.elapsed())
            left = cap if left is None else min(left, cap)
        return left

    # ---- text -------------------------------------------------------------------------------------
    def description(self) -> str:
        return f"[{self.method}] {_PHASES[self.phase]}"

    def postfix(self) -> str:
        """What follows the count: the best so far, elapsed and time left."""
        parts = []
        if self.best is not None:
            parts.append(f"best {usd(self.best[0])} ({self.best[1]})")
        elif self.phase != "starting":
            parts.append("best: none yet")
        tl = self.time_left()
        parts.append(f"elapsed {format_duration(self.elapsed())}"
                     + (f", left ~{format_duration(tl)}" if tl is not None else ""))
        return ", ".join(parts)

    def line(self) -> str:
        """The state as one line of plain text: what the bar shows, without the bar."""
        total = self.total()
        count = "" if self.phase == "starting" else f" {self.count()}" + (f"/{total}" if total is not None else "")
        return f"{self.description()}{count}, {self.postfix()}"

    # ---- output -----------------------------------------------------------------------------------
    def show(self) -> None:
        """Draw the current state: the phase's bar, redrawn now; or one line."""
        if not self.interactive:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            return
        total = self.total()
        fmt = ("{desc}{postfix}" if self.phase == "starting" else
               "{desc} {n_fmt}{postfix}" if total is None else "{desc} |{bar}| {n_fmt}/{total_fmt}{postfix}")
        if self._bar is None or self._bar_phase != self.phase:
            self.close()
            self._bar = _tqdm()(total=total, initial=self.count(), desc=self.description(), postfix=self.postfix(),
                                bar_format=fmt, file=self.stream, leave=self.phase != "starting", dynamic_ncols=True,
                                mininterval=0, disable=False)
            self._bar_phase = self.phase
            return
        bar = self._bar
        if bar.total != total:
            bar.reset(total=total)
        bar.bar_format, bar.n = fmt, self.count()
        bar.set_description_str(self.description(), refresh=False)
        bar.set_postfix_str(self.postfix(), refresh=False)
        bar.refresh()  # every event is drawn (no rate limit: events are seconds apart)

    def note(self, message: str) -> None:
        """A message above the bar (or a line of its own)."""
        if self.interactive and self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Finish the current bar (left on screen, except the "building the workload" one)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _both(first: Callable | None, second: Callable) -> Callable:
    if first is None:
        return second

    def call(*args: Any) -> None:
        first(*args)
        second(*args)

    return call


@contextlib.contextmanager
def progress_callbacks(progress: Any = None, *, log: Callable | None = None, on_evaluation: Callable | None = None,
                       stream: TextIO | None = None, **state: Any) -> Iterator[tuple[Any, Any, Any]]:
    """``(progress, log, on_evaluation)`` for a search, from ``search(progress=...)``.

    ``progress``: None (the default) a bar when ``stream`` (default stderr) is interactive, nothing
    otherwise; True a bar, or one line per event on a non-interactive stream; False nothing; a
    callable ``progress(done, total, variant, quality_or_None, cost_usd)``: that callback, no bar.
    With a bar, the caller's ``log`` and ``on_evaluation`` are called first, then the bar's.
    ``state``: :class:`SearchProgress`'s ``method``, ``min_quality``, ``variants`` and budget.
    The bar is closed when the block ends, however it ends.
    """
    from profilers.config import invalid

    if callable(progress) and not isinstance(progress, bool):
        yield progress, log, on_evaluation
        return
    if progress is not None and not isinstance(progress, bool):
        raise invalid("search", "progress", "None (a bar when stderr is interactive), True, False or a callable "
                      "progress(done, total, variant, quality_or_None, cost_usd)", progress)
    if not (is_interactive(stream) if progress is None else progress):
        yield None, log, on_evaluation
        return
    bar = SearchProgress(stream=stream, **state)
    bar.show()
    try:
        yield bar.on_progress, _both(log, bar.on_log), _both(on_evaluation, bar.on_evaluation)
    finally:
        bar.close()
