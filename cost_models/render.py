"""Rendering of cost results: plain-text tables, HTML for Jupyter, pandas DataFrames.

Pure presentation; nothing here computes a cost. pandas is imported only when asked for.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from .components import COMPONENTS

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import SensitivityResult
    from .breakdown import CostBreakdown

__all__ = ["breakdown_table", "breakdown_html", "breakdown_dataframe", "sensitivity_table"]

_TITLES = {"hardware": "C_hardware", "train_deploy": "C_train&deploy", "data": "C_data", "human": "C_human"}


def _usd(x: float | None) -> str:
    if x is None:
        return "-"
    if x != x or x in (float("inf"), float("-inf")):
        return "inf"
    return f"${x:,.2f}" if abs(x) >= 1 or x == 0 else f"${x:.4g}"


def _qty(x: float) -> str:
    return f"{x:,.4g}" if abs(x) < 1e4 else f"{x:,.0f}"


def _header(b: "CostBreakdown") -> list[str]:
    dev = b.serve_device if b.serve_device == b.train_device else f"serve {b.serve_device}, train {b.train_device}"
    return [f"{b.scenario_name}: {b.model_name} on {dev}"]


def breakdown_table(b: "CostBreakdown") -> str:
    """Fixed-width text: items under their component, subtotals, total and unit costs."""
    lines = _header(b)
    if not b.ok:
        return "\n".join(lines + [f"INFEASIBLE: {b.message}"])
    w = max([len(it.name) for it in b.items] + [24])
    lines.append(f"  {'item':<{w}}  {'quantity':>14} {'unit':<14} {'rate':>12}  {'cost':>14}")
    comps = b.components
    for c in COMPONENTS:
        lines.append(f"{_TITLES[c]:<{w + 2}}  {'':>14} {'':<14} {'':>12}  {_usd(comps[c]):>14}")
        for it in b.items_of(c):
            lines.append(f"  {it.name:<{w}}  {_qty(it.quantity):>14} {it.unit:<14} {it.usd_per_unit:>12,.4g}  "
                         f"{_usd(it.cost_usd):>14}")
    lines.append(f"{'TOTAL':<{w + 2}}  {'':>14} {'':<14} {'':>12}  {_usd(b.total_usd):>14}")
    lines.append(f"per 1,000 requests: {_usd(b.usd_per_1000_requests)}   per training run: "
                 f"{_usd(b.usd_per_training_run)}   replicas: {b.replicas}   training runs: {b.training_runs}")
    return "\n".join(lines)


def breakdown_rows(b: "CostBreakdown") -> list[dict[str, Any]]:
    return [{"component": it.component, "name": it.name, "quantity": it.quantity, "unit": it.unit,
             "usd_per_unit": it.usd_per_unit, "cost_usd": it.cost_usd, "activity": it.activity,
             "formula": it.formula, "provenance": it.provenance} for it in b.items]


def breakdown_dataframe(b: "CostBreakdown"):
    """One row per line item (pandas imported here, on demand)."""
    import pandas as pd

    cols = ["component", "name", "quantity", "unit", "usd_per_unit", "cost_usd", "activity", "formula", "provenance"]
    return pd.DataFrame(breakdown_rows(b), columns=cols)


def breakdown_html(b: "CostBreakdown") -> str:
    """An HTML table for Jupyter's ``_repr_html_``."""
    e = html.escape
    head = f"<p><b>{e(_header(b)[0])}</b></p>"
    if not b.ok:
        return head + f"<p style='color:#b00'><b>Infeasible:</b> {e(b.message)}</p>"
    rows = []
    comps = b.components
    for c in COMPONENTS:
        rows.append(f"<tr style='background:#eee'><th colspan='4' style='text-align:left'>{_TITLES[c]}</th>"
                    f"<th style='text-align:right'>{_usd(comps[c])}</th></tr>")
        for it in b.items_of(c):
            rows.append(f"<tr title='{e(it.formula)} | {e(it.provenance)}'><td>{e(it.name)}</td>"
                        f"<td style='text-align:right'>{_qty(it.quantity)}</td><td>{e(it.unit)}</td>"
                        f"<td style='text-align:right'>{it.usd_per_unit:,.4g}</td>"
                        f"<td style='text-align:right'>{_usd(it.cost_usd)}</td></tr>")
    rows.append(f"<tr><th colspan='4' style='text-align:left'>Total</th>"
                f"<th style='text-align:right'>{_usd(b.total_usd)}</th></tr>")
    foot = (f"<p>per 1,000 requests: {_usd(b.usd_per_1000_requests)} &middot; per training run: "
            f"{_usd(b.usd_per_training_run)} &middot; replicas: {b.replicas}</p>")
    return (head + "<table><tr><th>item</th><th>quantity</th><th>unit</th><th>rate (USD)</th><th>cost</th></tr>"
            + "".join(rows) + "</table>" + foot)


def sensitivity_table(r: "SensitivityResult") -> str:
    """The tornado table as text, widest swing first."""
    lines = [f"base total {_usd(r.base_total_usd)}; each input -{r.delta:.0%} / +{r.delta:.0%}",
             f"  {'input':<32} {'total at low':>16} {'total at high':>16} {'swing':>14}"]
    for row in r.rows:
        lines.append(f"  {row.knob:<32} {_usd(row.total_low_usd):>16} {_usd(row.total_high_usd):>16} "
                     f"{_usd(row.swing_usd):>14}")
    return "\n".join(lines)
