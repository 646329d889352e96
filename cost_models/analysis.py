"""Analyses people run before they commit: break-even, sensitivity, uncertainty (scipy).

- :func:`break_even`: the value of one input (traffic, horizon, utilization, ...) at which
  option B's total equals option A's, by Brent's method (``scipy.optimize.brentq``).
- :func:`sensitivity`: each input -X% / +X%, the total at each end, sorted by swing (a tornado
  table; :func:`cost_models.tornado_plot` draws it).
- :func:`uncertainty`: inputs drawn from ranges (Latin hypercube, ``scipy.stats.qmc``, seeded)
  -> the distribution of each option's total and how often the cheapest option changes.

The inputs are the knobs of :mod:`cost_models.knobs` (``knob_names()``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from profilers.config import check_positive, invalid

from .knobs import KNOBS, apply_factor, get_knob
from .model import CostModel

__all__ = ["Option", "BreakEven", "break_even", "TornadoRow", "SensitivityResult", "sensitivity",
           "UncertaintyResult", "uncertainty"]


@dataclass(frozen=True)
class Option:
    """A named way to do the job: a cost model and the figures it prices."""

    name: str
    model: CostModel
    figures: Any
    train_figures: Any = None

    def total_usd(self, model: CostModel | None = None) -> float:
        return (model or self.model).estimate(self.figures, self.train_figures).total_usd


# ----------------------------------------------------------------------------------------------
# break-even
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BreakEven:
    """Where B's total equals A's. ``status``: "found" or "no_crossing" (one is cheaper across
    the whole interval: ``cheaper`` names it)."""

    over: str
    bounds: tuple[float, float]
    status: str
    value: float | None
    a_total_usd: float | None
    b_total_usd: float | None
    cheaper_below: str | None
    cheaper: str | None
    message: str


def _at(opt: Option, over: str, x: float) -> float:
    k = get_knob(over)
    return opt.total_usd(k.set(opt.model, k.clip(x)))


def break_even(a: Option, b: Option, *, over: str, bounds: tuple[float, float], xtol: float = 1e-9,
               rtol: float = 1e-10) -> BreakEven:
    """Find x in ``bounds`` where total_B(x) = total_A(x), x being the knob ``over``.

    Typical: A = the plain model, B = a technique that costs engineer hours and training but
    serves cheaper; over="traffic_requests_per_s" or "horizon_months" says from which volume
    or horizon B pays back. over="utilization" with A renting and B owning gives the
    utilization above which owning is cheaper. Totals that jump (replica counts are
    integers) give the jump point.
    """
    from scipy.optimize import brentq

    k = get_knob(over)
    if k.kind != "value":
        raise invalid("break_even", "over", "a value knob: " + ", ".join(n for n, kk in KNOBS.items()
                                                                         if kk.kind == "value"), over)
    lo, hi = map(float, bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise invalid("break_even", "bounds", "finite (lo, hi) with lo < hi", bounds)

    def f(x: float) -> float:
        d = _at(b, over, x) - _at(a, over, x)
        if not math.isfinite(d):
            raise invalid("break_even", "bounds", f"a range where both options are feasible ({over}={x:g} is not)",
                          bounds)
        return d

    flo, fhi = f(lo), f(hi)
    if flo == 0 or fhi == 0 or (flo < 0) != (fhi < 0):
        x = lo if flo == 0 else hi if fhi == 0 else brentq(f, lo, hi, xtol=xtol, rtol=rtol)
        below = a.name if flo > 0 else b.name
        return BreakEven(over, (lo, hi), "found", x, _at(a, over, x), _at(b, over, x), below, None,
                         f"{b.name} and {a.name} cost the same at {over} = {x:,.6g}; below it {below} is cheaper.")
    cheaper = b.name if flo < 0 else a.name
    return BreakEven(over, (lo, hi), "no_crossing", None, None, None, None, cheaper,
                     f"{cheaper} is cheaper for every {over} in [{lo:g}, {hi:g}].")


# ----------------------------------------------------------------------------------------------
# sensitivity
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TornadoRow:
    knob: str
    base_value: float
    low_value: float
    high_value: float
    total_low_usd: float
    total_high_usd: float

    @property
    def swing_usd(self) -> float:
        return abs(self.total_high_usd - self.total_low_usd)


@dataclass(frozen=True)
class SensitivityResult:
    base_total_usd: float
    delta: float
    rows: tuple[TornadoRow, ...]

    def to_table(self) -> str:
        from .render import sensitivity_table

        return sensitivity_table(self)

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame([{**r.__dict__, "swing_usd": r.swing_usd} for r in self.rows])

    def plot(self, ax=None, top: int | None = 12):
        from .plots import tornado_plot

        return tornado_plot(self, ax=ax, top=top)


def sensitivity(option: Option, *, delta: float = 0.2, knobs: Sequence[str] | None = None,
                include_zero: bool = False) -> SensitivityResult:
    """Move each knob to (1 - delta) and (1 + delta) of its value; rows sorted by swing."""
    check_positive("sensitivity", "delta", delta)
    if delta >= 1:
        raise invalid("sensitivity", "delta", "a fraction in (0, 1)", delta)
    base = option.total_usd()
    if not math.isfinite(base):
        raise invalid("sensitivity", "option", "a feasible option", option.name)
    rows = []
    for name in (knobs if knobs is not None else list(KNOBS)):
        k = get_knob(name)
        v = k.get(option.model)
        lo_v, hi_v = k.clip(v * (1 - delta)), k.clip(v * (1 + delta))
        t_lo = option.total_usd(k.set(option.model, lo_v))
        t_hi = option.total_usd(k.set(option.model, hi_v))
        row = TornadoRow(name, v, lo_v, hi_v, t_lo, t_hi)
        if include_zero or row.swing_usd > 1e-9 * max(1.0, base):
            rows.append(row)
    rows.sort(key=lambda r: (-r.swing_usd, r.knob))
    return SensitivityResult(base, delta, tuple(rows))


# ----------------------------------------------------------------------------------------------
# uncertainty
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UncertaintyResult:
    """Monte Carlo totals: ``totals[i, j]`` is option j under sample i of the knob factors."""

    option_names: tuple[str, ...]
    knob_names: tuple[str, ...]
    factors: Any  # numpy array (n, knobs)
    totals: Any  # numpy array (n, options)
    nominal_totals: tuple[float, ...]
    seed: int
    extra: dict = field(default_factory=dict)

    @property
    def nominal_cheapest(self) -> str:
        return self.option_names[min(range(len(self.nominal_totals)), key=self.nominal_totals.__getitem__)]

    @property
    def cheapest(self) -> list[str]:
        return [self.option_names[j] for j in self.totals.argmin(axis=1)]

    def p_cheapest(self) -> dict[str, float]:
        """Share of samples in which each option is the cheapest."""
        idx = self.totals.argmin(axis=1)
        n = len(idx)
        return {name: float((idx == j).sum()) / n for j, name in enumerate(self.option_names)}

    @property
    def p_cheapest_changes(self) -> float:
        """Share of samples whose cheapest option differs from the cheapest at nominal inputs."""
        return 1.0 - self.p_cheapest()[self.nominal_cheapest]

    def summary(self) -> dict[str, dict[str, float]]:
        import numpy as np

        out = {}
        for j, name in enumerate(self.option_names):
            col = self.totals[:, j]
            out[name] = {"nominal": self.nominal_totals[j], "mean": float(col.mean()),
                         "p05": float(np.percentile(col, 5)), "p50": float(np.percentile(col, 50)),
                         "p95": float(np.percentile(col, 95))}
        return out

    def to_dataframe(self):
        import pandas as pd

        df = pd.DataFrame(self.factors, columns=[f"factor:{k}" for k in self.knob_names])
        for j, name in enumerate(self.option_names):
            df[f"total_usd:{name}"] = self.totals[:, j]
        df["cheapest"] = self.cheapest
        return df


def uncertainty(options: Sequence[Option], ranges: Mapping[str, tuple[float, float]], *, n: int = 1000,
                seed: int = 0) -> UncertaintyResult:
    """Draw each knob's factor uniformly in its (lo, hi) range (Latin hypercube, seeded), price
    every option under each draw, and return the totals.

    ``ranges`` maps knob name -> (low factor, high factor) relative to the option's own value,
    e.g. {"price:gpu_hour": (0.7, 1.3), "traffic_requests_per_s": (0.5, 2.0)}. The same draw
    applies to every option, so the options are compared under the same world.
    """
    import numpy as np
    from scipy.stats import qmc

    if not options:
        raise invalid("uncertainty", "options", "at least one Option", options)
    names = [o.name for o in options]
    if len(set(names)) != len(names):
        raise invalid("uncertainty", "options", "options with distinct names", names)
    if not isinstance(n, int) or n < 1:
        raise invalid("uncertainty", "n", "an integer >= 1", n)
    knobs = list(ranges)
    for k in knobs:
        get_knob(k)
        lo, hi = ranges[k]
        if not (0 <= lo <= hi and math.isfinite(hi)):
            raise invalid("uncertainty", f"ranges[{k!r}]", "(low factor, high factor) with 0 <= low <= high", ranges[k])
    if knobs:
        u = qmc.LatinHypercube(d=len(knobs), rng=np.random.default_rng(seed)).random(n)
        lo = np.array([ranges[k][0] for k in knobs])
        hi = np.array([ranges[k][1] for k in knobs])
        factors = lo + u * (hi - lo)
    else:
        factors = np.ones((n, 0))
    totals = np.empty((n, len(options)))
    for i in range(n):
        for j, opt in enumerate(options):
            m = opt.model
            for c, k in enumerate(knobs):
                m = apply_factor(m, k, float(factors[i, c]))
            totals[i, j] = opt.total_usd(m)
    nominal = tuple(o.total_usd() for o in options)
    return UncertaintyResult(tuple(names), tuple(knobs), factors, totals, nominal, seed)
