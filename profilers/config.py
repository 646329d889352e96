"""Shared conventions for every config and result type in sigmastar (torch-free).

* One error format: ``"<Owner>.<field> must be <allowed>; got <value>."`` built by :func:`invalid`.
* Frozen dataclasses that round-trip through JSON with a type tag and a schema version
  (:func:`to_json_dict` / :func:`from_json_dict`); classes opt in with :func:`serializable`.

This module imports nothing heavy, so ``cost_models`` (which must import without torch) can use it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Callable, Iterable, TypeVar

__all__ = [
    "SigmastarError",
    "ConfigError",
    "invalid",
    "check_positive",
    "check_non_negative",
    "check_choice",
    "serializable",
    "to_json_dict",
    "from_json_dict",
    "dumps",
    "loads",
]


class SigmastarError(Exception):
    """Base class of every error sigmastar raises on purpose."""


class ConfigError(SigmastarError, ValueError):
    """Bad input: the message names the owner, the field, what is allowed and what was given."""


def invalid(owner: str, field: str, allowed: str, got: Any) -> ConfigError:
    """Build (not raise) the one error format: ``<Owner>.<field> must be <allowed>; got <value>.``"""
    return ConfigError(f"{owner}.{field} must be {allowed}; got {got!r}.")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_positive(owner: str, field: str, value: Any) -> None:
    if not _is_number(value) or value <= 0:
        raise invalid(owner, field, "a finite number > 0", value)


def check_non_negative(owner: str, field: str, value: Any) -> None:
    if not _is_number(value) or value < 0:
        raise invalid(owner, field, "a finite number >= 0", value)


def check_choice(owner: str, field: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise invalid(owner, field, "one of " + ", ".join(repr(a) for a in allowed), value)


# --------------------------------------------------------------------------------------------
# JSON round trip with a type tag and a version
# --------------------------------------------------------------------------------------------

_REGISTRY: dict[str, tuple[type, int]] = {}
T = TypeVar("T")


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
