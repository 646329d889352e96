"""Rendering in one place: figures to strings, and rows + columns to a text, Markdown or HTML table.

Every table sigmastar shows (a profile, a cost breakdown, a search result, a run's report) goes
through :func:`table`: the rows become a pandas DataFrame (:func:`to_frame`) and :func:`render`
writes it as

- ``"text"``: fixed-width columns, a header and a rule (``DataFrame.to_markdown`` with tabulate's
  ``simple`` format), for terminals;
- ``"markdown"``: a pipe table (``DataFrame.to_markdown``), ``|`` in a cell escaped;
- ``"html"``: a pandas ``Styler`` table, every cell and header HTML-escaped, for Jupyter.

Cells are shown as given (``str(cell)``; ``None`` and NaN as ``-``): callers format numbers with
the helpers here (:func:`usd`, :func:`fmt_num`, :func:`fmt_bytes`, :func:`fmt_seconds`,
:func:`fmt_flops`; :func:`to_number` reads a figure back from JSON or CSV), so one figure reads the
same in every format.

Computing stays elsewhere; this module only formats what it is given. It imports no torch (the
cost models use it) and imports pandas only when a table is rendered.
"""

from __future__ import annotations

import hashlib
import html
import math
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .config import invalid

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["FORMATS", "to_number", "usd", "fmt_num", "fmt_bytes", "fmt_seconds", "fmt_flops", "to_frame", "render",
           "table", "text_table", "markdown_table", "html_table"]

FORMATS = ("text", "markdown", "html")


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------
def to_number(x: Any) -> float:
    """``float(x)``, or NaN for None or a non-number (figures read back from JSON or CSV)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def usd(x: Any) -> str:
    """US dollars, the one money format: ``$1,234.56``; under a dollar four significant digits
    (``$0.003333``); ``-$5.00`` below zero; ``inf`` / ``-inf``; ``-`` for None, NaN or a non-number.

    >>> usd(4380), usd(0.0033333), usd(-5), usd(None), usd(float("inf"))
    ('$4,380.00', '$0.003333', '-$5.00', '-', 'inf')
    """
    x = to_number(x)
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    sign, x = ("-" if x < 0 else ""), abs(x)
    return sign + (f"${x:,.2f}" if x >= 1 or x == 0 else f"${x:.4g}")


def fmt_num(x: Any, spec: str = ",.6g") -> str:
    """``format(x, spec)``, or ``-`` for None, NaN or a non-number: ``fmt_num(0.91234, ".4f") == "0.9123"``."""
    x = to_number(x)
    return "-" if math.isnan(x) else format(x, spec)


def fmt_bytes(n: float | None) -> str:
    """Bytes in binary units: ``512 B``, ``3.00 MiB``; ``-`` for None."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover - the loop returns at TiB


def fmt_seconds(s: float | None) -> str:
    """Seconds in s, ms or us: ``2.500 ms``; ``-`` for None."""
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def fmt_flops(f: float | None) -> str:
    """FLOPs with a decimal prefix: ``123.457 MFLOP``; ``-`` for None."""
    if f is None:
        return "-"
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if f >= scale:
            return f"{f / scale:.3f} {unit}"
    return f"{f:.0f} FLOP"


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------
def to_frame(columns: Sequence[str], rows: Iterable[Sequence[Any] | dict[str, Any]],
             dtype: Any = None) -> "pd.DataFrame":
    """The rows (sequences in column order, or dicts keyed by column) as a DataFrame with these columns.

    ``dtype=object`` keeps every cell as given (an int column with a None stays ints).
    """
    import pandas as pd

    return pd.DataFrame(list(rows), columns=list(columns), dtype=dtype)


def _cell(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return str(x)


def _shown(frame: "pd.DataFrame", cell: Any) -> "pd.DataFrame":
    """The frame as display strings, column names included (``cell`` maps each one)."""
    import pandas as pd

    return pd.DataFrame([[cell(x) for x in row] for row in frame.itertuples(index=False, name=None)],
                        columns=[cell(c) for c in frame.columns])


def _alignment(align: str | None, n: int) -> str:
    align = "l" * n if align is None else align
    if len(align) != n or set(align) - {"l", "r"}:
        raise invalid("render", "align", f"one letter 'l' or 'r' per column ({n})", align)
    return align


def render(frame: "pd.DataFrame", fmt: str = "text", *, align: str | None = None, caption: str = "",
           header: bool = True) -> str:
    """A DataFrame as a table in ``fmt`` (one of :data:`FORMATS`); the index is not shown.

    ``align``: one letter per column, ``l`` (left, the default) or ``r`` (right, for figures).
    ``caption``: a title above the table (HTML ``<caption>``). ``header=False``: no column names
    (key-value listings).
    """
    if fmt not in FORMATS:
        raise invalid("render", "fmt", f"one of {', '.join(FORMATS)}", fmt)
    align = _alignment(align, len(frame.columns))
    if fmt == "html":
        return _html(_shown(frame, _cell), align, caption, header)
    if fmt == "markdown":
        shown = _shown(frame, lambda x: _cell(x).replace("|", "\\|").replace("\n", " "))
        tablefmt = "pipe"
    else:
        shown = _shown(frame, lambda x: _cell(x).replace("\n", " "))
        tablefmt = "simple" if header else "plain"
    colalign = tuple("right" if a == "r" else "left" for a in align)
    text = shown.to_markdown(index=False, tablefmt=tablefmt, colalign=colalign, disable_numparse=True,
                             **({} if header else {"headers": ()}))
    if caption:
        text = (f"**{caption}**" if fmt == "markdown" else caption) + "\n\n" + text
    return text


def _html(shown: "pd.DataFrame", align: str, caption: str, header: bool) -> str:
    digest = hashlib.sha1(repr((list(shown.columns), shown.values.tolist(), caption, align)).encode()).hexdigest()
    styles = [{"selector": "th, td", "props": "text-align: left; vertical-align: top"}]
    styles += [{"selector": f"th.col{i}, td.col{i}", "props": "text-align: right"}
               for i, a in enumerate(align) if a == "r"]
    sty = (shown.style.hide(axis="index").format(escape="html").format_index(escape="html", axis=1)
           .set_uuid(digest[:10]).set_table_styles(styles))
    if not header:
        sty = sty.hide(axis="columns")
    if caption:
        sty = sty.set_caption(html.escape(caption))
    return sty.to_html().strip()


def table(columns: Sequence[str], rows: Iterable[Sequence[Any] | dict[str, Any]], fmt: str = "text", *,
          align: str | None = None, caption: str = "", header: bool = True) -> str:
    """Rows + columns rendered in ``fmt``: ``render(to_frame(columns, rows), fmt, ...)``."""
    return render(to_frame(columns, rows, dtype=object), fmt, align=align, caption=caption, header=header)


def text_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None, **kw: Any) -> str:
    """``table(columns, rows, "text", ...)``: fixed-width columns under a header and a rule."""
    return table(columns, rows, "text", align=align, **kw)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None,
                   **kw: Any) -> str:
    """``table(columns, rows, "markdown", ...)``: a pipe table, ``|`` in a cell escaped."""
    return table(columns, rows, "markdown", align=align, **kw)


def html_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None,
               **kw: Any) -> str:
    """``table(columns, rows, "html", ...)``: an escaped HTML table (with its style block)."""
    return table(columns, rows, "html", align=align, **kw)
