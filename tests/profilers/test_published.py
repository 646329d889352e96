"""profilers.published: the shipped published figures are well-formed, sourced and converted."""

import pytest

from profilers.config import ConfigError
from profilers.published import COLUMNS, OPTIONAL, load_published


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


def _write(f, cols, *rows):
    f.write_text(",".join(cols) + "\n" + "".join(",".join(r[c] for c in cols) + "\n" for r in rows))


def _good(**kw):
    r = dict.fromkeys(COLUMNS, "")
    r.update(device="A100", model="Llama-2-13B", task="inference", precision="int4", runtime="eager",
             metric="ms_per_output_token", value="28.96", unit="ms", source="s", source_locator="l",
             weights="int4_weight_only", kv_dtype="fp16")
    r.update(kw)
    return r


def test_the_weight_and_kv_formats_are_checked(tmp_path):
    f = tmp_path / "bad.csv"
    _write(f, COLUMNS, _good(), _good(weights="int3"))
    allowed = "'', 'fp16', 'bf16', 'fp8', 'int8_weight_only', 'int4_weight_only', 'int8_dynamic'"
    with pytest.raises(ConfigError, match=rf"^published\[bad\.csv\]\.weights \(row 3\) must be one of {allowed}; "
                                          r"got 'int3'\.$"):
        load_published(f)
    _write(f, COLUMNS, _good(kv_dtype="int4"))
    with pytest.raises(ConfigError, match=r"^published\[bad\.csv\]\.kv_dtype \(row 2\) must be one of '', 'fp16', "
                                          r"'bf16', 'fp8', 'int8'; got 'int4'\.$"):
        load_published(f)
    ok = tmp_path / "ok.csv"
    _write(ok, COLUMNS, _good(), _good(precision="fp8", weights="", kv_dtype=""))
    df = load_published(ok)
    assert list(df["weights"]) == ["int4_weight_only", ""] and list(df["kv_dtype"]) == ["fp16", ""]


def test_a_file_without_the_optional_columns_loads(tmp_path):
    f = tmp_path / "old.csv"
    old = [c for c in COLUMNS if c not in OPTIONAL]
    assert COLUMNS[-2:] == OPTIONAL == ("weights", "kv_dtype")
    _write(f, old, _good(precision="fp16"))
    df = load_published(f)
    assert len(df) == 1 and df.loc[0, "weights"] == "" and df.loc[0, "kv_dtype"] == ""
    # a required column is still required
    _write(f, [c for c in old if c != "unit"], _good(precision="fp16"))
    with pytest.raises(ConfigError,
                       match=r"^published\[old\.csv\]\.columns must be the columns .*; got \"missing \['unit'\]\"\.$"):
        load_published(f)


def test_the_shipped_llm_serving_rows():
    df = load_published()
    llm = df[df.metric.isin(("time_to_first_token_ms", "ms_per_output_token", "tokens_per_s"))]
    assert len(llm) >= 25
    # every LLM row names its deployment: GPUs, and a throughput says whether it is per GPU or for the deployment
    assert (llm.gpus.str.len() > 0).all()
    assert set(llm[llm.metric == "tokens_per_s"].unit) <= {"output tokens/s", "output tokens/s per GPU"}
    # batch-1 decode, time to first token at several prompt lengths, tensor-parallel rows, several formats and GPUs
    ttft = llm[llm.metric == "time_to_first_token_ms"]
    assert len({int(s) for s in ttft.seq_len if s} & {128, 512, 2048}) == 3
    assert (llm.gpus.astype(int) > 1).sum() >= 10
    assert {"fp8", "int4_weight_only", "bf16"} <= set(llm.weights) and "fp8" in set(llm.kv_dtype)
    assert {"A100", "H100", "H200", "L40S", "A10G"} <= set(llm.device)
    # the optimum GPTQ row, as printed: Llama-2-13B, Marlin int4, batch 1, 28.96 ms per token on A100-SXM4-80GB
    row = llm[(llm.weights == "int4_weight_only") & (llm.metric == "ms_per_output_token")].iloc[0]
    assert row.value == "28.96" and row.batch_size == "1" and row.runtime == "eager"
    assert row.value_si == pytest.approx(0.02896)
