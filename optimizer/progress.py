"""A progress line for a running search: phase, trials done, best cost so far, elapsed and time left.

:class:`SearchProgress` receives what :func:`optimizer.search` reports (its ``progress``,
``on_evaluation`` and ``log`` callbacks), keeps the state, and renders one line (:meth:`SearchProgress.line`, pure).
:meth:`SearchProgress.show` writes it: redrawn in place on a terminal, one line per event otherwise.

Where the figures come from: the pricing phase of ``lazy``/``exhaustive`` and every Optuna trial
arrive through ``progress(done, total, variant, quality_or_None, cost_usd)``; every quality evaluation
(and multi-fidelity rung) through ``on_evaluation(variant, quality, fidelity, error)``; ``log`` messages
are shown when they report a failure, or all of them with ``verbose``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, TextIO

from profilers.render import usd

__all__ = ["SearchProgress", "format_duration"]

def format_duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class SearchProgress:
    """State of a running search and its one-line rendering.

    ``method`` and the budget (``n_trials``, ``timeout_s``, ``max_evaluations``) decide what
    "time left" can say: Optuna methods extrapolate from the trials done (capped by the
    timeout); a lazy search stops when its answer is certified, which nobody can foresee, so it
    shows an upper bound only under ``max_evaluations``.
    """

    def __init__(self, *, method: str, min_quality: float, variants: int, n_trials: int | None = None,
                 timeout_s: float | None = None, max_evaluations: int | None = None, stream: TextIO | None = None,
                 tty: bool | None = None, verbose: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.method, self.min_quality, self.variants = method, min_quality, variants
        self.n_trials, self.timeout_s, self.max_evaluations = n_trials, timeout_s, max_evaluations
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
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
        self._trials_t0 = self.t0  # the Optuna timeout counts from the start of the search call
        self._width = 0

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

    def _say(self, text: str) -> None:
        if self.verbose:
            self.note(text)
        else:
            self.show()

    def on_log(self, message: str) -> None:
        if "failed" in message or self.verbose:
            self.note(message)

    def _enter(self, phase: str) -> None:
        self.phase, self._phase_t0 = phase, self.clock()
        self._phase_n0 = self._count()

    def _consider(self, key: str, quality: float) -> None:
        cost = self.costs.get(key, math.inf)
        if quality >= self.min_quality and math.isfinite(cost) and (self.best is None or cost < self.best[0]):
            self.best = (cost, self.labels.get(key, key))

    # ---- rendering ----------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.clock() - self.t0

    def _count(self) -> int:
        return {"pricing": self.priced, "trials": self.trials, "evaluating": self.evaluated}.get(self.phase, 0)

    def _rate_s(self) -> float | None:
        """Seconds per event in the current phase, from the events after the phase's first."""
        n = self._count() - self._phase_n0
        return (self.clock() - self._phase_t0) / n if n > 0 else None

    def time_left(self) -> float | None:
        """Seconds left, when the budget makes that knowable; None otherwise."""
        rate = self._rate_s()
        left = None
        if rate is not None:
            if self.phase == "pricing":
                left = rate * (self.variants - self.priced)
            elif self.phase == "trials" and self.n_trials:
                left = rate * max(0, self.n_trials - self.trial_number)
            elif self.phase == "evaluating" and self.max_evaluations:
                left = rate * max(0, self.max_evaluations - self.evaluated)
            elif self.phase == "evaluating" and self.method == "exhaustive":
                todo = sum(1 for c in self.costs.values() if math.isfinite(c))
                left = rate * max(0, todo - self.evaluated)
        if self.timeout_s is not None and self.phase == "trials":
            cap = max(0.0, self.timeout_s - (self.clock() - self._trials_t0))
            left = cap if left is None else min(left, cap)
        return left

    def line(self) -> str:
        parts = []
        if self.phase == "starting":
            parts.append("building the workload")
        elif self.phase == "pricing":
            parts.append(f"priced {self.priced}/{self.variants} variants")
        elif self.phase == "evaluating":
            parts.append(f"priced {self.priced}/{self.variants}, quality evaluated {self.evaluated}"
                         + (f"/{self.max_evaluations} max" if self.max_evaluations else ""))
        else:
            total = f"/{self.n_trials}" if self.n_trials else ""
            parts.append(f"trials {self.trial_number}{total}")
        if self.best is not None:
            parts.append(f"best {usd(self.best[0])} ({self.best[1]})")
        elif self.phase != "starting":
            parts.append("best: none yet")
        tl = self.time_left()
        parts.append(f"elapsed {format_duration(self.elapsed())}"
                     + (f", left ~{format_duration(tl)}" if tl is not None else ""))
        return f"[{self.method}] " + " | ".join(parts)

    # ---- output ----------------------------------------------------------------------------------
    def show(self) -> None:
        text = self.line()
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        """A message above the progress line."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(message + "\n")
        if self.tty:
            self.show()
        else:
            self.stream.flush()

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
