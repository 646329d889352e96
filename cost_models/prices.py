"""PriceBook: every price the cost model uses, as dated, sourced rows loaded from data files.

The default catalog lives in ``cost_models/data/*.toml`` (``gpu_hour``, ``purchase`` and
``services``). One schema for every row::

    kind          "gpu_hour" | "purchase" | "vcpu_hour" | "storage" | "network" | "electricity"
    item          a device name (gpu_hour, purchase), "vcpu", "object", "internet_egress",
                  "inter_node", "grid"
    tier          "on_demand" | "spot" | "reserved" for rented time, "" otherwise
    provider      who sells it ("aws", "gcp", "lambda", ...)
    usd_per_unit  the price; `unit` says per what ("USD/GPU-hour", "USD/GB-month", ...)
    default       the row used when a scenario names no provider
    source, date  where the number comes from and as of when (required on every row)

A user's file (TOML with ``[[price]]`` tables, or JSON ``{"price": [...]}``) merges over the
defaults: a row with the same (kind, item, tier, provider) replaces ours; a user row is the
default for its (kind, item, tier) unless it says ``default = false``.

    >>> book = PriceBook.default()
    >>> book.gpu_hour("H100-SXM").usd_per_unit
    6.88
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime as _dt
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from profilers.config import ConfigError, build, check_non_negative, invalid, serializable

__all__ = ["KINDS", "TIERS", "PriceRow", "PriceBook"]

#: kind -> (tiers a row of that kind may have, the unit its price is in)
KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "gpu_hour": (("on_demand", "spot", "reserved"), "USD/GPU-hour"),
    "vcpu_hour": (("on_demand", "spot", "reserved"), "USD/vCPU-hour"),
    "purchase": (("",), "USD/device"),
    "storage": (("",), "USD/GB-month"),
    "network": (("",), "USD/GB"),
    "electricity": (("",), "USD/kWh"),
}
TIERS = ("on_demand", "spot", "reserved")
#: the highest price a row may carry (a billion USD per GPU-hour, device, GB, kWh ...): past any real price
MAX_USD_PER_UNIT = 1e9
_DEFAULT_FILES = ("gpu_hour.toml", "purchase.toml", "services.toml")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@serializable("cost_models.price_row")
@dataclass(frozen=True)
class PriceRow:
    """One price, with where it comes from. Validated on construction."""

    kind: str
    item: str
    usd_per_unit: float
    source: str
    date: str
    tier: str = ""
    provider: str = ""
    unit: str = ""
    default: bool = False
    product: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise invalid("PriceRow", "kind", "one of " + ", ".join(map(repr, KINDS)), self.kind)
        if not isinstance(self.item, str) or not self.item:
            raise invalid(f"PriceRow[{self.kind}]", "item", "a non-empty string", self.item)
        owner = f"PriceRow[{self.kind} {self.item!r}]"
        tiers, unit = KINDS[self.kind]
        if self.tier not in tiers:
            raise invalid(owner, "tier", "one of " + ", ".join(map(repr, tiers)), self.tier)
        check_non_negative(owner, "usd_per_unit", self.usd_per_unit)
        if self.usd_per_unit > MAX_USD_PER_UNIT:  # a typo or a unit slip: totals built on it overflow
            raise invalid(owner, "usd_per_unit", f"a price in [0, {MAX_USD_PER_UNIT:g}] ({unit})", self.usd_per_unit)
        for f in ("source", "date"):
            v = getattr(self, f)
            if not isinstance(v, str) or not v.strip():
                raise invalid(owner, f, "a non-empty string (every price is dated and sourced)", v)
        if not _DATE.match(self.date):
            raise invalid(owner, "date", "an ISO date YYYY-MM-DD", self.date)
        for f in ("provider", "unit", "product", "notes"):
            if not isinstance(getattr(self, f), str):
                raise invalid(owner, f, "a string", getattr(self, f))
        if not self.unit:
            object.__setattr__(self, "unit", unit)
        if not isinstance(self.default, bool):
            raise invalid(owner, "default", "true or false", self.default)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.item.lower(), self.tier, self.provider.lower())

    def cite(self) -> str:
        """A one-line provenance string for line items."""
        who = f"{self.provider} " if self.provider else ""
        return f"{who}{self.product or self.item} ({self.date}; {self.source})"


def _rows_from_mapping(data: Mapping[str, Any], origin: str, *, user: bool) -> list[PriceRow]:
    """The ``[[price]]`` rows of a price file, each built and checked by :func:`build` at
    ``<origin>: price[i]`` (keys, presence, types; the row's own rules in :class:`PriceRow`)."""
    rows = data.get("price")
    if not isinstance(rows, list):
        raise invalid(f"price file {origin}", "price", "an array of [[price]] tables", type(rows).__name__)
    file_defaults = {k: data[k] for k in ("kind", "unit", "source", "date") if k in data}
    required = {k: "present (every price is dated and sourced)" for k in ("kind", "item", "usd_per_unit", "source",
                                                                             "date")}
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            row = {**file_defaults, **row}
            if user and "default" not in row:
                row["default"] = True  # the user's price wins unless they say otherwise
        out.append(build(PriceRow, row, f"{origin}: price[{i}]", required=required))
    return out


def _read_file(path: Path) -> Mapping[str, Any]:
    """A price file's table: UTF-8 (a byte order mark read past), TOML or JSON, a table at the top."""
    fmt = path.suffix[1:].upper()
    try:
        text = path.read_bytes().removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"price file {path} is not UTF-8 text: {e}") from None
    except OSError as e:
        raise ConfigError(f"price file {path} cannot be read: {e.strerror or e}") from None
    try:
        data = json.loads(text) if fmt == "JSON" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"price file {path} is not valid {fmt}: {e}") from None
    except RecursionError:
        raise ConfigError(f"price file {path} is not valid {fmt}: arrays or tables nested too deep to read") from None
    except ValueError:  # int(): a literal past Python's int -> str limit
        raise ConfigError(f"price file {path} is not valid {fmt}: an integer of more than "
                          f"{sys.get_int_max_str_digits()} digits") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"price file {path} must hold a table with a 'price' array; got a "
                          f"{type(data).__name__}.")
    return data


@serializable("cost_models.price_book")
@dataclass(frozen=True)
class PriceBook:
    """An immutable set of :class:`PriceRow`; look prices up, merge overrides, scale for analyses."""

    rows: tuple[PriceRow, ...]

    def __post_init__(self) -> None:
        rows = tuple(self.rows)
        for r in rows:
            if not isinstance(r, PriceRow):
                raise invalid("PriceBook", "rows", "PriceRow objects", type(r).__name__)
        seen: dict[tuple, PriceRow] = {}
        for r in rows:
            if r.key in seen:
                raise invalid("PriceBook", "rows", "unique (kind, item, tier, provider)", r.key)
            seen[r.key] = r
        object.__setattr__(self, "rows", rows)
        index: dict[tuple[str, str, str], list[PriceRow]] = {}
        for r in rows:
            index.setdefault((r.kind, r.item.lower(), r.tier), []).append(r)
        object.__setattr__(self, "_index", index)

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def default(cls) -> "PriceBook":
        """The shipped catalog (cached: the book is immutable)."""
        global _DEFAULT
        if _DEFAULT is None:
            rows: list[PriceRow] = []
            for name in _DEFAULT_FILES:
                text = resources.files("cost_models").joinpath(f"data/{name}").read_text()
                rows += _rows_from_mapping(tomllib.loads(text), f"cost_models/data/{name}", user=False)
            _DEFAULT = cls(tuple(rows))
        return _DEFAULT

    @classmethod
    def load(cls, path: str | Path, base: "PriceBook | None | str" = "default") -> "PriceBook":
        """Read a TOML/JSON price file and merge it over ``base`` (the defaults unless None)."""
        p = Path(path)
        if not p.is_file():
            raise invalid("PriceBook.load", "path", "an existing .toml or .json file", str(path))
        rows = _rows_from_mapping(_read_file(p), str(p), user=True)
        if base is None:
            return cls(tuple(rows))
        base_book = cls.default() if base == "default" else base
        return base_book.merged(rows)

    def merged(self, other: "PriceBook | Iterable[PriceRow]") -> "PriceBook":
        """Rows of ``other`` replace rows with the same key; a default there clears ours."""
        new = list(other.rows if isinstance(other, PriceBook) else other)
        new_keys = {r.key for r in new}
        new_defaults = {r.key[:3] for r in new if r.default}
        kept = []
        for r in self.rows:
            if r.key in new_keys:
                continue
            if r.default and r.key[:3] in new_defaults:
                r = dataclasses.replace(r, default=False)
            kept.append(r)
        return PriceBook(tuple(kept + new))

    def with_price(self, kind: str, item: str, usd_per_unit: float, *, tier: str | None = None,
                   provider: str = "user", source: str = "user override", date: str | None = None,
                   notes: str = "") -> "PriceBook":
        """A copy with one price set (and made the default for its kind/item/tier)."""
        if tier is None:
            tier = "on_demand" if kind in ("gpu_hour", "vcpu_hour") else ""
        row = PriceRow(kind=kind, item=item, usd_per_unit=usd_per_unit, tier=tier, provider=provider,
                       source=source, date=date or _dt.date.today().isoformat(), default=True, notes=notes)
        return self.merged([row])

    def scaled(self, kind: str, factor: float) -> "PriceBook":
        """Every row of ``kind`` times ``factor`` (sensitivity and Monte Carlo use this)."""
        if kind not in KINDS:
            raise invalid("PriceBook.scaled", "kind", "one of " + ", ".join(map(repr, KINDS)), kind)
        check_non_negative("PriceBook.scaled", "factor", factor)
        return PriceBook(tuple(dataclasses.replace(r, usd_per_unit=r.usd_per_unit * factor) if r.kind == kind else r
                               for r in self.rows))

    # ---- look-up ---------------------------------------------------------------------------
    def get(self, kind: str, item: str, tier: str = "", provider: str | None = None) -> PriceRow:
        """The row for (kind, item, tier) from ``provider``, or the default row when None."""
        if kind not in KINDS:
            raise invalid("PriceBook", "kind", "one of " + ", ".join(map(repr, KINDS)), kind)
        cands = self._index.get((kind, str(item).lower(), tier), [])  # type: ignore[attr-defined]
        if provider is not None:
            cands = [r for r in cands if r.provider.lower() == provider.lower()]
        elif len(cands) > 1:
            defaults = [r for r in cands if r.default]
            cands = defaults if defaults else cands
        if len(cands) == 1:
            return cands[0]
        what = f"{kind}[{item!r}" + (f", {tier!r}" if tier else "") + "]"
        if not cands:
            have = self.available(kind, item)
            allowed = ("a price in the book; have " + "; ".join(have)) if have else \
                f"a price in the book (none for {item!r}; add a row or pass a price)"
            raise invalid("PriceBook", what, allowed, "missing" if provider is None else f"provider {provider!r}")
        provs = ", ".join(sorted(repr(r.provider) for r in cands))
        raise invalid("PriceBook", what, f"one row; mark one default or name a provider ({provs})", "several")

    def available(self, kind: str, item: str) -> list[str]:
        """Human-readable list of the (tier, provider) rows for one kind and item."""
        out = []
        for (k, it, tier), rows in sorted(self._index.items()):  # type: ignore[attr-defined]
            if k == kind and it == str(item).lower():
                out += [f"{tier or '-'} via {r.provider or '-'}" for r in rows]
        return out

    def gpu_hour(self, device: str, tier: str = "on_demand", provider: str | None = None) -> PriceRow:
        if tier not in TIERS:
            raise invalid("PriceBook.gpu_hour", "tier", "one of " + ", ".join(map(repr, TIERS)), tier)
        return self.get("gpu_hour", device, tier, provider)

    def purchase(self, device: str, provider: str | None = None) -> PriceRow:
        return self.get("purchase", device, "", provider)

    def devices(self, kind: str = "gpu_hour", tier: str = "on_demand") -> list[str]:
        """Items that have a price of ``kind`` at ``tier``."""
        return sorted({r.item for r in self.rows if r.kind == kind and r.tier == tier})

    def to_dataframe(self):  # pragma: no cover - thin pandas wrapper
        import pandas as pd

        return pd.DataFrame([dataclasses.asdict(r) for r in self.rows])

    def __len__(self) -> int:
        return len(self.rows)


_DEFAULT: PriceBook | None = None

