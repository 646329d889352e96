import json
import re

import pytest

from cost_models import PriceBook, PriceRow
from profilers import hardware
from profilers.config import ConfigError, dumps, loads


def test_every_catalog_device_has_a_dated_sourced_on_demand_price():
    book = PriceBook.default()
    for name in hardware.names():
        if name == "TestGPU-24":
            continue
        row = book.gpu_hour(name, "on_demand")
        assert row.usd_per_unit > 0 and row.source and re.match(r"\d{4}-\d{2}-\d{2}$", row.date)


def test_issue_device_list_is_priced():
    # the ten devices the catalog is meant to hold, priced even before profilers lists them all
    book = PriceBook.default()
    for name in ("T4", "L4", "A10G", "A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIe", "H200", "B200", "MI300X"):
        assert book.gpu_hour(name).usd_per_unit > 0
    assert set(book.devices("gpu_hour", "spot")) >= {"L4", "A100-40GB", "H100-SXM", "H200", "MI300X"}


def test_every_default_row_has_source_and_date_and_one_default_per_key():
    book = PriceBook.default()
    defaults = {}
    for r in book.rows:
        assert r.source.strip() and r.date
        if r.default:
            assert r.key[:3] not in defaults, r
            defaults[r.key[:3]] = r


def test_known_rows():
    book = PriceBook.default()
    assert book.gpu_hour("H100-SXM").usd_per_unit == 6.88  # p5.48xlarge $55.04 / 8
    assert book.gpu_hour("h100-sxm", "spot").provider == "gcp"  # case-insensitive device
    assert book.gpu_hour("H100-SXM", provider="lambda").usd_per_unit == 3.99
    assert book.get("vcpu_hour", "vcpu", "on_demand").usd_per_unit == pytest.approx(0.0816 / 2)
    assert book.get("storage", "object").usd_per_unit == 0.023
    assert book.get("network", "internet_egress").usd_per_unit == 0.09
    assert book.get("electricity", "grid").usd_per_unit == pytest.approx(0.1102)
    assert book.purchase("H100-SXM").usd_per_unit == 30000


def test_missing_price_names_the_key_and_what_exists():
    with pytest.raises(ConfigError, match=re.escape(
            "PriceBook.gpu_hour['T4', 'spot'] must be a price in the book; have on_demand via aws; got 'missing'.")):
        PriceBook.default().gpu_hour("T4", "spot")
    with pytest.raises(ConfigError, match=re.escape("PriceBook.purchase['A10G'] must be a price in the book")):
        PriceBook.default().purchase("A10G")
    with pytest.raises(ConfigError, match=r"PriceBook.gpu_hour\['H100-SXM', 'on_demand'\] .* got \"provider 'nope'\""):
        PriceBook.default().gpu_hour("H100-SXM", provider="nope")


def test_negative_price_is_rejected():
    with pytest.raises(ConfigError, match=re.escape(
            "PriceRow[gpu_hour 'T4'].usd_per_unit must be a finite number >= 0; got -1.")):
        PriceRow(kind="gpu_hour", item="T4", tier="on_demand", usd_per_unit=-1, source="x", date="2026-01-01")
    with pytest.raises(ConfigError, match="must be a finite number >= 0; got nan"):
        PriceRow(kind="storage", item="object", usd_per_unit=float("nan"), source="x", date="2026-01-01")


def test_rows_must_be_dated_and_sourced():
    with pytest.raises(ConfigError, match=re.escape("PriceRow[storage 'object'].source must be a non-empty string")):
        PriceRow(kind="storage", item="object", usd_per_unit=1, source="", date="2026-01-01")
    with pytest.raises(ConfigError, match=re.escape("PriceRow[storage 'object'].date must be an ISO date YYYY-MM-DD")):
        PriceRow(kind="storage", item="object", usd_per_unit=1, source="s", date="last week")
    with pytest.raises(ConfigError, match=re.escape("PriceRow[storage 'object'].tier must be one of ''; got 'spot'.")):
        PriceRow(kind="storage", item="object", usd_per_unit=1, source="s", date="2026-01-01", tier="spot")


def test_user_toml_merges_over_defaults(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('''
[[price]]
kind = "gpu_hour"
item = "H100-SXM"
tier = "on_demand"
provider = "acme"
usd_per_unit = 2.10
source = "our contract"
date = "2026-10-01"
''')
    book = PriceBook.load(p)
    assert book.gpu_hour("H100-SXM").usd_per_unit == 2.10  # user row is the default now
    assert book.gpu_hour("H100-SXM", provider="aws").usd_per_unit == 6.88  # ours still there
    assert len(book) == len(PriceBook.default()) + 1
    only = PriceBook.load(p, base=None)
    assert len(only) == 1


def test_user_json_replaces_same_key_and_rejects_bad_rows(tmp_path):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps({"price": [{"kind": "storage", "item": "object", "provider": "aws",
                                        "usd_per_unit": 0.01, "source": "s", "date": "2026-10-01"}]}))
    book = PriceBook.load(p)
    assert book.get("storage", "object").usd_per_unit == 0.01
    assert len(book) == len(PriceBook.default())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"price": [{"kind": "storage", "item": "object", "usd_per_unit": -2,
                                          "source": "s", "date": "2026-10-01"}]}))
    with pytest.raises(ConfigError, match="usd_per_unit must be a finite number >= 0; got -2."):
        PriceBook.load(bad)
    nosrc = tmp_path / "nosrc.toml"
    nosrc.write_text('[[price]]\nkind = "storage"\nitem = "object"\nusd_per_unit = 1\ndate = "2026-01-01"\n')
    with pytest.raises(ConfigError, match=re.escape(
            "price[0].source must be present (every price is dated and sourced); got nothing.")):
        PriceBook.load(nosrc)
    with pytest.raises(ConfigError, match="PriceBook.load.path must be an existing"):
        PriceBook.load(tmp_path / "nope.toml")


def test_with_price_and_scaled():
    book = PriceBook.default().with_price("gpu_hour", "T4", 0.2, tier="spot")
    assert book.gpu_hour("T4", "spot").usd_per_unit == 0.2
    doubled = book.scaled("gpu_hour", 2.0)
    assert doubled.gpu_hour("T4", "spot").usd_per_unit == pytest.approx(0.4)
    assert doubled.get("storage", "object").usd_per_unit == book.get("storage", "object").usd_per_unit


def test_price_book_round_trips_json():
    book = PriceBook.default()
    again = loads(dumps(book))
    assert again == book
    assert again.gpu_hour("L4", "spot").usd_per_unit == 0.28
