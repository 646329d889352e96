"""Shared conventions for every config and result type in sigmastar (torch-free).

* One error format: ``"<Owner>.<field> must be <allowed>; got <value>."`` built by :func:`invalid`.
* One validation layer: a config class checks its values once, in ``__post_init__``, with
  :func:`invalid`; :func:`build` makes one from a table (a parsed TOML or JSON file), checking the
  table's keys and each value's type against the field's type hint, and reports every error at its
  path in the file. Inside ``build(SearchSpace, table, "job.space")`` the class's own
  ``invalid("SearchSpace", "prune_amount[2]", ...)`` reads ``job.space.prune_amount[2] must be ...``;
  built in Python, the same check reads ``SearchSpace.prune_amount[2] must be ...`` (:func:`at`,
  :func:`where`).
* Frozen dataclasses that round-trip through JSON with a type tag and a schema version
  (:func:`to_json_dict` / :func:`from_json_dict`); classes opt in with :func:`serializable`.

This module imports nothing heavy, so ``cost_models`` (which must import without torch) can use it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as _dt
import difflib
import functools
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

__all__ = [
    "is_number",
    "SigmastarError",
    "ConfigError",
    "MISSING",
    "invalid",
    "at",
    "where",
    "relative_to",
    "resolve_path",
    "described",
    "check_table",
    "check_fields",
    "build",
    "check_positive",
    "check_non_negative",
    "check_choice",
    "check_int",
    "check_list",
    "serializable",
    "to_json_dict",
    "from_json_dict",
    "dumps",
    "loads",
]


T = TypeVar("T")


class SigmastarError(Exception):
    """Base class of every error sigmastar raises on purpose."""


class ConfigError(SigmastarError, ValueError):
    """Bad input: the message names the owner, the field, what is allowed and what was given."""


def invalid(owner: str, field: str, allowed: str, got: Any) -> ConfigError:
    """Build (not raise) the one error format: ``<Owner>.<field> must be <allowed>; got <value>.``

    ``field`` may carry an index or a key (``"prune_amount[2]"``, ``"hours['prune']"``) and
    ``owner`` an instance qualifier in brackets (``"PriceRow[gpu_hour 'T4']"``). Inside
    :func:`at` (which :func:`build` enters) the ``<Owner>.<field>`` part becomes the path the
    owner is being built at, e.g. ``job.space.prune_amount[2]``; see :func:`where`.
    """
    return ConfigError(f"{where(owner, field)} must be {allowed}; got {_repr(got)}.")


def _repr(v: Any) -> str:
    try:
        return repr(v)
    except RecursionError:
        return "a value nested too deeply to show"
    except ValueError:  # an integer past Python's int -> str limit (4,300 digits), or a value holding one
        if isinstance(v, int):
            return _long_int(v)
        return f"a {type(v).__name__} holding an integer too long to show"


def _long_int(v: int) -> str:
    """``an integer of 5001 digits``: an integer too long for ``str()``, counted without it."""
    n = abs(v)
    d = max(1, int(n.bit_length() * 0.30102999566398120))
    while 10**d <= n:
        d += 1
    while d > 1 and 10 ** (d - 1) > n:
        d -= 1
    return f"{'a negative' if v < 0 else 'an'} integer of {d} digits"


class _Missing:
    """What ``got`` shows for a key the table does not have."""

    def __repr__(self) -> str:
        return "nothing"


#: ``invalid(..., got=MISSING)`` reads "got nothing." (a required key is absent)
MISSING: Any = _Missing()


class _Described:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def described(value: Any) -> Any:
    """``value`` as a file's reader names it in a message: a table as "a table", a TOML date as
    "date 2026-10-01", anything else as itself (``invalid`` reprs it)."""
    if isinstance(value, Mapping):
        return _Described("a table")
    if isinstance(value, (_dt.date, _dt.datetime, _dt.time)):
        return _Described(f"{type(value).__name__} {value.isoformat()}")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 10_000:
        return _Described(_long_int(value))  # thousands of digits (str() refuses 4,300+): "an integer of 5001 digits"
    return value


# --------------------------------------------------------------------------------------------
# where a config is being built: error paths
# --------------------------------------------------------------------------------------------

# each frame maps an owner (a class name) to (the path it is built at, its field -> sub-path map)
_Frame = dict[str, tuple[str, Mapping[str, str]]]
_FRAMES: contextvars.ContextVar[tuple[_Frame, ...]] = contextvars.ContextVar("sigmastar_config_frames",
                                                                              default=())
_BASE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("sigmastar_config_base", default=None)


def _owner_name(owner: Any) -> str:
    return owner if isinstance(owner, str) else owner.__name__


def _split_field(field: str) -> tuple[str, str]:
    """``"prune_amount[2]"`` -> ("prune_amount", "[2]"); ``"training.devices"`` -> ("training", ".devices")."""
    cut = min((i for i in (field.find("["), field.find(".")) if i >= 0), default=len(field))
    return field[:cut], field[cut:]


def _join(path: str, sub: str) -> str:
    if not sub:
        return path
    if sub.startswith("."):
        return path + sub if path else sub[1:]
    if not path or sub.startswith("["):
        return path + sub
    return f"{path}.{sub}"


@contextlib.contextmanager
def at(owner: type | str, path: str, fields: Mapping[str, str] | None = None) -> Iterator[None]:
    """Within the block, errors owned by ``owner`` (a class or its name) read ``path.<field>``.

    ``fields`` maps a field to its sub-path under ``path`` when it lives elsewhere in the file
    (``{"n_trials": "search.n_trials"}``; ``""`` = ``path`` itself). Errors another owner raises
    keep their owner. Blocks nest; the innermost block that knows an owner wins.
    """
    token = _FRAMES.set(_FRAMES.get() + ({_owner_name(owner): (path, dict(fields or {}))},))
    try:
        yield
    finally:
        _FRAMES.reset(token)


@contextlib.contextmanager
def _frame(frame: _Frame) -> Iterator[None]:
    token = _FRAMES.set(_FRAMES.get() + (frame,))
    try:
        yield
    finally:
        _FRAMES.reset(token)


def where(owner: str, field: str = "") -> str:
    """The path an error about ``owner.field`` is reported at here: ``"job.space.prune_amount[2]"``
    inside ``build(SearchSpace, ..., "job.space")``, ``"SearchSpace.prune_amount[2]"`` outside."""
    name, _, _ = owner.partition("[")  # "PriceRow[gpu_hour 'T4']" is a PriceRow
    for frame in reversed(_FRAMES.get()):
        if name in frame:
            path, fields = frame[name]
            head, rest = _split_field(field)
            return _join(_join(path, fields.get(head, head)), rest) if field else path
    return f"{owner}.{field}" if field else owner


@contextlib.contextmanager
def relative_to(base: str | Path | None) -> Iterator[None]:
    """Within the block, :func:`resolve_path` reads relative paths against ``base`` (a job file's
    folder) instead of the working directory."""
    token = _BASE.set(Path(base) if base is not None else None)
    try:
        yield
    finally:
        _BASE.reset(token)


def resolve_path(p: str | Path) -> Path:
    """``p`` as given when absolute, else under the folder of :func:`relative_to` (or the cwd)."""
    p = Path(p)
    if p.is_absolute():
        return p
    base = _BASE.get()
    return (base / p) if base is not None else p


# --------------------------------------------------------------------------------------------
# building a config from a table
# --------------------------------------------------------------------------------------------


def check_table(path: str, table: Any, allowed: Iterable[str]) -> dict[str, Any]:
    """``table`` as a dict, if it is a table whose keys are all among ``allowed`` (else the error
    names the unknown key, with a did-you-mean)."""
    allowed = list(allowed)
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path} must be a table; got {_repr(described(table))}.")
    for k in table:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path} must be a table with keys among {', '.join(allowed)}; "
                              f"got unknown key {k!r}{hint}.")
    return dict(table)


def _is_dataclass_type(t: Any) -> bool:
    return isinstance(t, type) and dataclasses.is_dataclass(t)


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field holds (``Scenario``, ``Scenario | None``), else None."""
    if _is_dataclass_type(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(hint) if _is_dataclass_type(a)]
        return found[0] if len(found) == 1 else None
    return None


def _describe_type(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return "anything"
    if origin in (typing.Union, types.UnionType):
        parts = [_describe_type(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    if hint is str:
        return "a string"
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is type(None):
        return "absent"
    if origin in (tuple, list) or hint in (tuple, list):
        return "a list"
    if origin in (dict, Mapping) or hint in (dict, Mapping) or origin is typing.Mapping:
        return "a table"
    if _is_dataclass_type(hint):
        return "a table" if getattr(hint, "_json_tag", None) else f"a {hint.__name__}"
    return f"a {getattr(hint, '__name__', str(hint))}"


def _type_error(value: Any, hint: Any, path: str) -> ConfigError | None:
    """The first place ``value`` does not have the type ``hint`` declares (None if it has)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object or isinstance(hint, (TypeVar, str)):
        return None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = [_type_error(value, a, path) for a in args if a is not type(None)]
        if all(e is not None for e in errors):
            nested = [e for e in errors if e is not None and not str(e).startswith(f"{path} must be ")]
            if len(nested) == 1:  # it had the right shape, wrong contents: name the element
                return nested[0]
            return ConfigError(f"{path} must be {_describe_type(hint)}; got {_repr(described(value))}.")
        return None
    ok: bool
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    elif hint is type(None):
        ok = value is None
    elif origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (tuple, list)):
            ok = False
        else:
            if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
                item_hints = list(args) if len(args) == len(value) else [Any] * len(value)
            else:
                item_hints = [args[0] if args else Any] * len(value)
            for i, (v, h) in enumerate(zip(value, item_hints)):
                err = _type_error(v, h, f"{path}[{i}]")
                if err is not None:
                    return err
            return None
    elif origin in (dict, Mapping) or hint in (dict, Mapping) or origin is typing.Mapping:
        if not isinstance(value, Mapping):
            ok = False
        else:
            vh = args[1] if len(args) == 2 else Any
            for k, v in value.items():
                err = _type_error(v, vh, f"{path}[{k!r}]")
                if err is not None:
                    return err
            return None
    elif isinstance(hint, type):
        ok = isinstance(value, hint)
    else:
        return None  # a hint this layer does not read (Callable, Literal, ...): the class checks it
    if ok:
        return None
    return ConfigError(f"{path} must be {_describe_type(hint)}; got {_repr(described(value))}.")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_paths(cls: type, fields: Mapping[str, str] | None) -> dict[str, str]:
    out = {f.name: f.metadata["path"] for f in dataclasses.fields(cls) if "path" in f.metadata}
    out.update(fields or {})
    return out


def check_fields(obj: Any, owner: str | None = None) -> None:
    """Check each field of the dataclass ``obj`` against its type hint (nested configs, lists and
    tables element by element); raise the first mismatch at its path (see :func:`where`)."""
    cls = type(obj)
    owner = owner or cls.__name__
    hints = _hints(cls)
    for f in dataclasses.fields(obj):
        err = _type_error(getattr(obj, f.name), hints.get(f.name, Any), where(owner, f.name))
        if err is not None:
            raise err


def _convert(value: Any, hint: Any, path: str) -> Any:
    """A table value made ready for a field of type ``hint``: nested configs built at ``path``,
    TOML dates turned into ISO strings where a string is declared; the rest as given."""
    dc = _dataclass_in(hint)
    if dc is not None and isinstance(value, Mapping):
        return build(dc, value, path)
    if dc is not None and value is not None and not isinstance(value, dc) and getattr(dc, "_json_tag", None):
        raise ConfigError(f"{path} must be a table; got {_repr(described(value))}.")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, (_dt.date, _dt.datetime, _dt.time)) and str in args:
            return value.isoformat()
        return value
    if hint is str and isinstance(value, (_dt.date, _dt.datetime, _dt.time)):
        return value.isoformat()
    if origin in (tuple, list) and isinstance(value, list) and args:
        item = args[0] if (origin is list or (len(args) == 2 and args[1] is Ellipsis)) else None
        if item is not None and (_dataclass_in(item) is not None or item is str):
            return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def build(cls: type[T], table: Any, path: str | None = None, *, fields: Mapping[str, str] | None = None,
          required: Mapping[str, str] | None = None) -> T:
    """A ``cls`` (a dataclass config) from ``table`` (a parsed TOML/JSON table), checked once.

    * ``table`` must be a table whose keys are ``cls``'s fields (an unknown key is named, with a
      did-you-mean);
    * a field without a default, or one listed in ``required`` (field -> what it must be), must
      be present ("got nothing");
    * a table where a nested config is declared is built the same way at ``path.field``
      (``path.field[i]`` in a list); a TOML date where a string is declared becomes its ISO text;
    * ``cls`` is constructed inside :func:`at` ``(cls, path, fields)``, so its own ``__post_init__``
      checks (ranges, choices: every value rule, written once there) report at the file's path;
    * each value is then checked against the field's type hint (str, bool, int, float, lists,
      tables, Optional, nested configs), so a table where a string belongs reads
      ``<path>.provider must be a string; got a table.`` instead of failing later.

    ``fields`` maps a field to its sub-path (fields may also declare ``metadata={"path": ...}``);
    ``path`` defaults to the class name (errors then read as when built in Python).
    """
    path = cls.__name__ if path is None else path
    paths = _field_paths(cls, fields)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    t = check_table(path, table, names)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name not in t and (missing or f.name in (required or {})):
            allowed = (required or {}).get(f.name, "present")
            raise ConfigError(f"{_join(path, paths.get(f.name, f.name))} must be {allowed}; got nothing.")
    kw = {k: _convert(v, hints.get(k, Any), _join(path, paths.get(k, k))) for k, v in t.items()}
    frame: _Frame = {cls.__name__: (path, paths)}
    for f in dataclasses.fields(cls):  # a check of the whole that names a part's field reads at the part
        dc = _dataclass_in(hints.get(f.name, Any))
        if dc is not None and dc is not cls:
            frame.setdefault(dc.__name__, (_join(path, paths.get(f.name, f.name)), {}))
    with _frame(frame):
        try:
            obj = cls(**kw)
        except (TypeError, AttributeError, KeyError) as e:  # a wrong type the class did not expect
            for k, v in kw.items():
                err = _type_error(v, hints.get(k, Any), _join(path, paths.get(k, k)))
                if err is not None:
                    raise err from None
            raise ConfigError(f"{path} must be a valid {cls.__name__} ({type(e).__name__}: {e}); "
                              f"got a table.") from e
    for k, v in kw.items():
        err = _type_error(v, hints.get(k, Any), _join(path, paths.get(k, k)))
        if err is not None:
            raise err
    return obj


def is_number(x: Any) -> bool:
    """A finite int or float, not a bool: what every numeric config field accepts (an int too large
    for a float, past 1.8e308, is not: the cost model computes in floats)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # math.isfinite(10**400) converts to float
        return False


def check_positive(owner: str, field: str, value: Any) -> None:
    if not is_number(value) or value <= 0:
        raise invalid(owner, field, "a finite number > 0", value)


def check_non_negative(owner: str, field: str, value: Any) -> None:
    if not is_number(value) or value < 0:
        raise invalid(owner, field, "a finite number >= 0", value)


def check_choice(owner: str, field: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise invalid(owner, field, "one of " + ", ".join(repr(a) for a in allowed), value)


def check_int(owner: str, field: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` if it is an integer (not a bool) within the bounds; the message states them."""
    if minimum is not None and maximum is not None:
        allowed = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        allowed = f"an integer >= {minimum}"
    elif maximum is not None:
        allowed = f"an integer <= {maximum}"
    else:
        allowed = "an integer"
    if (not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)):
        raise invalid(owner, field, allowed, value)
    return value


def check_list(owner: str, field: str, value: Any, item: Callable[[str, Any], Any] | None = None, *,
               unique: bool = True) -> tuple:
    """``value`` as a tuple, if it is a non-empty list whose items pass ``item(field_i, v)``
    (called with ``"field[i]"``; it returns the item to keep) and, with ``unique``, repeat none."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise invalid(owner, field, "a non-empty list", described(value))
    items = list(value)
    if not items:
        raise invalid(owner, field, "a non-empty list", value)
    out: list[Any] = []
    for i, v in enumerate(items):
        kept = item(f"{field}[{i}]", v) if item is not None else v
        if unique and kept in out:
            raise invalid(owner, f"{field}[{i}]", "a value not listed before (no duplicates)", v)
        out.append(kept)
    return tuple(out)


# --------------------------------------------------------------------------------------------
# JSON round trip with a type tag and a version
# --------------------------------------------------------------------------------------------

_REGISTRY: dict[str, tuple[type, int]] = {}


def serializable(tag: str, version: int = 1) -> Callable[[type[T]], type[T]]:
    """Class decorator: register a dataclass under ``tag`` for :func:`from_json_dict`."""

    def deco(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"serializable({tag!r}) needs a dataclass; got {cls!r}")
        if tag in _REGISTRY and _REGISTRY[tag][0].__qualname__ != cls.__qualname__:
            raise TypeError(f"serializable tag {tag!r} is already used by {_REGISTRY[tag][0]!r}")
        _REGISTRY[tag] = (cls, version)
        cls._json_tag = tag  # type: ignore[attr-defined]
        cls._json_version = version  # type: ignore[attr-defined]
        return cls

    return deco


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json_dict(value)
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "nan": JSON has no literal for them
    return value


def to_json_dict(obj: Any) -> dict[str, Any]:
    """A JSON-ready dict of a registered dataclass: ``{"type": tag, "version": v, ...fields}``."""
    tag = getattr(type(obj), "_json_tag", None)
    if tag is None:
        raise TypeError(f"{type(obj).__name__} is not registered with @serializable")
    out: dict[str, Any] = {"type": tag, "version": type(obj)._json_version}
    for f in dataclasses.fields(obj):
        out[f.name] = _encode(getattr(obj, f.name))
    return out


def _decode(value: Any, hint: Any) -> Any:
    if isinstance(value, dict) and "type" in value and value.get("type") in _REGISTRY:
        return from_json_dict(value)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        return None
    if hint is float and isinstance(value, str):
        return float(value)
    if origin in (tuple,) and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(v, args[0]) for v in value)
        if args and len(args) == len(value):
            return tuple(_decode(v, a) for v, a in zip(value, args))
        return tuple(_decode(v, Any) for v in value)
    if origin in (list,) and isinstance(value, list):
        return [_decode(v, args[0] if args else Any) for v in value]
    if origin in (dict,) and isinstance(value, dict):
        vh = args[1] if len(args) == 2 else Any
        return {k: _decode(v, vh) for k, v in value.items()}
    if origin is typing.Union or origin is types.UnionType:
        for a in args:
            if a is type(None):
                continue
            try:
                return _decode(value, a)
            except (TypeError, ValueError):
                continue
        return value
    if isinstance(value, list):
        return tuple(_decode(v, Any) for v in value)
    if isinstance(value, dict):
        return {k: _decode(v, Any) for k, v in value.items()}
    return value


def from_json_dict(data: dict[str, Any]) -> Any:
    """Inverse of :func:`to_json_dict`; checks the type tag and the version."""
    if not isinstance(data, dict) or "type" not in data:
        raise invalid("json", "type", "a dict with a 'type' tag", type(data).__name__)
    tag = data["type"]
    if tag not in _REGISTRY:
        raise invalid("json", "type", "one of " + ", ".join(sorted(_REGISTRY)), tag)
    cls, version = _REGISTRY[tag]
    got_version = data.get("version")
    if got_version != version:
        raise invalid(cls.__name__, "version", f"{version} (this release reads version {version})", got_version)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _decode(data[f.name], hints.get(f.name, Any))
    return cls(**kwargs)


def dumps(obj: Any, **kwargs: Any) -> str:
    return json.dumps(to_json_dict(obj), **kwargs)


def loads(text: str) -> Any:
    return from_json_dict(json.loads(text))
