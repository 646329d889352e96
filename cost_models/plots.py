"""Plots of analysis results (matplotlib, imported only when a plot is drawn)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import SensitivityResult

__all__ = ["tornado_plot"]


def tornado_plot(result: "SensitivityResult", ax=None, top: int | None = 12):
    """Horizontal bars from the total at -delta to the total at +delta, widest on top.

    Returns the matplotlib Axes. Computation is in :func:`cost_models.sensitivity`; this only
    draws its result.
    """
    import matplotlib.pyplot as plt

    rows = list(result.rows[:top] if top else result.rows)[::-1]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.4 * max(3, len(rows)) + 1))
    base = result.base_total_usd
    for i, r in enumerate(rows):
        ax.barh(i, r.total_low_usd - base, left=base, color="#4c72b0", label="-" if i == 0 else None)
        ax.barh(i, r.total_high_usd - base, left=base, color="#dd8452", label="+" if i == 0 else None)
    ax.axvline(base, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r.knob for r in rows])
    ax.set_xlabel("total cost (USD)")
    ax.set_title(f"Sensitivity: each input -{result.delta:.0%} (blue) / +{result.delta:.0%} (orange)")
    return ax
