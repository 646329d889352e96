"""profilers.published: the shipped published figures are well-formed, sourced and converted."""

import pytest

from profilers.config import ConfigError
from profilers.published import COLUMNS, load_published


def test_the_shipped_file_is_complete_and_sourced():
    df = load_published()
    assert len(df) >= 40
    assert {"T4", "L4", "A100", "H100"} <= set(df["device"])
    assert {"inference", "training"} <= set(df["task"]) and {"eager", "fused"} <= set(df["runtime"])
    assert (df["source"].str.len() > 0).all() and (df["source_locator"].str.len() > 0).all()


def test_units_convert_to_seconds_and_rates():
    df = load_published()
    # T4, ResNet-50 v1.5, fp32, batch 1, PyTorch: "10.7 ms" in the README's Latency Avg column
    row = df[(df.device == "T4") & (df.model == "ResNet-50 v1.5") & (df.precision == "fp32") & (df.batch_size == "1")
             & (df.metric == "latency_ms")].iloc[0]
    assert row.value == "10.7" and row.value_si == pytest.approx(0.0107)
    ns = df[df.unit == "ns"]
    assert (ns.value_si == ns.value.astype(float) * 1e-9).all()


def test_a_bad_row_is_named(tmp_path):
    f = tmp_path / "bad.csv"
    good = dict.fromkeys(COLUMNS, "")
    good.update(device="T4", model="m", task="inference", precision="fp16", runtime="fused", metric="latency_ms",
                value="1.5", unit="ms", source="s", source_locator="l")
    f.write_text(",".join(COLUMNS) + "\n" + ",".join(good[c] for c in COLUMNS) + "\n"
                 + ",".join({**good, "value": "fast"}[c] for c in COLUMNS) + "\n")
    with pytest.raises(ConfigError, match=r"^published\[bad\.csv\]\.value \(row 3\) must be a number > 0, as printed "
                                          r"by the source; got 'fast'\.$"):
        load_published(f)
