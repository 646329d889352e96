"""profilers.render: the one money format and the one table renderer (text, Markdown, HTML)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from profilers.config import ConfigError
from profilers.render import FORMATS, fmt_num, render, table, to_frame, usd

COLUMNS = ["name", "cost", "n"]
ROWS = [["a|b", usd(1234.5), 3], ["<x>", usd(None), None]]


def test_usd_is_the_one_money_format():
    assert usd(4380) == "$4,380.00" and usd(0) == "$0.00" and usd(1) == "$1.00"
    assert usd(0.0033333) == "$0.003333"  # under a dollar: four significant digits
    assert usd(-5) == "-$5.00" and usd(-0.5) == "-$0.5"
    assert usd(math.inf) == "inf" and usd(-math.inf) == "-inf"
    assert usd(None) == "-" and usd(math.nan) == "-" and usd("n/a") == "-"
    assert usd("12.5") == "$12.50"  # a number read back from JSON or CSV as text


def test_fmt_num_shows_a_dash_for_what_is_missing():
    assert fmt_num(0.91234, ".4f") == "0.9123" and fmt_num(1234567.0) == "1.23457e+06"
    assert fmt_num(None) == "-" and fmt_num(math.nan, ".2f") == "-"


def test_text_table_has_a_header_a_rule_and_aligned_columns():
    lines = table(COLUMNS, ROWS, align="lrr").splitlines()
    assert lines[0].split() == COLUMNS and set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["a|b", "$1,234.50", "3"]
    assert lines[3].split() == ["<x>", "-", "-"]  # None shows as a dash, an int column stays ints
    assert lines[2].index("0 ") == lines[3].index("-")  # figures right-aligned: $1,234.50 ends above the dash


def test_markdown_table_escapes_pipes_and_marks_alignment():
    md = table(COLUMNS, ROWS, "markdown", align="lrr").splitlines()
    assert md[0].startswith("| name") and md[1].startswith("|:--") and md[1].endswith("--:|")
    assert "a\\|b" in md[2] and md[2].count(" | ") == 2  # the | in a cell does not split it
    assert table(["a"], [["x\ny"]], "markdown").splitlines()[2] == "| x y |"


def test_html_table_escapes_cells_headers_and_caption():
    h = table(["<th>"] + COLUMNS[1:], ROWS, "html", align="lrr", caption="<b>cap</b>")
    assert "<table" in h and h.endswith("</table>")
    assert "<x>" not in h and "&lt;x&gt;" in h and "&lt;th&gt;" in h and "&lt;b&gt;cap&lt;/b&gt;" in h
    assert "text-align: right" in h and "$1,234.50" in h
    assert h == table(["<th>"] + COLUMNS[1:], ROWS, "html", align="lrr", caption="<b>cap</b>")  # deterministic


def test_key_value_listing_has_no_header():
    text = table(["figure", "value"], [("model", "TinyNet"), ("parameters", "1,234")], header=False)
    assert text.splitlines() == ["model       TinyNet", "parameters  1,234"]
    assert "figure" not in table(["figure", "value"], [("a", "b")], "html", header=False)


def test_render_takes_any_dataframe_and_an_empty_one():
    df = to_frame(["k", "v"], [{"k": "a", "v": 1.5}, {"k": "b", "v": 2.0}])
    assert df["v"].sum() == 3.5  # figures stay numbers in the frame
    assert "1.5" in render(df) and "| a   |" in render(df, "markdown")
    for fmt in FORMATS:
        assert "k" in table(["k", "v"], [], fmt)


def test_bad_format_or_alignment_names_the_field():
    with pytest.raises(ConfigError, match=r"^render.fmt must be one of text, markdown, html; got 'pdf'.$"):
        table(COLUMNS, ROWS, "pdf")
    with pytest.raises(ConfigError, match=r"^render.align must be one letter 'l' or 'r' per column \(3\); "
                                          r"got 'lx'.$"):
        table(COLUMNS, ROWS, align="lx")


def test_import_needs_no_torch_nor_pandas():
    code = "import sys, profilers.render; print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
