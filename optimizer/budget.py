"""What a search may spend: wall seconds, quality evaluations, and dollars of compute.

The dollar spend is derived, not measured by a meter: the search's wall time on this machine
times an hourly rate. The rate is ``usd_per_hour`` when given, else this machine's logical CPUs
times the price book's vCPU-hour price (the row that prices the ``host`` device), and
:attr:`SearchBudget.rate_source` says which. Every method checks the budget before it starts a
quality evaluation (the expensive step) and stops when one more evaluation, at the mean wall time
of the earlier evaluations of the same fidelity, would overrun it; the best strategy found so far
is kept and reported.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from profilers.config import invalid
from profilers.render import usd

__all__ = ["SearchBudget", "host_rate"]


def host_rate(cost_model: Any) -> tuple[float, str]:
    """USD per hour of this machine: logical CPUs x the price book's vCPU-hour price."""
    row = cost_model.prices.get("vcpu_hour", "vcpu", cost_model.scenario.ownership.rent_tier, None)
    n = os.cpu_count() or 1
    return n * row.usd_per_unit, f"{n} vCPU (this machine) x {row.cite()}"


@dataclass
class SearchBudget:
    """Limits on one search call; None = no limit of that kind."""

    timeout_s: float | None = None
    max_evaluations: int | None = None
    budget_usd: float | None = None
    usd_per_hour: float = 0.0
    rate_source: str = ""
    clock: Callable[[], float] = time.perf_counter
    t0: float = field(default=0.0)

    def __post_init__(self) -> None:
        from .search_options import check_search_options

        check_search_options("search", {"timeout_s": self.timeout_s, "max_evaluations": self.max_evaluations,
                                        "budget_usd": self.budget_usd})
        if not isinstance(self.usd_per_hour, (int, float)) or isinstance(self.usd_per_hour, bool) \
                or not self.usd_per_hour >= 0 or not math.isfinite(self.usd_per_hour):
            raise invalid("search", "usd_per_hour", "a number >= 0", self.usd_per_hour)
        self.t0 = self.clock()

    @classmethod
    def for_search(cls, cost_model: Any, *, timeout_s: float | None, max_evaluations: int | None,
                   budget_usd: float | None, usd_per_hour: float | None) -> "SearchBudget":
        if usd_per_hour is None:
            rate, source = host_rate(cost_model) if budget_usd is not None else (0.0, "")
        else:
            rate, source = usd_per_hour, "search(usd_per_hour=...)"
        if budget_usd is not None and rate <= 0:
            raise invalid("search", "usd_per_hour", "a rate > 0 to spend a budget_usd", rate)
        return cls(timeout_s, max_evaluations, budget_usd, rate, source)

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.t0

    @property
    def spent_usd(self) -> float:
        return self.elapsed_s / 3600 * self.usd_per_hour

    def exhausted(self, evaluations: int = 0, next_s: float = 0.0) -> str | None:
        """Why the next quality evaluation must not start (None: it may).

        ``evaluations``: quality evaluations done so far in this search (for ``max_evaluations``);
        ``next_s``: the predicted wall time of the next one (the mean of earlier ones of its fidelity).
        """
        if self.max_evaluations is not None and evaluations >= self.max_evaluations:
            return f"the evaluation budget ({self.max_evaluations}) is used"
        nxt = next_s
        if self.timeout_s is not None and self.elapsed_s + nxt > self.timeout_s:
            return f"the time budget ({self.timeout_s:g} s) would be overrun (elapsed {self.elapsed_s:.0f} s)"
        if self.budget_usd is not None and self.spent_usd + nxt / 3600 * self.usd_per_hour > self.budget_usd:
            return (f"the compute budget ({usd(self.budget_usd)}) would be overrun: {usd(self.spent_usd)} spent "
                    f"at ${self.usd_per_hour:.4f}/h ({self.rate_source})")
        return None

    def describe(self) -> dict[str, Any]:
        """The spend so far, for the result."""
        out: dict[str, Any] = {"elapsed_s": self.elapsed_s}
        if self.usd_per_hour > 0:
            out.update(spent_usd=self.spent_usd, usd_per_hour=self.usd_per_hour,
                       rate_source=f"derived: wall time x {self.rate_source}")
        for k in ("timeout_s", "max_evaluations", "budget_usd"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out
