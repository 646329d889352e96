"""Job-file field checks: each raises one :class:`ConfigError` in the one format, naming the field path.

``_err("job.space.quantize[1]", "one of 'none', 'int8_dynamic'", "int4")`` reads
``job.space.quantize[1] must be one of 'none', 'int8_dynamic'; got 'int4'.`` Used by the job
parser (:mod:`optimizer.job_parse`), the job itself (:mod:`optimizer.job_spec`) and the what-if
spec (:mod:`optimizer.whatif`).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import re
from collections.abc import Mapping
from typing import Any

from profilers._config import ConfigError


# ----------------------------------------------------------------------------------------------
# errors in the one format, with the field path
# ----------------------------------------------------------------------------------------------
class _Nothing:
    def __repr__(self) -> str:
        return "nothing"


_MISSING = _Nothing()


def _show(v: Any) -> str:
    if isinstance(v, Mapping):
        return "a table"
    if isinstance(v, (_dt.date, _dt.datetime, _dt.time)):
        return f"{type(v).__name__} {v.isoformat()}"
    return repr(v)


def _err(path: str, allowed: str, got: Any) -> ConfigError:
    return ConfigError(f"{path} must be {allowed}; got {_show(got)}.")


def _remap(e: ConfigError, owner_pattern: str, path: str) -> ConfigError:
    """Rewrite an error raised by a config class (``ServingPlan.x must ...``) onto the job path."""
    msg = re.sub(rf"^{owner_pattern}\.", f"{path}.", str(e), count=1)
    return ConfigError(msg)


def _keys(path: str, table: Any, allowed: tuple[str, ...] | list[str]) -> dict:
    if not isinstance(table, Mapping):
        raise _err(path, "a table", table)
    for k in table:
        if k not in allowed:
            close = difflib.get_close_matches(k, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path} must be a table with keys among {', '.join(allowed)}; "
                              f"got unknown key {k!r}{hint}.")
    return dict(table)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(path: str, v: Any, minimum: int) -> int:
    if not _is_int(v) or v < minimum:
        raise _err(path, f"an integer >= {minimum}", v)
    return v


def _positive(path: str, v: Any) -> float:
    if not _is_num(v) or v <= 0:
        raise _err(path, "a number > 0", v)
    return float(v)


def _string(path: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _err(path, "a non-empty string", v)
    return v


def _list(path: str, v: Any, check, *, unique: bool = True) -> tuple:
    if not isinstance(v, list) or not v:
        raise _err(path, "a non-empty list", v)
    out = []
    for i, x in enumerate(v):
        item = check(f"{path}[{i}]", x)
        if unique and item in out:
            raise _err(f"{path}[{i}]", "a value not listed before (no duplicates)", x)
        out.append(item)
    return tuple(out)


def _choice(allowed: tuple[str, ...]):
    def check(path: str, v: Any) -> str:
        if v not in allowed:
            raise _err(path, "one of " + ", ".join(repr(a) for a in allowed), v)
        return v

    return check


def _device_names(*, host: bool) -> list[str]:
    from profilers import hardware

    return hardware.names() + (["host"] if host else [])


def _device(host: bool):
    def check(path: str, v: Any) -> str:
        names = _device_names(host=host)
        match = next((n for n in names if isinstance(v, str) and n.lower() == v.lower()), None)
        if match is None:
            extra = "" if host else " (GPUs only: this host's CPU cannot serve these models)"
            raise _err(path, "a catalog device: one of " + ", ".join(repr(n) for n in names) + extra, v)
        return match

    return check

