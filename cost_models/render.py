"""Rendering of cost results: line-item tables (text, Markdown, HTML), the tornado table, DataFrames.

Pure presentation; nothing here computes a cost. The tables are :mod:`profilers.render`'s (one
renderer, one money format :func:`profilers.render.usd`); pandas is imported only when asked for.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from profilers.render import fmt_num, render, table, to_frame, usd

from .components import COMPONENTS

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import SensitivityResult
    from .breakdown import CostBreakdown

__all__ = ["COMPONENT_TITLES", "breakdown_table", "breakdown_html", "breakdown_dataframe", "line_items_table",
           "sensitivity_table"]

COMPONENT_TITLES = {"hardware": "C_hardware", "train_deploy": "C_train&deploy", "data": "C_data", "human": "C_human"}

_ITEM_COLUMNS = ["component", "name", "quantity", "unit", "usd_per_unit", "cost_usd", "activity", "formula",
                 "provenance"]


def _qty(x: float) -> str:
    return fmt_num(x, ",.6g") if abs(x) < 1e6 else fmt_num(x, ",.0f")


def _title(b: "CostBreakdown") -> str:
    dev = b.serve_device if b.serve_device == b.train_device else f"serve {b.serve_device}, train {b.train_device}"
    return f"{b.scenario_name}: {b.model_name} on {dev}"


def band_text(b: "CostBreakdown") -> str:
    """'low - high (80 % band of the projected times)', or '' when the figures carry no band."""
    if b.low_usd is None and b.high_usd is None:
        return ""
    lo, _, hi = b.band_usd
    return f"{usd(lo)} - {usd(hi)} (80 % band of the projected times)"


def _footer(b: "CostBreakdown") -> str:
    band = band_text(b)
    return ((f"total {usd(b.total_usd)}, {band}; " if band else "") + f"per 1,000 requests: {usd(b.usd_per_1000_requests)}; per training run: {usd(b.usd_per_training_run)}; "
            f"replicas: {b.replicas}; training runs: {b.training_runs}")


def line_items_table(b: "CostBreakdown", fmt: str = "text", *, formulas: bool = False, sources: bool = False) -> str:
    """The line items under their component's subtotal, then the total, as a table in ``fmt``.

    ``formulas`` / ``sources``: add each item's formula / price source as a column.
    """
    extra = (["formula"] if formulas else []) + (["source"] if sources else [])
    pad = [""] * len(extra)
    rows: list[list[Any]] = []
    comps = b.components
    for c in COMPONENTS:
        rows.append([COMPONENT_TITLES[c], "", "", "", "", usd(comps[c])] + pad)
        for it in b.items_of(c):
            rows.append(["", it.name, _qty(it.quantity), it.unit, fmt_num(it.usd_per_unit), usd(it.cost_usd)]
                        + ([it.formula] if formulas else []) + ([it.provenance] if sources else []))
    rows.append(["TOTAL", "", "", "", "", usd(b.total_usd)] + pad)
    return table(["component", "item", "quantity", "unit", "rate (USD)", "cost"] + extra, rows, fmt,
                 align="llrlrr" + "l" * len(extra))


def breakdown_table(b: "CostBreakdown", fmt: str = "text") -> str:
    """The breakdown in ``fmt``: a title, the line items by component, the unit costs (or why infeasible)."""
    title = _title(b)
    if fmt == "html":
        head = f"<p><b>{html.escape(title)}</b></p>"
        if not b.ok:
            return head + f"<p style='color:#b00'><b>Infeasible:</b> {html.escape(b.message)}</p>"
        return head + line_items_table(b, "html", sources=True) + f"<p>{html.escape(_footer(b))}</p>"
    if not b.ok:
        return f"{title}\nINFEASIBLE: {b.message}"
    return "\n\n".join([title, line_items_table(b, fmt), _footer(b)])


def breakdown_html(b: "CostBreakdown") -> str:
    """``breakdown_table(b, "html")``, for Jupyter's ``_repr_html_``."""
    return breakdown_table(b, "html")


def breakdown_dataframe(b: "CostBreakdown"):
    """One row per line item, figures as numbers (pandas imported here, on demand)."""
    return to_frame(_ITEM_COLUMNS, ({k: getattr(it, k) for k in _ITEM_COLUMNS} for it in b.items))


def sensitivity_table(r: "SensitivityResult", fmt: str = "text", *, top: int | None = None,
                      title: bool = True) -> str:
    """The tornado table in ``fmt``, widest swing first (``top``: only the first rows); ``title``:
    the base total and the step above it."""
    d = f"{r.delta:.0%}"
    rows = [[row.knob, fmt_num(row.base_value), usd(row.total_low_usd), usd(row.total_high_usd), usd(row.swing_usd)]
            for row in r.rows[:top]]
    frame = to_frame(["input", "nominal", f"total at -{d}", f"total at +{d}", "swing"], rows)
    caption = f"base total {usd(r.base_total_usd)}; each input -{d} / +{d}" if title else ""
    return render(frame, fmt, align="lrrrr", caption=caption)
