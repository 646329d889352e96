"""Published quality effects of LLM serving formats: the quality P(M) of a format that cannot be tried here.

``profilers/data/llm_quality.csv`` holds one row per (model, format) quality figure a primary source
prints in a table (the method's authors' repositories, framework docs, model cards), copied as
printed, together with the *same table's* fp16/bf16 baseline for that model and metric, so that
the relative effect comes from one source (baselines are never mixed across sources).
``llm_quality.md`` beside it says where each group comes from, which table, and what is doubtful.
Nothing here is measured by sigmastar: every effect is labelled ``"published"`` with its source.

Vocabulary (checked by :func:`load_quality`):

* ``format`` (the weight / GEMM format, the names of :data:`profilers.llm.FORMATS` plus
  ``int3_weight_only``): :data:`FORMATS`. A row about KV-cache quantization alone keeps the
  unquantized weight format (``fp16``) and names its cache dtype in ``kv_dtype``.
* ``kv_dtype``: ``""`` (fp16/bf16 KV cache, the default) or one of :data:`KV_DTYPES`.
* ``metric`` -> higher is better: :data:`METRICS` (``*_ppl`` perplexities are lower-is-better).

:func:`load_quality` reads and checks the file (torch-free) and adds ``relative_change`` =
value / baseline_value - 1 and ``line`` (the row's line in the file). :func:`quality_effect`
answers "what does this format do to this model's quality?" with a :class:`QualityEffect`, or
``None`` when nothing is published for the family: the caller must then report the quality as
unknown, never assume the format harmless.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .config import invalid

__all__ = ["COLUMNS", "FORMATS", "KV_DTYPES", "METRICS", "METRIC_ORDER", "QualityEffect", "load_quality",
           "quality_effect"]

COLUMNS = ("family", "size_b", "model", "format", "method", "group_size", "kv_dtype", "metric", "value",
           "baseline_value", "higher_is_better", "source", "source_locator", "date", "notes")
#: weight formats; fp16/bf16 are the unquantized baselines (a row in them is about the KV cache)
FORMATS = ("fp16", "bf16", "fp8", "int8_weight_only", "int8_dynamic", "int4_weight_only", "int3_weight_only")
_UNQUANTIZED = ("fp16", "bf16")
#: quantized KV-cache dtypes ("" = the fp16/bf16 default)
KV_DTYPES = ("fp8", "int8", "int4", "int2")
#: metric -> higher is better
METRICS = {
    "wikitext2_ppl": False,  # WikiText-2 test perplexity (context length in the row's notes)
    "c4_ppl": False,
    "lambada_ppl": False,
    "mmlu_acc": True,  # MMLU accuracy (few-shot count in the row's notes)
    "avg_zero_shot_acc": True,  # mean over the tasks the row's notes name
    "longbench_avg": True,  # LongBench average over the tasks the notes name
    "gsm8k_acc": True,
    "hellaswag_acc": True,
    "lambada_acc": True,
    "piqa_acc": True,
    "winogrande_acc": True,
}
#: the order in which :func:`quality_effect` picks a metric when several are published for a match
METRIC_ORDER = ("wikitext2_ppl", "c4_ppl", "mmlu_acc", "avg_zero_shot_acc", "longbench_avg", "gsm8k_acc",
                "lambada_acc", "hellaswag_acc", "piqa_acc", "winogrande_acc", "lambada_ppl")
assert set(METRIC_ORDER) == set(METRICS)
_DEFAULT = "llm_quality.csv"


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _date_ok(text: str) -> bool:
    if not text:
        return True  # unknown: the .md says why
    parts = text.split("-")
    return len(parts) == 3 and [len(p) for p in parts] == [4, 2, 2] and all(p.isdigit() for p in parts)


def load_quality(path: str | Path | None = None) -> Any:
    """The published quality figures as a pandas DataFrame (one row each, checked), with
    ``relative_change`` (value / baseline_value - 1, a float) and ``line`` (the row's line in the
    file) added; the other columns stay the strings the file holds, i.e. the figures as printed.
    ``path``: another file of the same columns (default: the shipped one)."""
    import pandas as pd

    src = Path(path) if path is not None else Path(str(resources.files("profilers").joinpath("data", _DEFAULT)))
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    owner = f"llm_quality[{src.name}]"
    if tuple(df.columns) != COLUMNS:
        raise invalid(owner, "columns", "the columns " + ", ".join(COLUMNS) + " in this order", list(df.columns))
    changes, lines = [], []
    for i, row in df.iterrows():
        where = f"row {i + 2}"  # the file's line (after the header)
        for col in ("family", "model", "source", "source_locator"):
            if not row[col].strip():
                raise invalid(owner, f"{col} ({where})", "non-empty (every figure names its model and source)",
                              row[col])
        if not _number(row["size_b"]) > 0:
            raise invalid(owner, f"size_b ({where})", "the parameter count in billions, a number > 0", row["size_b"])
        if row["format"] not in FORMATS:
            raise invalid(owner, f"format ({where})", "one of " + ", ".join(map(repr, FORMATS)), row["format"])
        if row["kv_dtype"] and row["kv_dtype"] not in KV_DTYPES:
            raise invalid(owner, f"kv_dtype ({where})",
                          "'' (fp16 KV cache) or one of " + ", ".join(map(repr, KV_DTYPES)), row["kv_dtype"])
        if row["format"] in _UNQUANTIZED and not row["kv_dtype"]:
            raise invalid(owner, f"format ({where})", "a quantized format, or a quantized kv_dtype with an fp16/bf16 "
                          "format (a baseline is the baseline_value of its row)", row["format"])
        if not row["method"].strip():
            raise invalid(owner, f"method ({where})", "non-empty (awq, gptq, rtn, smoothquant, ...)", row["method"])
        if row["group_size"] and not (row["group_size"].isdigit() and int(row["group_size"]) > 0):
            raise invalid(owner, f"group_size ({where})", "empty or an integer > 0", row["group_size"])
        if row["metric"] not in METRICS:
            raise invalid(owner, f"metric ({where})", "one of " + ", ".join(map(repr, METRICS)), row["metric"])
        expected = "true" if METRICS[row["metric"]] else "false"
        if row["higher_is_better"] != expected:
            raise invalid(owner, f"higher_is_better ({where})", f"{expected!r} for metric {row['metric']!r}",
                          row["higher_is_better"])
        for col in ("value", "baseline_value"):
            if not _number(row[col]) > 0:
                raise invalid(owner, f"{col} ({where})", "a number > 0, as printed by the source", row[col])
        if not _date_ok(row["date"]):
            raise invalid(owner, f"date ({where})", "YYYY-MM-DD, or empty when the source's date is unknown",
                          row["date"])
        changes.append(float(row["value"]) / float(row["baseline_value"]) - 1.0)
        lines.append(i + 2)
    df["relative_change"] = pd.Series(changes, index=df.index, dtype=float)
    df["line"] = pd.Series(lines, index=df.index, dtype=int)
    return df


@dataclass(frozen=True)
class QualityEffect:
    """What a serving format does to a model's quality, from one published row (or the baseline).

    ``relative_change`` = value / baseline_value - 1 (a perplexity that rises, or an accuracy that
    falls, is a loss: see :attr:`loss`). ``rows``: the CSV line numbers used. ``exact_size``: False
    when no row names the asked size and the nearest published size of the family was used
    (``note`` says which). ``label``: ``"published"``, or ``"baseline"`` for the unquantized format."""

    metric: str
    value: float | None
    baseline_value: float | None
    relative_change: float
    higher_is_better: bool | None
    source: str
    date: str
    rows: tuple[int, ...]
    label: str = "published"
    family: str = ""
    size_b: float | None = None
    model: str = ""
    format: str = ""
    kv_dtype: str = ""
    method: str = ""
    source_locator: str = ""
    exact_size: bool = True
    note: str = ""

    @property
    def loss(self) -> float:
        """The relative quality loss: > 0 when the format is worse than its baseline, whichever way
        the metric points; 0 for the baseline."""
        if self.higher_is_better is None:  # the baseline
            return 0.0
        return -self.relative_change if self.higher_is_better else self.relative_change


@functools.lru_cache(maxsize=8)
def _records(path: str | None) -> tuple[dict, ...]:
    df = load_quality(path)
    return tuple(df.to_dict("records"))


def quality_effect(family: str, size_b: float, format: str, kv_dtype: str = "", metric: str | None = None, *,
                   method: str | None = None, nearest_size: bool = True,
                   path: str | Path | None = None) -> QualityEffect | None:
    """The published effect of serving ``family`` at ``size_b`` billion parameters in ``format``
    (with a ``kv_dtype`` KV cache; ``""``, ``"fp16"`` or ``"bf16"`` = unquantized), or None when
    no row of the family matches: the quality is then unknown (never assume the format harmless).

    Matching rule (fixed, so that a search is reproducible):

    1. ``fp16``/``bf16`` with an unquantized KV cache is the baseline itself: a zero effect,
       ``source="baseline"``, ``label="baseline"``, for any family.
    2. Rows of the family (case-insensitive) in that ``format`` (fp16 and bf16 count as one, the
       unquantized weights of a KV-cache row) with exactly that ``kv_dtype``; ``method`` (optional)
       keeps rows whose method contains it (case-insensitive), ``metric`` (optional) keeps that
       metric only.
    3. Size: the rows whose ``size_b`` equals ``size_b``; when there are none and ``nearest_size``,
       the rows of the family's published size nearest to it on a log scale (``exact_size=False``,
       ``note`` naming it); otherwise None.
    4. Metric: the first of :data:`METRIC_ORDER` that the remaining rows have (WikiText-2
       perplexity first). No averaging across metrics or sources.
    5. Among the rows left (several methods or sources for the same metric), the one with the
       largest :attr:`QualityEffect.loss`: the conservative choice; ties go to the earlier line.
    """
    owner = "quality_effect"
    if format not in FORMATS:
        raise invalid(owner, "format", "one of " + ", ".join(map(repr, FORMATS)), format)
    kv = "" if kv_dtype in ("", "fp16", "bf16") else kv_dtype
    if kv and kv not in KV_DTYPES:
        raise invalid(owner, "kv_dtype", "'', 'fp16', 'bf16' or one of " + ", ".join(map(repr, KV_DTYPES)), kv_dtype)
    if metric is not None and metric not in METRICS:
        raise invalid(owner, "metric", "None or one of " + ", ".join(map(repr, METRICS)), metric)
    if not (isinstance(size_b, (int, float)) and size_b > 0):
        raise invalid(owner, "size_b", "a number of billions of parameters > 0", size_b)
    if format in _UNQUANTIZED and not kv:
        return QualityEffect(metric=metric or "", value=None, baseline_value=None, relative_change=0.0,
                             higher_is_better=METRICS[metric] if metric else None, source="baseline", date="",
                             rows=(), label="baseline", family=family, size_b=float(size_b), format=format,
                             note="the unquantized model is its own baseline")
    formats = _UNQUANTIZED if format in _UNQUANTIZED else (format,)
    rows = [r for r in _records(None if path is None else str(path))
            if r["family"].lower() == family.lower() and r["format"] in formats and r["kv_dtype"] == kv
            and (method is None or method.lower() in r["method"].lower())
            and (metric is None or r["metric"] == metric)]
    if not rows:
        return None
    sizes = sorted({float(r["size_b"]) for r in rows})
    exact = [s for s in sizes if math.isclose(s, float(size_b))]
    note = ""
    if exact:
        chosen = exact[0]
    elif nearest_size:
        chosen = min(sizes, key=lambda s: (abs(math.log(s / float(size_b))), s))
        note = (f"no published {family} {size_b:g}B row for {format}" + (f" with a {kv} KV cache" if kv else "")
                + f"; the nearest published size, {chosen:g}B, is used")
    else:
        return None
    rows = [r for r in rows if math.isclose(float(r["size_b"]), chosen)]
    pick = next(m for m in METRIC_ORDER if any(r["metric"] == m for r in rows))
    rows = [r for r in rows if r["metric"] == pick]
    higher = METRICS[pick]
    best = max(rows, key=lambda r: (-r["relative_change"] if higher else r["relative_change"], -r["line"]))
    return QualityEffect(metric=pick, value=float(best["value"]), baseline_value=float(best["baseline_value"]),
                         relative_change=float(best["relative_change"]), higher_is_better=higher,
                         source=best["source"], date=best["date"], rows=(int(best["line"]),), label="published",
                         family=best["family"], size_b=float(best["size_b"]), model=best["model"],
                         format=best["format"], kv_dtype=best["kv_dtype"], method=best["method"],
                         source_locator=best["source_locator"], exact_size=bool(exact), note=note)
