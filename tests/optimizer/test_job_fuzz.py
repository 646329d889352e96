"""Fuzzing job files and Python configs (hypothesis): whatever a user writes, sigmastar either
accepts it or says, in one clean error that names the field path, what is wrong; never a raw
exception (TypeError, KeyError, RecursionError, UnicodeDecodeError, a TOML decode error, ...).

Four generators, shared with ``benchmarks/fuzz_jobs.py`` (which runs 10,000+ examples of each):

* ``job_tables``: the bundled examples (examples/*.toml) as tables, mutated 1-4 times: a value at
  a random path (one the example has, or any field of the schema) replaced by a value of another
  type or a nonsense range (str, int, float incl. nan/inf/huge/negative, bool, dates, lists,
  tables, tables and arrays nested up to 10,000 deep, empty tables), keys deleted, unknown keys
  added; parsed with :func:`parse_job`;
* ``job_files``: such tables written as TOML files (inline tables) and read with :func:`load_job`;
* ``raw_files``: bytes of job files: the examples truncated, with bytes inserted or replaced, a
  BOM, UTF-16/32 or Latin-1, NUL bytes, huge integers, arrays and tables nested 10,000 deep,
  random text and bytes;
* ``python_configs``: ``Job``, ``SearchSpace``, ``Scenario`` and its plans, ``WhatIf``,
  ``LLMSpace`` and ``PriceRow`` built in Python with fuzzed keyword values (Python-only types too).

A job is only parsed: no workload is built, no model trained (``Job`` checks a workload by name).
``SIGMASTAR_FUZZ_EXAMPLES`` sets the examples per generator (default: sized for a ~1 min run).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import decimal
import json
import fractions
import math
import os
import re
import tempfile
import tomllib
import traceback
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cost_models import DataPlan, Ownership, PeoplePlan, PriceRow, Scenario, ServingPlan, TrainingPlan
from optimizer.job_parse import _TOP, _section, load_job, parse_job
from optimizer.job_spec import Job
from optimizer.llm_search import LLMSpace
from optimizer.space import SearchSpace
from optimizer.whatif import WhatIf
from profilers.config import ConfigError, SigmastarError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_PATHS = sorted((ROOT / "examples").glob("*.toml"))
EXAMPLES = {p.stem: tomllib.loads(p.read_text(encoding="utf-8")) for p in EXAMPLE_PATHS}
EXAMPLE_BYTES = {p.stem: p.read_bytes() for p in EXAMPLE_PATHS}

#: examples per generator: the environment's SIGMASTAR_FUZZ_EXAMPLES, else sized for CI
EXAMPLES_PER_TEST = int(os.environ.get("SIGMASTAR_FUZZ_EXAMPLES") or 0) or None


def fuzz_settings(default: int) -> settings:
    return settings(max_examples=EXAMPLES_PER_TEST or default, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


# ----------------------------------------------------------------------------------------------
# values
# ----------------------------------------------------------------------------------------------
def nested(depth: int, kind: str, leaf: Any = 1) -> Any:
    """``leaf`` inside ``depth`` lists (``kind`` "list") or tables (built iteratively)."""
    v = leaf
    for _ in range(depth):
        v = [v] if kind == "list" else {"a": v}
    return v


NAN, INF = float("nan"), float("inf")
SPECIAL = [
    0, -1, 1, 2, 3, 7, 8, 100, 4096, 65537, 10**9, 2**31, 2**32, 2**32 - 1, 2**63, 2**64, -2**63, 10**400,
    0.0, -0.0, 0.5, 1.0, 1.5, -0.5, 0.95, 95.0, 1e-300, 5e-324, 1e308, -1e308, 1e300, NAN, INF, -INF,
    True, False,
    "", " ", "\x00", "\n", "\t", "é", "日本", "\u202e", "none", "None", "null", "nan", "inf", "-1", "0.5",
    "host", "HOST", "t4", "T4", "H100-SXM", "A100-80GB", "L4", "A10G", "TPU-v9", "cpu",
    "digits", "minilm", "digits:make", "os:path", "os.path:join", "x.py:f", ":", "a:", ":f", "a:1",
    "llama-2-7b", "llama-2-70b", "gpt2", "bf16", "fp16", "fp32", "fp8", "int8", "int4", "int8_weight_only",
    "int8_dynamic", "int4_weight_only", "structured", "l1_unstructured", "semi_structured_2_4",
    "rent", "own", "on_demand", "spot", "reserved", "tokens", "samples", "fused", "eager",
    "search", "whatif", "llm", "lazy", "tpe", "grid", "random", "layerwise", "hyperband", "median",
    "gpu_hour", "purchase", "vcpu_hour", "storage", "network", "electricity", "aws",
    "quantize", "prune", "distill", "quantize_int8", "base",
    "sqlite:///study.db", "nosuch://x", "postgresql://", "study.journal", "2026-10-01", "2026-13-45",
    "examples/digits.toml", "pyproject.toml", "README.md", "/", ".", "..", "/dev/null", "/nonexistent/x.json",
    "requests.csv", "config.json",
]

_keys = st.one_of(st.text(max_size=12), st.sampled_from(["a", "type", "version", "name", "kind", "models"]))
scalars = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(max_size=16),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    st.floats(min_value=-2.0, max_value=2.0),
    st.booleans(),
    st.dates(),
    st.datetimes(),
    st.times(),
    # integers too long for str() (Python refuses more than 4,300 digits)
    st.integers(4290, 4400).map(lambda n: 10**n - 1),
)
deep_values = st.builds(nested, st.sampled_from([33, 64, 200, 1000, 10_000]), st.sampled_from(["list", "table"]))
table_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(_keys, c, max_size=4),
                            max_leaves=12)


values = st.one_of(
    table_values,
    table_values,
    st.lists(st.sampled_from(SPECIAL), max_size=5),
    st.lists(scalars, min_size=1, max_size=4),
    st.builds(dict), st.builds(list), st.builds(lambda: [{}]), st.builds(lambda: [[]]),  # fresh ones each time
    deep_values,
)


# ----------------------------------------------------------------------------------------------
# job tables: the bundled examples, mutated
# ----------------------------------------------------------------------------------------------
def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _schema_paths() -> list[tuple]:
    """Every field a job file may set (and a few it may not), as key paths."""
    paths: list[tuple] = [(k,) for k in _TOP]
    paths += [("space", f) for f in _fields(SearchSpace)]
    paths += [("constraints", k) for k in _section("constraints")]
    paths += [("search", k) for k in _section("search")]
    paths += [("scenario", f) for f in _fields(Scenario)]
    for plan, cls in (("serving", ServingPlan), ("training", TrainingPlan), ("data", DataPlan),
                      ("people", PeoplePlan), ("ownership", Ownership)):
        paths += [("scenario", plan, f) for f in _fields(cls)]
    paths += [("prices", "file"), ("prices", "price")]
    paths += [("prices", "price", 0, f) for f in _fields(PriceRow)]
    paths += [("whatif", f) for f in _fields(WhatIf)]
    paths += [("llm", f) for f in _fields(LLMSpace)]
    paths += [("search", "layer_choices", 0, k) for k in ("technique", "mode", "method", "amount", "layers",
                                                           "finetune_steps", "nope")]
    return paths


SCHEMA_PATHS = _schema_paths()


def _paths_in(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths of every value in ``data`` (tables and lists included), shallow tables first."""
    out, stack = [], [(data, prefix)]
    while stack:
        v, p = stack.pop()
        if p:
            out.append(p)
        if len(p) > 6:
            continue
        if isinstance(v, dict):
            stack.extend((x, (*p, k)) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((x, (*p, i)) for i, x in enumerate(v))
    return out


def render(path: tuple) -> str:
    """``("prices", "price", 0, "kind")`` -> ``job.prices.price[0].kind``."""
    out = "job"
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else f".{k}"
    return out


def _set(data: dict, path: tuple, value: Any) -> bool:
    """Set ``path`` to ``value`` (creating tables, and a first table in an empty list, on the way)."""
    cur: Any = data
    for i, k in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(cur, dict):
            if k not in cur:
                cur[k] = [] if isinstance(nxt, int) else {}
            cur = cur[k]
        elif isinstance(cur, list) and isinstance(k, int):
            if k >= len(cur):
                cur.append({})
                k = len(cur) - 1
            cur = cur[k]
        else:
            return False
    last = path[-1]
    if isinstance(cur, dict) and not isinstance(last, int):
        cur[last] = value
    elif isinstance(cur, list) and isinstance(last, int):
        if last < len(cur):
            cur[last] = value
        else:
            cur.append(value)
    else:
        return False
    return True


def _delete(data: dict, path: tuple) -> bool:
    cur: Any = data
    for k in path[:-1]:
        try:
            cur = cur[k]
        except (KeyError, IndexError, TypeError):
            return False
    try:
        del cur[path[-1]]
    except (KeyError, IndexError, TypeError):
        return False
    return True


def clone(v: Any) -> Any:
    """A deep copy of tables and lists (iteratively: any depth)."""
    if not isinstance(v, (dict, list)):
        return v
    root: Any = type(v)()
    stack = [(v, root)]
    while stack:
        src, dst = stack.pop()
        for k, x in (src.items() if isinstance(src, dict) else enumerate(src)):
            y = x
            if isinstance(x, (dict, list)):
                y = type(x)()
                stack.append((x, y))
            if isinstance(dst, dict):
                dst[k] = y
            else:
                dst.append(y)
    return root


def _text(v: Any) -> str:
    """``str(v)``, or a stand-in where str() refuses (a huge integer, a deeply nested value)."""
    try:
        return str(v)
    except (ValueError, RecursionError):
        return "?"


def perturbed(draw: Any, v: Any) -> Any:
    """A value near ``v``: the same type out of range, a neighbour, a twin, or ``v`` in another type."""
    if isinstance(v, bool):
        return draw(st.sampled_from([not v, int(v), str(v).lower(), [v]]))
    if isinstance(v, (int, float)):
        near = [0, -v, v + 1, v - 1, v * 2, v * 1000, 1e308, 10**400, 2**63, NAN, INF, -INF, -1, 0.5, 1.5,
                _text(v), [v], {"value": v}]
        for f in (lambda: v / 3, lambda: float(v), lambda: int(v)):
            try:
                near.append(f())
            except (OverflowError, ValueError):  # an int past a float, a float that is nan/inf
                pass
        return draw(st.sampled_from(near))
    if isinstance(v, str):
        return draw(st.sampled_from([v.upper(), v.lower(), v.title(), f" {v} ", "", v + v, v[:-1], v + "x",
                                     v.replace("-", "_"), [v], {"name": v}]) | st.sampled_from(SPECIAL))
    if isinstance(v, list):
        extra = draw(st.sampled_from(SPECIAL))
        return draw(st.sampled_from([[], v + v, v[::-1], v[:1], v + [extra], [extra] + v, [v], [{}], v[1:],
                                     [_text(x) for x in v], v[:-1], {"items": v}]))
    if isinstance(v, dict):
        out = dict(v)
        if out and draw(st.booleans()):
            out.pop(draw(st.sampled_from(sorted(out, key=str))))
        else:
            out[draw(_keys)] = draw(st.sampled_from(SPECIAL))
        return draw(st.sampled_from([out, {}, [out], [v, v]]))
    return draw(values)


@st.composite
def job_tables(draw: Any) -> tuple[dict, list[tuple]]:
    """(a mutated example job table, the mutations: (op, path) pairs)."""
    name = draw(st.sampled_from(sorted(EXAMPLES)))
    data = copy.deepcopy(EXAMPLES[name])
    vals = values
    ops: list[tuple] = []
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "set", "set_schema", "set_schema", "perturb", "perturb", "perturb", "swap",
                                   "delete", "unknown", "kind"]))
        if op == "set":
            path = draw(st.sampled_from(_paths_in(data) or [("name",)]))
            done = _set(data, path, draw(vals))
        elif op == "perturb":
            path = draw(st.sampled_from(_paths_in(data) or [("name",)]))
            done = _set(data, path, perturbed(draw, clone(_get(data, path))))
        elif op == "swap":  # a value valid elsewhere in some example
            other = EXAMPLES[draw(st.sampled_from(sorted(EXAMPLES)))]
            path = draw(st.sampled_from(_paths_in(data) or [("name",)]))
            done = _set(data, path, clone(_get(other, draw(st.sampled_from(_paths_in(other))))))
        elif op == "set_schema":
            path = draw(st.sampled_from(SCHEMA_PATHS))
            done = _set(data, path, draw(vals))
        elif op == "delete":
            path = draw(st.sampled_from(_paths_in(data) or [("name",)]))
            done = _delete(data, path)
        elif op == "unknown":
            tables = [()] + [p for p in _paths_in(data) if isinstance(_get(data, p), dict)]
            path = (*draw(st.sampled_from(tables)), draw(_keys | st.sampled_from(["techniques", "price", "seed"])))
            done = _set(data, path, draw(vals))
        else:
            path = ("kind",)
            done = _set(data, path, draw(st.sampled_from(["search", "whatif", "llm"])))
        if done:
            ops.append((op, path))
    return data, ops


def _get(data: Any, path: tuple) -> Any:
    for k in path:
        data = data[k]
    return data


# ----------------------------------------------------------------------------------------------
# job files: a table written as TOML (inline tables), or raw bytes
# ----------------------------------------------------------------------------------------------
def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


class _Lit(str):
    """TOML text to emit as is (not a string value)."""


def _toml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        if abs(v) >= 10**4000:  # str() refuses it; hexadecimal has no limit (and TOML hex has no sign)
            return f"0x{abs(v):x}"
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (dt.date, dt.datetime, dt.time)):
        return v.isoformat()
    raise TypeError(f"no TOML for {type(v).__name__}")


def toml_value(v: Any) -> str:
    """``v`` as a TOML value (tables inline), written iteratively: any depth."""
    out: list[str] = []
    stack: list[Any] = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, _Lit):
            out.append(x)
        elif isinstance(x, (list, tuple, dict)):
            items = list(x.items()) if isinstance(x, dict) else list(x)
            parts: list[Any] = [_Lit("{" if isinstance(x, dict) else "[")]
            for i, item in enumerate(items):
                if i:
                    parts.append(_Lit(", "))
                if isinstance(x, dict):
                    parts.append(_Lit(f"{_toml_str(str(item[0]))} = "))
                    item = item[1]
                parts.append(item)
            parts.append(_Lit("}" if isinstance(x, dict) else "]"))
            stack.extend(reversed(parts))
        else:
            out.append(_toml_scalar(x))
    return "".join(out)


def toml_text(data: dict) -> bytes:
    lines = [f"{_toml_str(str(k))} = {toml_value(v)}" for k, v in data.items()]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


def _deep_text(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"a = " + b"[" * depth + b"1" + b"]" * depth
    if kind == "inline":
        return b"space = " + b"{a = " * depth + b"1" + b"}" * depth
    if kind == "json":
        return b"[" * depth + b"1" + b"]" * depth
    if kind == "dotted":
        return b"space." + b"a." * depth + b"b = 1"
    return b"[space." + b".".join(b"a" for _ in range(depth)) + b"]\nb = 1"


def damaged(draw: Any, base: bytes, fields: tuple[str, ...] = ("n_trials", "batch_sizes", "horizon_months", "tp",
                                                                   "seed", "x")) -> bytes:
    """``base`` (a TOML or JSON file's bytes) damaged, re-encoded or grown, or random bytes or text."""
    how = draw(st.sampled_from(["truncate", "insert", "replace", "bom", "encode", "nul", "append", "deep",
                                "huge_int", "random_bytes", "random_text", "empty", "as_is"]))
    if how == "truncate":
        return base[:draw(st.integers(0, len(base)))]
    if how == "insert":
        i = draw(st.integers(0, len(base)))
        return base[:i] + draw(st.binary(min_size=1, max_size=8)) + base[i:]
    if how == "replace":
        i = draw(st.integers(0, len(base) - 1))
        return base[:i] + bytes([draw(st.integers(0, 255))]) + base[i + 1:]
    if how == "bom":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])) + base
    if how == "encode":
        enc = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252"]))
        return base.decode("utf-8").encode(enc, "replace")
    if how == "nul":
        i = draw(st.integers(0, len(base)))
        return base[:i] + b"\x00" + base[i:]
    if how == "append":
        key = draw(st.sampled_from(["", "space.", "search.", "scenario.serving.", "llm.", "whatif.", "zz."]))
        return base + f"\n{key}{draw(st.sampled_from(fields))} = ".encode() + draw(st.sampled_from(
            [b"9" * 5000, b"-" + b"9" * 5000, b"0x" + b"f" * 5000, b"1e400", b"nan", b"-inf", b"1979-05-27",
             b"[1, [2, [3]]]", b"{}", b"'''", b'"\\ud800"', b"0b2", b"1__0", b"+", b"", b"[", b"{a = "]))
    if how == "deep":
        depth = draw(st.sampled_from([33, 100, 1000, 10_000]))
        return _deep_text(depth, draw(st.sampled_from(["array", "inline", "dotted", "header", "json"])))
    if how == "huge_int":
        return b'name = "x"\n[search]\nn_trials = ' + b"1" * draw(st.integers(4000, 6000)) + b"\n"
    if how == "random_bytes":
        return draw(st.binary(max_size=200))
    if how == "random_text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if how == "as_is":
        return base
    return b""


@st.composite
def raw_files(draw: Any) -> bytes:
    """Bytes of a job file: an example damaged, re-encoded or grown, or random bytes or text."""
    return damaged(draw, EXAMPLE_BYTES[draw(st.sampled_from(sorted(EXAMPLE_BYTES)))])


PRICE_TOML = b"""[[price]]
kind = "gpu_hour"
item = "T4"
tier = "on_demand"
usd_per_unit = 0.35
source = "our contract"
date = "2026-10-01"
"""
PRICE_JSON = json.dumps({"price": [tomllib.loads(PRICE_TOML.decode())["price"][0]]}).encode()
MODEL_JSON = (ROOT / "profilers" / "data" / "hf_configs" / "llama-2-7b.json").read_bytes()


def _depth_of(v: Any) -> int:
    """How deep lists and tables nest in ``v`` (iteratively)."""
    deepest, stack = 0, [(v, 0)]
    while stack:
        x, n = stack.pop()
        deepest = max(deepest, n)
        if isinstance(x, dict):
            stack.extend((y, n + 1) for y in x.values())
        elif isinstance(x, list):
            stack.extend((y, n + 1) for y in x)
    return deepest


def _json_mutated(draw: Any, base: bytes) -> bytes:
    """A JSON file whose text is valid, with one value replaced (the key may be new)."""
    data = json.loads(base)
    target = data["price"][0] if "price" in data and draw(st.booleans()) else data
    keys = sorted(target) + ["model_type", "kind", "usd_per_unit", "zz"]
    v = draw(values)
    if isinstance(v, (dict, list)) and _depth_of(v) > 200:
        v = "deep"  # json.dumps recurses
    target[draw(st.sampled_from(keys))] = v
    try:
        return json.dumps(data, default=str).encode()
    except ValueError:  # an integer past str()'s limit
        return base


@st.composite
def side_files(draw: Any) -> tuple[bytes, dict[str, bytes]]:
    """A job file naming a file beside it (a price file, a model's config.json), that file fuzzed."""
    which = draw(st.sampled_from(["prices.toml", "prices.json", "whatif config.json", "llm config.json"]))
    if which.startswith("prices"):
        name = which
        job = EXAMPLE_BYTES[draw(st.sampled_from(["digits", "llama_whatif", "llm_serving"]))] + \
            f'\n[prices]\nfile = "{name}"\n'.encode()
        base = PRICE_TOML if name.endswith(".toml") else PRICE_JSON
    else:
        name = "config.json"
        example = "llama_whatif" if which.startswith("whatif") else "llm_serving"
        job = EXAMPLE_BYTES[example].replace(b'models = ["llama-2-7b", "llama-2-70b"]', b'models = ["config.json"]')
        base = MODEL_JSON
    how = draw(st.sampled_from(["json", "json", "huge", "bytes", "bytes", "bytes"]) if name.endswith(".json")
               else st.just("bytes"))
    if how == "json":
        content = _json_mutated(draw, base)
    elif how == "huge":  # a number JSON reads with int(): past its 4,300-digit limit
        content = re.sub(rb'("(hidden_size|usd_per_unit|num_attention_heads)": )[0-9.]+', rb"\g<1>" + b"9" * 5000,
                         base)
    else:
        content = damaged(draw, base, fields=("usd_per_unit", "date", "kind", "hidden_size", "model_type", "x"))
    return job, {name: content}


# ----------------------------------------------------------------------------------------------
# Python configs: each config class built with fuzzed keyword values
# ----------------------------------------------------------------------------------------------
class _FloatSub(float):
    pass


class _Weird:
    def __repr__(self) -> str:
        return "<weird>"


def _gen():
    yield "T4"


python_values = st.one_of(
    values,
    st.none(),
    st.sampled_from([b"T4", bytearray(b"x"), {"T4"}, frozenset({1}), (1, 2), ("T4",), 1 + 2j, decimal.Decimal("0.5"),
                     decimal.Decimal("NaN"), fractions.Fraction(1, 3), _FloatSub(0.5), _Weird(), object, len,
                     range(3), Path("x.toml"), ...]),
    st.builds(lambda: _gen()),
    st.lists(st.sampled_from(SPECIAL), max_size=3).map(tuple),
)

def _llm_scenario() -> Scenario:
    return Scenario(name="chat", serving=ServingPlan(avg_requests_per_s=2.0, peak_requests_per_s=6.0, input_tokens=512,
                                                     output_tokens=128, ttft_slo_s=2.0, tpot_slo_s=0.05))


#: (class, valid keyword values): one fuzzed field among valid ones reaches the later checks
CONFIGS: list[tuple[type, Callable[[], dict[str, Any]]]] = [
    (SearchSpace, lambda: dict(devices=("host", "T4"), batch_sizes=(1, 16))),
    (TrainingPlan, lambda: dict(samples_per_epoch=1000, epochs=2)),
    (TrainingPlan, lambda: dict(samples_per_epoch=2e9, unit="tokens", tokens_per_sample=4096, devices=8,
                                retrain_every_months=3)),
    (ServingPlan, lambda: dict(avg_requests_per_s=10, peak_requests_per_s=20, latency_slo_s=0.1)),
    (ServingPlan, lambda: dict(avg_requests_per_s=2, input_tokens=512, output_tokens=128, ttft_slo_s=2.0,
                               tpot_slo_s=0.05)),
    (DataPlan, lambda: dict(labeled_samples={"base": 10}, usd_per_label=0.1, preprocessing_usd=5.0)),
    (PeoplePlan, lambda: dict(usd_per_hour=100.0, hours={"prune": 8.0})),
    (Ownership, lambda: dict(mode="rent")),
    (Ownership, lambda: dict(mode="own", purchase_usd=30_000.0, utilization=0.5, power_watts=700.0)),
    (Scenario, lambda: dict(name="s", techniques=("prune",), serving=ServingPlan(avg_requests_per_s=1.0))),
    (WhatIf, lambda: dict(models=("llama-2-7b",), devices=("H100-SXM",))),
    (LLMSpace, lambda: dict(models=("llama-2-7b",), devices=("H100-SXM",), tp=(1,), batches=(1, 8))),
    (PriceRow, lambda: dict(kind="gpu_hour", item="T4", usd_per_unit=0.3, source="me", date="2026-10-01",
                            tier="on_demand")),
    (Job, lambda: dict(name="j", space=SearchSpace(devices=("host", "T4")), min_quality=0.9)),
    (Job, lambda: dict(name="j", space=SearchSpace(devices=("host", "T4")), min_quality=0.9, method="tpe",
                       n_trials=5, seed=1)),
    (Job, lambda: dict(name="j", kind="whatif", whatif=WhatIf(models=("llama-2-7b",), devices=("H100-SXM",)))),
    (Job, lambda: dict(name="j", kind="llm", llm=LLMSpace(devices=("H100-SXM",)), scenario=_llm_scenario())),
]


@st.composite
def python_configs(draw: Any) -> tuple[type, dict[str, Any], list[str]]:
    """(a config class, keyword arguments, the fuzzed ones): valid arguments with 1-3 fuzzed (the fuzzed
    ones listed only when the others are the whole valid set: then an error is about them)."""
    cls, valid = CONFIGS[draw(st.integers(0, len(CONFIGS) - 1))]
    kw = valid()
    whole = bool(draw(st.integers(0, 4)))
    if not whole:  # the required arguments only (defaults may not fit together with them)
        kw = {f.name: kw[f.name] for f in dataclasses.fields(cls)
              if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    names = _fields(cls)
    fuzzed = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    for f in fuzzed:
        if f in kw and draw(st.booleans()):  # near the valid value
            v = kw[f]
            new = perturbed(draw, list(v) if isinstance(v, tuple) else v)
            kw[f] = tuple(new) if isinstance(v, tuple) and isinstance(new, list) and draw(st.booleans()) else new
        else:
            kw[f] = draw(python_values)
    return cls, kw, fuzzed if whole else []


# ----------------------------------------------------------------------------------------------
# the property: accepted, or one clean error naming a field path
# ----------------------------------------------------------------------------------------------
#: profilers.config.build's message for an exception the class's own checks did not turn into an error
_WRAPPED = re.compile(r"must be a valid \w+ \((TypeError|AttributeError|KeyError)\b")


@dataclasses.dataclass
class Outcome:
    #: "accepted"; "rejected" (a clean error naming a field path); failures: "no_path" (a clean error
    #: without one), "wrapped" (a raw exception build() wrapped as "<path> must be a valid <Class> (TypeError: ...)"),
    #: "other_path" (a clean error naming a field the single mutation did not touch), "raw" (any other exception)
    kind: str
    error: BaseException | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.kind in ("accepted", "rejected")


def run(call: Callable[[], Any], *, path_prefix: str | tuple[str, ...]) -> Outcome:
    """Call it; a SigmastarError must start with (or, for Python configs, contain) a field path."""
    try:
        call()
    except SigmastarError as e:
        msg = str(e)
        if _WRAPPED.search(msg):  # build()'s last resort: a raw exception the class did not expect
            return Outcome("wrapped", e, f"{type(e).__name__}: {msg}")
        prefixes = (path_prefix,) if isinstance(path_prefix, str) else path_prefix
        if any(msg.startswith(p) or f" {p}" in msg or f"({p}" in msg for p in prefixes):
            return Outcome("rejected", e)
        return Outcome("no_path", e, f"{type(e).__name__}: {msg}")
    except RecursionError as e:  # traceback.format_exception of one could itself recurse: keep it short
        return Outcome("raw", e, f"RecursionError: {e}")
    except Exception as e:  # noqa: BLE001 - what the fuzzing looks for
        return Outcome("raw", e, "".join(traceback.format_exception(e))[-3000:])
    return Outcome("accepted")


#: rules that tie a field to another one: an error about the mutated field may name the other
_CROSS = {
    "job.workload": ("job.constraints.min_quality",),
    "job.constraints": ("job.workload",),
    "job.scenario.ownership": ("job.space.devices", "job.llm.devices", "job.whatif.devices"),
    "job.prices": ("job.space.devices", "job.llm.devices", "job.whatif.devices"),
    "job.whatif.train_seq_len": ("job.scenario.training.tokens_per_sample",),
    "job.scenario.training": ("job.whatif.train_seq_len",),
    "job.scenario.serving": ("job.scenario.serving",),
    "job.search.method": ("job.search.",),
    "job.search": ("job.search.",),
    "job.scenario.techniques": ("job.scenario.",),
    "job.scenario.people.hours": ("job.scenario.",),
}


def mutation_paths(ops: list[tuple]) -> tuple[str, ...] | None:
    """Where an error about a single mutation may point: the mutated path, a path on the way to it,
    a field beside it, or a field a cross-field rule ties it to (None: several mutations, or ``kind``,
    which decides which sections a job may have)."""
    if len(ops) != 1 or ops[0][1][0] == "kind":
        return None
    op, p = ops[0]
    out = [render(p[:i]) for i in range(len(p), 0, -1)] + ([render(p[:-1]) + "."] if len(p) > 1 else [])
    if len(p) == 1:  # a key at the top: unknown, or a section the kind of job may not have
        out.append("job must be a table with keys among")
    for head, also in _CROSS.items():
        if render(p).startswith(head):
            out += also
    # a table or a list nested past the limit is named by the whole file
    out.append("job must be a table with tables and arrays nested at most")
    return tuple(out)


def _names_the_mutation(out: Outcome, ops: list[tuple]) -> Outcome:
    expected = mutation_paths(ops)
    if out.kind == "rejected" and expected is not None and not str(out.error).startswith(expected):
        return Outcome("other_path", out.error, f"the mutation {ops[0]} read: {out.error}")
    return out


def check_job_table(case: tuple[dict, list[tuple]]) -> Outcome:
    data, ops = case
    return _names_the_mutation(run(lambda: parse_job(data), path_prefix=("job.", "job ")), ops)


def _scratch() -> Path:
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = tempfile.TemporaryDirectory(prefix="sigmastar-fuzz-")
    return Path(_SCRATCH.name)


_SCRATCH: Any = None


def check_file(raw: bytes | tuple[bytes, dict[str, bytes]]) -> Outcome:
    """Load ``raw`` as a job file (with, for a tuple, the files it names beside it)."""
    job, extra = raw if isinstance(raw, tuple) else (raw, {})
    d = _scratch()
    p = d / "job.toml"
    p.write_bytes(job)
    for name, content in extra.items():
        (d / name).write_bytes(content)
    try:
        # an error in a file the job names starts with that file's path (and its field path there)
        return run(lambda: load_job(p), path_prefix=("job.", "job ", *(str(d / n) for n in extra),
                                                     *(f"price file {d / n}" for n in extra)))
    finally:
        for name in extra:
            (d / name).unlink(missing_ok=True)


def check_job_file(case: tuple[dict, list[tuple]]) -> Outcome:
    out = check_file(toml_text(case[0]))
    if out.kind == "rejected" and str(out.error).startswith("job.path"):
        return out  # TOML cannot hold it (a surrogate, nesting past the reader's limit): the file is named
    return _names_the_mutation(out, case[1])


#: (class, field) -> other fields an error about it may name (cross-field rules); "*": any
_PY_CROSS = {
    ("ServingPlan", "avg_requests_per_s"): ("peak_requests_per_s",),
    ("Job", "kind"): ("*",),
    ("Job", "method"): ("*",),  # which search options a method takes
    ("Job", "workload"): ("min_quality",),
    ("Job", "scenario"): ("space.devices", "llm.devices", "whatif.devices", "scenario"),
    ("Job", "price_rows"): ("space.devices", "llm.devices", "whatif.devices"),
    ("Job", "price_file"): ("space.devices", "llm.devices", "whatif.devices"),
    ("Job", "whatif"): ("scenario.training.tokens_per_sample",),
    ("TrainingPlan", "unit"): ("tokens_per_sample",),
    ("ServingPlan", "input_tokens"): ("output_tokens", "request_mix"),
    ("ServingPlan", "output_tokens"): ("input_tokens", "request_mix"),
    ("ServingPlan", "latency_slo_s"): ("peak_requests_per_s",),
    ("Scenario", "people"): ("techniques",),
}


def check_python_config(case: tuple[type, dict[str, Any], list[str]]) -> Outcome:
    cls, kw, fuzzed = case
    owner = "PriceRow" if cls is PriceRow else cls.__name__
    out = run(lambda: cls(**kw), path_prefix=(f"{owner}.", f"{owner}["))
    if out.kind == "rejected" and len(fuzzed) == 1:  # one field fuzzed, the rest valid: the error names it
        head, f = str(out.error).split(" must be ")[0], fuzzed[0]
        also = _PY_CROSS.get((cls.__name__, f), ())
        if "*" not in also and not any(re.search(rf"[.\]]{re.escape(g)}(\b|$)", head) for g in (f, *also)):
            return Outcome("other_path", out.error, f"{cls.__name__}.{f} fuzzed read: {out.error}")
    return out


#: generator name -> (strategy, check): what the benchmark runs too
GENERATORS: dict[str, tuple[Any, Callable[[Any], Outcome]]] = {
    "job_tables": (job_tables(), check_job_table),
    "job_files": (job_tables(), check_job_file),
    "raw_files": (raw_files(), check_file),
    "side_files": (side_files(), check_file),
    "python_configs": (python_configs(), check_python_config),
}


def safe_repr(v: Any, limit: int = 2000) -> str:
    """``repr(v)`` cut to ``limit`` characters, even of a huge integer or a deeply nested value."""
    try:
        return repr(v)[:limit]
    except (ValueError, RecursionError) as e:
        return f"<{type(v).__name__}: {type(e).__name__} in repr>"


def _assert_ok(out: Outcome, case: Any) -> None:
    if not out.ok:
        shown = safe_repr(case)
        pytest.fail(f"{out.kind}: {out.detail}\ninput: {shown[:2000]}", pytrace=False)


@fuzz_settings(1200)
@given(job_tables())
def test_fuzzed_job_tables_are_accepted_or_rejected_with_a_path(case):
    _assert_ok(check_job_table(case), case)


@fuzz_settings(500)
@given(job_tables())
def test_fuzzed_job_files_are_accepted_or_rejected_with_a_path(case):
    _assert_ok(check_job_file(case), toml_text(case[0])[:2000])


@fuzz_settings(800)
@given(raw_files())
def test_fuzzed_raw_job_files_are_accepted_or_rejected_with_a_path(raw):
    _assert_ok(check_file(raw), raw[:2000])


@fuzz_settings(600)
@given(side_files())
def test_fuzzed_price_and_model_files_beside_a_job_are_accepted_or_rejected_with_a_path(case):
    _assert_ok(check_file(case), (case[0][-200:], {k: v[:1000] for k, v in case[1].items()}))


@fuzz_settings(1200)
@given(python_configs())
def test_fuzzed_python_configs_are_accepted_or_rejected_with_a_path(case):
    _assert_ok(check_python_config(case), case)


# ----------------------------------------------------------------------------------------------
# nonsense ranges: rejected with the exact field path
# ----------------------------------------------------------------------------------------------
def _edit(name: str, path: tuple, value: Any) -> dict:
    data = copy.deepcopy(EXAMPLES[name])
    assert _set(data, path, value)
    return data


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_job(data)
    return str(info.value)


NONSENSE = [
    ("digits_layerwise", ("search", "n_trials"), -3, "job.search.n_trials must be "),
    ("digits", ("constraints", "min_quality"), NAN, "job.constraints.min_quality must be "),
    ("digits", ("constraints", "min_quality"), INF, "job.constraints.min_quality must be "),
    ("digits", ("space", "batch_sizes"), [0], "job.space.batch_sizes[0] must be an integer >= 1; got 0."),
    ("digits", ("space", "prune_amount"), [0.0, 1.5], "job.space.prune_amount[1] must be a fraction in [0, 1)"),
    ("digits", ("space", "distill_width"), [0.0], "job.space.distill_width[0] must be a fraction in (0, 1]"),
    ("digits", ("space", "devices"), ["host", "TPU-v9"], "job.space.devices[1] must be a catalog device"),
    ("digits", ("scenario", "serving", "horizon_months"), -1, "job.scenario.serving.horizon_months must be "),
    ("digits", ("scenario", "serving", "horizon_months"), 1e300, "job.scenario.serving.horizon_months must be "),
    ("digits", ("scenario", "serving", "peak_requests_per_s"), 10,
     "job.scenario.serving.peak_requests_per_s must be >= avg_requests_per_s"),
    ("digits", ("scenario", "training", "epochs"), -2, "job.scenario.training.epochs must be a finite number >= 0"),
    ("digits", ("scenario", "ownership", "utilization"), 1.5, "job.scenario.ownership.utilization must be "),
    ("digits", ("search", "seed"), 2**64, "job.search.seed must be an integer in [0, 2**32 - 1]"),
    ("digits", ("search", "profile_time_cap_s"), 0, "job.search.profile_time_cap_s must be a number > 0"),
    ("llm_serving", ("llm", "tp"), [0], "job.llm.tp[0] must be an integer >= 1; got 0."),
    ("llm_serving", ("llm", "max_quality_loss"), 1.5, "job.llm.max_quality_loss must be a fraction in [0, 1)"),
    ("llm_serving", ("llm", "devices"), ["H100-SXM", "H100-SXM"], "job.llm.devices[1] must be a value not listed "),
    ("llama_whatif", ("whatif", "serve_batch_sizes"), [0], "job.whatif.serve_batch_sizes[0] must be an integer >= 1"),
    ("llama_whatif", ("whatif", "devices"), ["nope"], "job.whatif.devices[0] must be a catalog device"),
    ("digits", ("prices", "price"), [{"kind": "gpu_hour", "item": "T4", "usd_per_unit": -1, "source": "me",
                                      "date": "2026-10-01"}],
     "job.prices.price[0].usd_per_unit must be a finite number >= 0; got -1."),
    ("digits", ("space", "finetune_steps"), 10**5000, "job.space.finetune_steps must be "),
    # magnitudes no plan has: accepted, they overflowed the totals (OverflowError, inf)
    ("digits", ("space", "distill_steps"), 10**12, "job.space.distill_steps must be an integer in [1, 10,000,000]"),
    ("digits", ("scenario", "serving", "peak_requests_per_s"), 1e300,
     "job.scenario.serving.peak_requests_per_s must be a number in [0, 1e+09]"),
    ("digits", ("scenario", "serving", "samples_per_request"), 1e300,
     "job.scenario.serving.samples_per_request must be a number in [0, 1e+09]"),
    ("digits", ("scenario", "training", "retrain_every_months"), 1e-300,
     "job.scenario.training.retrain_every_months must be a number in [0.00137, 1.2e+03]"),
    ("digits", ("scenario", "ownership", "lifetime_years"), 1e-300, "job.scenario.ownership.lifetime_years must be "),
    ("digits", ("scenario", "people", "hours"), {"prune": 1e300}, "job.scenario.people.hours['prune'] must be "),
    ("digits", ("prices", "price"), [{"kind": "gpu_hour", "item": "T4", "usd_per_unit": 1e300, "source": "me",
                                      "date": "2026-10-01"}],
     "job.prices.price[0].usd_per_unit must be a price in [0, 1e+09] (USD/GPU-hour)"),
    ("llm_serving", ("llm", "tp"), [1, 2**63], "job.llm.tp[1] must be an integer in [1, 1024]"),
    ("llm_serving", ("llm", "batches"), [10**6], "job.llm.batches[0] must be an integer in [1, 65536]"),
    ("digits", ("search", "layer_choices"), [{"technique": ["quantize"]}],
     "job.search.layer_choices[0] must be a table naming a technique"),
]


@pytest.mark.parametrize("example, path, value, says", NONSENSE, ids=[f"{e}:{render(p)}" for e, p, _, _ in NONSENSE])
def test_nonsense_ranges_are_rejected_with_the_field_path(example, path, value, says):
    assert says in _error(_edit(example, path, value))


def test_a_huge_integer_is_shown_shortened(tmp_path):
    msg = _error(_edit("digits", ("search", "seed"), 10**5000))
    assert msg.startswith("job.search.seed must be an integer in [0, 2**32 - 1]; got an integer of 5001 digits")
    p = tmp_path / "huge.toml"
    p.write_bytes(EXAMPLE_BYTES["digits"] + b"\n[zz]\nn = " + b"9" * 5000 + b"\n")
    with pytest.raises(ConfigError) as info:
        load_job(p)
    assert str(info.value).startswith(f"job.path must be a valid TOML file; got {str(p)!r} (")


UNREADABLE = [
    (b"\xef\xbb\xbf" + EXAMPLE_BYTES["digits"], None),  # a UTF-8 BOM is read past
    (EXAMPLE_BYTES["digits"].decode().encode("utf-16"), "must be a UTF-8 TOML file"),
    (b"name = 'x'\x00\n", "must be a valid TOML file"),
    (b"name = 'x'\n\nn = = 1\n", "(Invalid value (at line 3, column 5))"),
    (_deep_text(10_000, "array"), "nested too deep to read"),
    (_deep_text(10_000, "inline"), "nested too deep to read"),
    (_deep_text(10_000, "dotted"), "nested at most 32 levels deep"),
    (_deep_text(10_000, "header"), "nested at most 32 levels deep"),
]


@pytest.mark.parametrize("raw, says", UNREADABLE, ids=["utf8-bom", "utf16", "nul", "truncated", "deep-array",
                                                       "deep-inline-table", "deep-dotted-key", "deep-table-header"])
def test_unreadable_job_files_are_one_clean_error(tmp_path, raw, says):
    p = tmp_path / "job.toml"
    p.write_bytes(raw)
    if says is None:
        assert load_job(p).name == "digits-bulk-scan"
        return
    with pytest.raises(ConfigError) as info:
        load_job(p)
    assert says in str(info.value)
    assert str(info.value).startswith("job")
