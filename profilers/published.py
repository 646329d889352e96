"""Published measured figures: the rows projections are checked (and later calibrated) against.

``profilers/data/published_measurements.csv`` holds one row per figure a primary source reports as
*measured* (vendors' and frameworks' own benchmark docs, MLPerf logs), copied as printed, with the
exact setup (device, model, precision, batch, sequence lengths, runtime, software), the source, the
commit or locator and the date; ``published_measurements.md`` beside it says where each group
comes from and what is doubtful. Nothing here is measured by sigmastar: every figure is labelled
"published" with its source.

:func:`load_published` reads and checks the file (torch-free) and adds ``value_si``: the figure in
seconds (latencies) or per second (throughputs), converted from the row's ``unit``.

The last two columns are optional (a file without them loads, as if they were empty): ``weights``, the
format the weights were stored and multiplied in when the source states it (empty: as ``precision``
says; ``int8_dynamic`` is W8A8 such as SmoothQuant), and ``kv_dtype``, the KV-cache format (empty: the
activations' fp16/bf16).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from .config import invalid

__all__ = ["COLUMNS", "OPTIONAL", "load_published", "UNITS"]

COLUMNS = ("device", "device_variant", "model", "task", "precision", "batch_size", "seq_len", "output_len",
           "runtime", "software", "metric", "value", "unit", "gpus", "source", "source_locator", "date", "notes",
           "weights", "kv_dtype")
#: columns a file may lack (older files): read as empty
OPTIONAL = ("weights", "kv_dtype")
#: unit -> factor to seconds (times) or to per second (rates)
UNITS = {"ms": 1e-3, "s": 1.0, "ns": 1e-9, "images/s": 1.0, "sequences/s": 1.0, "samples/s": 1.0,
         "output tokens/s": 1.0, "output tokens/s per GPU": 1.0, "tokens/s": 1.0}
_METRICS = ("latency_ms", "throughput_per_s", "time_to_first_token_ms", "tokens_per_s", "ms_per_output_token",
            "step_time_ms")
_CHOICES = {"task": ("inference", "training"), "runtime": ("eager", "fused"),
            "precision": ("fp32", "tf32", "fp16", "bf16", "int8", "int4", "fp8", "amp"), "metric": _METRICS,
            "weights": ("", "fp16", "bf16", "fp8", "int8_weight_only", "int4_weight_only", "int8_dynamic"),
            "kv_dtype": ("", "fp16", "bf16", "fp8", "int8")}


def load_published(path: str | Path | None = None) -> Any:
    """The published figures as a pandas DataFrame (one row each, checked; ``value_si`` added).
    ``path``: another file of the same columns (default: the shipped one)."""
    import pandas as pd

    src = Path(path) if path is not None else Path(str(resources.files("profilers").joinpath(
        "data", "published_measurements.csv")))
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    owner = f"published[{src.name}]"
    for col in OPTIONAL:
        if col not in df.columns:
            df[col] = ""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise invalid(owner, "columns", "the columns " + ", ".join(COLUMNS) + " (" + " and ".join(OPTIONAL)
                      + " may be left out)", f"missing {missing}")
    for i, row in df.iterrows():
        where = f"row {i + 2}"  # the file's line (after the header)
        for col, allowed in _CHOICES.items():
            if row[col] not in allowed:
                raise invalid(owner, f"{col} ({where})", "one of " + ", ".join(map(repr, allowed)), row[col])
        if row["unit"] not in UNITS:
            raise invalid(owner, f"unit ({where})", "one of " + ", ".join(map(repr, UNITS)), row["unit"])
        try:
            value = float(row["value"])
        except ValueError:
            value = -1.0
        if not value > 0:
            raise invalid(owner, f"value ({where})", "a number > 0, as printed by the source", row["value"])
        for col in ("device", "model", "source", "source_locator"):
            if not row[col].strip():
                raise invalid(owner, f"{col} ({where})", "non-empty (every figure names its setup and source)",
                              row[col])
        for col in ("batch_size", "seq_len", "output_len", "gpus"):
            if row[col] and not (row[col].isdigit() and int(row[col]) > 0):
                raise invalid(owner, f"{col} ({where})", "empty or an integer > 0", row[col])
    df["value_si"] = [float(v) * UNITS[u] for v, u in zip(df["value"], df["unit"])]
    return df
