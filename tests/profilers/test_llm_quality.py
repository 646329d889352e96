"""profilers.llm_quality: the shipped published quality effects are well-formed and sourced; the lookup rule."""

import math

import pytest

from profilers.config import ConfigError
from profilers.llm_quality import (COLUMNS, FORMATS, KV_DTYPES, METRICS, QualityEffect, load_quality,
                                   quality_effect)


def _row(**changes):
    good = dict.fromkeys(COLUMNS, "")
    good.update(family="llama-2", size_b="7", model="Llama-2 7B", format="int4_weight_only", method="awq",
                group_size="128", metric="wikitext2_ppl", value="5.60", baseline_value="5.47",
                higher_is_better="false", source="s", source_locator="l", date="2024-05-07")
    good.update(changes)
    return ",".join(good[c] for c in COLUMNS)


def test_the_shipped_file_is_complete_and_sourced():
    df = load_quality()
    assert len(df) >= 30
    assert set(df["format"]) <= set(FORMATS) and set(df["kv_dtype"]) <= {""} | set(KV_DTYPES)
    assert set(df["metric"]) <= set(METRICS)
    assert (df["higher_is_better"] == ["true" if METRICS[m] else "false" for m in df["metric"]]).all()
    assert (df["source"].str.len() > 0).all() and (df["source_locator"].str.len() > 0).all()
    assert (df["method"].str.len() > 0).all()
    # the families and formats the search asks about
    for family, size in (("llama-2", "7"), ("llama-2", "13"), ("llama-2", "70"), ("llama-3", "8"), ("llama-3", "70"),
                         ("mistral", "7")):
        assert ((df.family == family) & (df.size_b == size)).any(), (family, size)
    assert {"fp8", "int8_dynamic", "int4_weight_only", "int3_weight_only"} <= set(df["format"])
    assert {"int8", "int4"} <= set(df["kv_dtype"])
    # relative_change is value / baseline_value - 1, from the strings as printed
    assert df["relative_change"].tolist() == pytest.approx(
        [float(v) / float(b) - 1 for v, b in zip(df["value"], df["baseline_value"])])
    assert df["line"].tolist() == list(range(2, len(df) + 2))


def test_figures_are_kept_as_printed():
    df = load_quality()
    # QServe README, 'WikiText2 perplexity evaluated with 2048 sequence length': AWQ W4A16 g128, Llama-2 7B
    row = df[(df.model == "Llama-2 7B") & (df.method == "awq")].iloc[0]
    assert (row.value, row.baseline_value, row.group_size) == ("5.60", "5.47", "128")
    # SmoothQuant README: Llama-2-13B W8A8 is printed below its FP16 figure (a negative change, kept)
    row = df[(df.model == "Llama-2-13B") & (df.format == "int8_dynamic")].iloc[0]
    assert (row.value, row.baseline_value) == ("4.929", "4.950") and row.relative_change < 0


def test_a_bad_format_is_named_with_its_row_and_the_allowed_values(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text(",".join(COLUMNS) + "\n" + _row() + "\n" + _row(format="int4_w4a16") + "\n")
    with pytest.raises(ConfigError, match=r"^llm_quality\[bad\.csv\]\.format \(row 3\) must be one of 'fp16', 'bf16', "
                                          r"'fp8', .*'int4_weight_only'.*; got 'int4_w4a16'\.$"):
        load_quality(f)


@pytest.mark.parametrize("change, field", [
    ({"metric": "perplexity"}, "metric"),
    ({"kv_dtype": "fp16"}, "kv_dtype"),
    ({"higher_is_better": "true"}, "higher_is_better"),
    ({"baseline_value": "n/a"}, "baseline_value"),
    ({"source": ""}, "source"),
    ({"format": "fp16"}, "format"),  # an unquantized row that is not about the KV cache says nothing
    ({"date": "May 2024"}, "date"),
])
def test_other_bad_values_are_named(tmp_path, change, field):
    f = tmp_path / "bad.csv"
    f.write_text(",".join(COLUMNS) + "\n" + _row(**change) + "\n")
    with pytest.raises(ConfigError, match=rf"^llm_quality\[bad\.csv\]\.{field} \(row 2\) must be "):
        load_quality(f)


def test_columns_must_be_the_documented_ones(tmp_path):
    f = tmp_path / "cols.csv"
    f.write_text("family,size_b\nllama-2,7\n")
    with pytest.raises(ConfigError, match=r"^llm_quality\[cols\.csv\]\.columns must be the columns family, size_b"):
        load_quality(f)


def test_int4_llama2_7b_is_a_published_perplexity_increase():
    e = quality_effect("llama-2", 7, "int4_weight_only")
    assert isinstance(e, QualityEffect) and e.label == "published" and e.exact_size
    assert e.metric == "wikitext2_ppl" and e.higher_is_better is False
    assert e.relative_change > 0 and e.loss == e.relative_change
    assert e.relative_change == pytest.approx(e.value / e.baseline_value - 1)
    assert e.source and e.date and len(e.rows) == 1
    row = load_quality().set_index("line").loc[e.rows[0]]
    assert (float(row.value), float(row.baseline_value)) == (e.value, e.baseline_value)
    # several int4 rows for that size: the largest loss is reported; method= picks one
    awq = quality_effect("llama-2", 7, "int4_weight_only", method="awq")
    assert awq.method == "awq" and 0 < awq.loss <= e.loss


def test_unknown_family_is_none_never_harmless():
    assert quality_effect("no-such-family", 7, "int4_weight_only") is None
    assert quality_effect("llama-2", 7, "int4_weight_only", metric="longbench_avg") is None


def test_the_baseline_format_is_a_zero_effect():
    for fmt in ("fp16", "bf16"):
        e = quality_effect("llama-2", 7, fmt)
        assert e.relative_change == 0.0 and e.loss == 0.0 and e.source == "baseline" and e.rows == ()
    assert quality_effect("anything", 1.5, "fp16", kv_dtype="fp16").relative_change == 0.0


def test_kv_cache_rows_and_accuracy_losses():
    e = quality_effect("llama-2", 7, "fp16", kv_dtype="int4")  # LMDeploy kv int4, MMLU
    assert e.kv_dtype == "int4" and e.metric == "mmlu_acc" and e.higher_is_better
    assert e.relative_change < 0 and e.loss == -e.relative_change > 0
    assert quality_effect("llama-2", 7, "bf16", kv_dtype="int4") == e  # fp16/bf16 weights are one baseline


def test_a_missing_size_uses_the_nearest_and_says_so():
    e = quality_effect("llama-3", 70, "int4_weight_only")
    assert e is not None and not e.exact_size and e.size_b == 8 and "8B" in e.note
    assert quality_effect("llama-3", 70, "int4_weight_only", nearest_size=False) is None
    assert math.isclose(quality_effect("llama-2", 70, "fp8").baseline_value, 69.1)


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match=r"^quality_effect\.format must be one of"):
        quality_effect("llama-2", 7, "int4")
    with pytest.raises(ConfigError, match=r"^quality_effect\.kv_dtype must be"):
        quality_effect("llama-2", 7, "fp16", kv_dtype="nf4")
