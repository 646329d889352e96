"""Parsing job files: the file's sections mapped onto the configs they build.

Each config checks itself, once (its ``__post_init__``); :func:`profilers.config.build` builds it
from its table, checking keys and types, and reports the class's own errors at the file's path,
e.g. ``job.space.prune_amount[1] must be a fraction in [0, 1) (0.0 = no pruning); got 1.5.``
What is left here is the file's layout: which section holds which fields, what a section may hold
for each kind of job, the file's own defaults (a scenario named after the job, a user's price row
being the default for its item), and reading the file (UTF-8, TOML, sane nesting).
"""

from __future__ import annotations

import codecs
import dataclasses
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from cost_models import PriceRow
from profilers.config import ConfigError, _repr, build, check_table, described, relative_to

from .job_spec import Job
from .whatif import WhatIf

__all__ = ["MAX_DEPTH", "bundled_jobs", "default_job_path", "load_job", "parse_job"]

#: tables and arrays nested deeper than this are not a job file (nothing in one nests past 4)
MAX_DEPTH = 32

# the file's sections: top-level keys that are Job fields, and tables that group Job fields
_TOP = ("name", "kind", "description", "workload", "output", "space", "scenario", "prices", "constraints", "search",
        "whatif", "llm")
_SEARCH_ONLY = ("space", "constraints", "search", "workload")
#: byte order marks of encodings a job file is not in (UTF-32's before UTF-16's: they share a prefix)
_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"),
         (codecs.BOM_UTF16_BE, "UTF-16"))
_PRICE_REQUIRED = "present (every price names what it prices, and is dated and sourced)"


def _section(name: str) -> dict[str, str]:
    """Job fields a file section holds: key in the section -> Job field (from the fields' ``path``)."""
    out = {}
    for f in dataclasses.fields(Job):
        path = f.metadata.get("path", "")
        if path.startswith(name + "."):
            out[path.split(".", 1)[1]] = f.name
    return out


def _err(path: str, allowed: str, got: Any) -> ConfigError:
    return ConfigError(f"{path} must be {allowed}; got {_repr(described(got))}.")


def _depth(value: Any) -> int:
    """How deep tables and arrays nest in ``value`` (iteratively: no recursion on hostile input)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, Mapping):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend((x, d + 1) for x in v)
        else:
            continue
        deepest = max(deepest, d + 1)
        if deepest > MAX_DEPTH:
            break
    return deepest


def _scenario_table(t: Any, name: Any, whatif: WhatIf | None) -> Any:
    """The [scenario] table with the file's defaults: named after the job, and (in a what-if) a
    token-counted training plan's ``tokens_per_sample`` taken from ``whatif.train_seq_len``."""
    if not isinstance(t, Mapping):
        return t  # build() names the error
    t = dict(t)
    if "techniques" in t:
        raise _err("job.scenario.techniques", "absent (the search sets each variant's techniques from job.space)",
                   t["techniques"])
    if "name" not in t and isinstance(name, str) and name.strip():
        t["name"] = name
    tr = t.get("training")
    if whatif is not None and isinstance(tr, Mapping) and tr.get("unit") == "tokens":
        t["training"] = {"tokens_per_sample": whatif.train_seq_len, **tr}
    return t


def _price_rows(t: Any) -> tuple[str | None, tuple[PriceRow, ...]]:
    """[prices]: a price file (checked by the Job, relative to the job file) and [[prices.price]] rows."""
    t = check_table("job.prices", t, tuple(_section("prices")))
    raw = t.get("price", [])
    if not isinstance(raw, list):
        raise _err("job.prices.price", "an array of [[prices.price]] tables", raw)
    rows = []
    required = {k: _PRICE_REQUIRED for k in ("kind", "item", "usd_per_unit", "source", "date")}
    for i, row in enumerate(raw):
        if isinstance(row, Mapping):
            row = dict(row)
            row.setdefault("default", True)  # the user's price wins unless the row says otherwise
            if row.get("kind") in ("gpu_hour", "vcpu_hour"):
                row.setdefault("tier", "on_demand")
        rows.append(build(PriceRow, row, f"job.prices.price[{i}]", required=required))
    return t.get("file"), tuple(rows)


def parse_job(data: Mapping[str, Any], *, source: str | Path | None = None) -> Job:
    """A :class:`Job` from a parsed job file (a dict); ``source``: the file, for relative paths."""
    base = Path(source).parent if source else Path.cwd()
    data = check_table("job", data, _TOP)
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(f"job must be a table with tables and arrays nested at most {MAX_DEPTH} levels deep; "
                          f"got one nested deeper.")
    kind = data.get("kind", "search")
    name = data["name"] if "name" in data else (Path(source).stem if source else "job")
    kw: dict[str, Any] = {k: data[k] for k in ("kind", "description", "workload", "output") if k in data}
    kw["name"] = name
    with relative_to(base):
        if kind == "whatif":
            for k in (*_SEARCH_ONLY, "llm"):
                if k in data:
                    raise _err(f"job.{k}", "absent in a 'whatif' job (it prices configs; it does not search)", data[k])
            kw["whatif"] = build(WhatIf, data.get("whatif", {}), "job.whatif")
        elif kind == "llm":
            from .llm_search import LLMSpace

            for k in (*_SEARCH_ONLY, "whatif"):
                if k in data:
                    raise _err(f"job.{k}", "absent in an 'llm' job (its choices are in [llm])", data[k])
            kw["llm"] = build(LLMSpace, data.get("llm", {}), "job.llm")
        else:
            for k in ("whatif", "llm"):
                if k in data:
                    raise _err(f"job.{k}", f"absent in a 'search' job (set kind = \"{k}\" for {'a what-if' if k == 'whatif' else 'an LLM serving search'})",
                               data[k])
            kw["space"] = data.get("space", {})
            for sec in ("constraints", "search"):
                fields = _section(sec)
                t = check_table(f"job.{sec}", data.get(sec, {}), tuple(fields))
                kw.update({fields[k]: v for k, v in t.items()})
        kw["scenario"] = _scenario_table(data.get("scenario", {}), name, kw.get("whatif"))
        kw["price_file"], kw["price_rows"] = _price_rows(data.get("prices", {}))
        if source:
            kw["source"] = str(Path(source).resolve())
        required = {} if kind in ("whatif", "llm") else {
            "min_quality": "a number (the quality the chosen model must reach, e.g. 0.95)"}
        if kw["price_file"] is None:
            del kw["price_file"]
        return build(Job, kw, "job", required=required)


def load_job(path: str | Path) -> Job:
    """Read and validate a job file (TOML, UTF-8)."""
    p = Path(path)
    if not p.is_file():
        raise _err("job.path", "an existing job file (TOML)", str(path))
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise _err("job.path", "a readable job file (TOML)", f"{path} ({e.strerror or e})") from None
    try:
        text = raw.removeprefix(codecs.BOM_UTF8).decode("utf-8")  # a UTF-8 byte order mark is read past
    except UnicodeDecodeError as e:
        bom = next((name for bom, name in _BOMS if raw.startswith(bom)), None)
        hint = f"; it is {bom} (save it as UTF-8)" if bom else ""
        raise ConfigError(f"job.path must be a UTF-8 TOML file; got {str(path)!r} ({e}{hint}).") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"job.path must be a valid TOML file; got {str(path)!r} ({e}).") from None
    except RecursionError:
        raise ConfigError(f"job.path must be a TOML file with tables and arrays nested at most {MAX_DEPTH} levels "
                          f"deep; got {str(path)!r} (nested too deep to read).") from None
    except ValueError:  # tomllib's int(): a literal past Python's int -> str limit
        raise ConfigError(f"job.path must be a valid TOML file; got {str(path)!r} (an integer literal of more "
                          f"than {sys.get_int_max_str_digits()} digits).") from None
    return parse_job(data, source=p)


def bundled_jobs() -> dict[str, Path]:
    """Jobs shipped inside the package (``optimizer/data/*.toml``): name -> path."""
    d = resources.files("optimizer").joinpath("data")
    return {p.name.removesuffix(".toml"): Path(str(p)) for p in d.iterdir() if p.name.endswith(".toml")}


def default_job_path(kind: str = "search") -> Path:
    """The job ``sigmastar search`` (or ``sigmastar whatif``) runs without a job file."""
    return bundled_jobs()["digits" if kind == "search" else "llama_whatif"]
