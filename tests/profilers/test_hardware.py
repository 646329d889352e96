"""Device catalog (profilers/data/devices.toml), DeviceSpec validation, and the measured host."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
from dataclasses import replace

import psutil
import pytest

from profilers import hardware
from profilers.config import ConfigError, dumps, loads
from profilers.hardware import DeviceSpec
from profilers.host import CpuInfo, cpu_info, formula_peak_flops, host_device_name, host_spec

REQUIRED = ["T4", "L4", "A10G", "A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIe", "H200", "B200", "MI300X"]


@pytest.fixture
def isolated_catalog(monkeypatch):
    """A private copy of the catalog, so user files loaded by a test do not leak into others."""
    hardware._ensure_loaded()
    monkeypatch.setattr(hardware, "_CATALOG", dict(hardware._CATALOG))


def _toml_row(**fields) -> str:
    base = {
        "name": "Bad", "kind": "gpu", "vendor": "X", "memory_gb": 16, "memory_bandwidth_gbps": 500,
        "source": "test", "date": "2026-01-01",
    }
    base.update(fields)
    lines = ["[[device]]"]
    for k, v in base.items():
        if v is None:
            continue
        lines.append(f"{k} = {json.dumps(v)}" if not isinstance(v, str) or not v.startswith("{") else f"{k} = {v}")
    if "peak_tflops" not in base:
        lines.append("peak_tflops = { fp32 = 1.0 }")
    return "\n".join(lines) + "\n"


# ---- the shipped catalog --------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED)
def test_required_device_present_dated_and_sourced(name):
    spec = hardware.get(name)
    assert spec.name == name
    assert spec.kind == "gpu"
    assert re.search(r"[a-z0-9-]+\.(com|co)/", spec.source), spec.source  # names a URL
    datetime.date.fromisoformat(spec.date)  # raises on a malformed date
    assert spec.devices_per_node >= 1


def test_lookup_is_case_insensitive():
    assert hardware.get("h100-sxm") is hardware.get("H100-SXM")


def test_every_peak_and_size_positive():
    for spec in hardware.catalog().values():
        assert spec.peak_tflops, spec.name
        for dtype, v in spec.peak_tflops.items():
            assert v > 0, (spec.name, dtype)
        assert spec.memory_gb > 0 and spec.memory_bandwidth_gbps > 0
        assert spec.tdp_watts > 0, spec.name


def test_dense_figures_pinned():
    # The vendors print "with sparsity" numbers; the catalog must hold the dense ones (half).
    assert hardware.get("H100-SXM").peak_tflops["bf16"] == 989.4  # not 1979
    assert hardware.get("H100-PCIe").peak_tflops["bf16"] == 756  # not 1513
    assert hardware.get("A100-80GB").peak_tflops["bf16"] == 312  # not 624
    assert hardware.get("L4").peak_tflops["fp16"] == 121  # not 242
    assert hardware.get("B200").peak_tflops["fp8"] == 4500  # not 9000
    assert hardware.get("MI300X").peak_tflops["bf16"] == 1307.4  # not 2614.9
    # SI accessor: 989.4 TFLOP/s = 9.894e14 FLOP/s
    assert hardware.get("H100-SXM").peak_flops_per_s("bf16") == pytest.approx(9.894e14)


def test_dtypes_a_device_lacks_are_absent():
    t4 = hardware.get("T4")
    assert set(t4.peak_tflops) == {"fp32", "fp16", "int8"}  # Turing: no bf16, tf32, fp8
    for ampere in ("A100-40GB", "A100-80GB", "A10G"):
        assert not hardware.get(ampere).supports("fp8")
    assert hardware.get("H100-SXM").supports("fp8")


def test_a100_network_is_the_megatron_setup():
    # 8x 200 Gb/s HDR per 8-GPU node = 25 GB/s per GPU; NVLink 600 GB/s bidirectional = 300 per direction
    for name in ("A100-40GB", "A100-80GB"):
        spec = hardware.get(name)
        assert spec.network_gbps == 25 and spec.intra_node_gbps == 300 and spec.devices_per_node == 8


# ---- relations across the catalog -------------------------------------------------------------


def test_h200_is_h100_compute_with_more_memory():
    h100, h200 = hardware.get("H100-SXM"), hardware.get("H200")
    assert h200.peak_tflops == h100.peak_tflops
    assert h200.memory_bandwidth_gbps > h100.memory_bandwidth_gbps
    assert h200.memory_gb > h100.memory_gb


def test_a100_80gb_is_a100_40gb_compute_with_more_memory():
    a40, a80 = hardware.get("A100-40GB"), hardware.get("A100-80GB")
    assert a80.peak_tflops == a40.peak_tflops
    assert a80.memory_bandwidth_gbps > a40.memory_bandwidth_gbps and a80.memory_gb == 2 * a40.memory_gb


def test_precision_ladder_on_every_gpu():
    for spec in hardware.catalog().values():
        if spec.kind != "gpu":
            continue
        p = spec.peak_tflops
        assert p["fp16"] >= p["fp32"], spec.name
        if "bf16" in p:
            assert p["bf16"] == p["fp16"], spec.name
        if "tf32" in p and "bf16" in p:  # tf32 runs at half the 16-bit tensor rate
            assert p["tf32"] == pytest.approx(p["bf16"] / 2, rel=0.05), spec.name  # B200: vendor rounds 2.25 to 2.2
        if "fp8" in p:  # fp8 at twice the 16-bit rate (a sparse/dense mix-up breaks this)
            assert p["fp8"] == pytest.approx(2 * p["fp16"], rel=0.02), spec.name


def test_newer_generations_are_faster():
    b200, h100, a100 = (hardware.get(n) for n in ("B200", "H100-SXM", "A100-80GB"))
    for dtype in ("fp32", "bf16", "int8"):
        assert b200.peak_tflops[dtype] > h100.peak_tflops[dtype] > a100.peak_tflops[dtype]
    assert hardware.get("H100-SXM").peak_tflops["bf16"] > hardware.get("H100-PCIe").peak_tflops["bf16"]


def test_links_are_ordered():
    for spec in hardware.catalog().values():
        assert spec.intra_node_gbps >= spec.pcie_gbps, spec.name  # NVLink, or PCIe itself
        assert spec.memory_bandwidth_gbps > spec.intra_node_gbps > spec.network_gbps, spec.name


# ---- errors ---------------------------------------------------------------------------------


def test_unsupported_dtype_names_device_dtype_and_allowed():
    with pytest.raises(ConfigError) as e:
        hardware.get("T4").peak_flops_per_s("bf16")
    assert str(e.value) == (
        "DeviceSpec['T4'].dtype must be one of the dtypes this device supports: fp32, fp16, int8; got 'bf16'."
    )
    with pytest.raises(ConfigError, match=r"DeviceSpec\['A100-80GB'\]\.dtype .* int8; got 'fp8'\.$"):
        hardware.get("A100-80GB").peak_flops_per_s("fp8")


def test_unknown_device_lists_allowed_names():
    with pytest.raises(ConfigError) as e:
        hardware.get("H300")
    msg = str(e.value)
    assert msg.startswith("hardware.device must be one of ") and msg.endswith("'host'; got 'H300'.")
    for name in REQUIRED:
        assert name in msg


def test_user_file_adds_and_overrides(tmp_path, isolated_catalog):
    before = len(hardware.names())
    path = tmp_path / "my_devices.toml"
    path.write_text(
        _toml_row(name="TPU-v5e", kind="accelerator", vendor="Google", memory_bandwidth_gbps=819,
                  peak_tflops="{ bf16 = 197, int8 = 394 }", source="my notes", date="2026-11-01")
        + _toml_row(name="h100-sxm", vendor="NVIDIA", memory_gb=80, memory_bandwidth_gbps=3000,
                    peak_tflops="{ fp32 = 60.0, bf16 = 900.0 }", source="derated", date="2026-11-02")
    )
    loaded = hardware.load(path)
    assert [s.name for s in loaded] == ["TPU-v5e", "h100-sxm"]
    assert len(hardware.names()) == before + 1  # one added, one replaced
    assert hardware.get("tpu-v5e").peak_flops_per_s("bf16") == pytest.approx(1.97e14)
    h100 = hardware.get("H100-SXM")
    assert h100.memory_bandwidth_gbps == 3000 and h100.source == "derated"
    assert not h100.supports("fp8")


def test_isolated_catalog_did_not_leak():
    # runs after the override test in file order: the shipped H100 is back
    assert hardware.get("H100-SXM").memory_bandwidth_gbps == 3350
    assert "TPU-v5e" not in hardware.names()


@pytest.mark.parametrize("missing", ["source", "date"])
def test_row_without_source_or_date(tmp_path, isolated_catalog, missing):
    path = tmp_path / "d.toml"
    path.write_text(_toml_row(**{missing: None}))
    with pytest.raises(ConfigError) as e:
        hardware.load(path)
    assert str(e.value) == f"{path}: device[0].{missing} must be present (every row is dated and sourced); got None."


def test_row_with_unknown_field(tmp_path, isolated_catalog):
    path = tmp_path / "d.toml"
    path.write_text(_toml_row(colour="red"))
    with pytest.raises(ConfigError) as e:
        hardware.load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: device[0].<field name> must be one of date, devices_per_node, ")
    assert msg.endswith("; got 'colour'.")


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("memory_bandwidth_gbps", -1, "DeviceSpec['Bad'].memory_bandwidth_gbps must be a finite number > 0; got -1."),
        ("intra_node_gbps", -5.0, "DeviceSpec['Bad'].intra_node_gbps must be a finite number >= 0; got -5.0."),
        ("devices_per_node", 0, "DeviceSpec['Bad'].devices_per_node must be an integer >= 1; got 0."),
        ("kind", "tpu", "DeviceSpec['Bad'].kind must be one of 'gpu', 'cpu', 'accelerator'; got 'tpu'."),
        ("peak_tflops", "{ fp4 = 10.0 }",
         "DeviceSpec['Bad'].peak_tflops must be keyed by fp32, tf32, bf16, fp16, fp8, int8; got 'fp4'."),
        ("peak_tflops", "{ fp32 = -1.0 }",
         "DeviceSpec['Bad'].peak_tflops['fp32'] must be a finite number > 0; got -1.0."),
    ],
)
def test_malformed_values(tmp_path, isolated_catalog, field, value, expected):
    path = tmp_path / "d.toml"
    path.write_text(_toml_row(**{field: value}))
    with pytest.raises(ConfigError) as e:
        hardware.load(path)
    assert str(e.value) == expected


def test_bad_file_registers_nothing(tmp_path, isolated_catalog):
    path = tmp_path / "d.toml"
    path.write_text(_toml_row(name="Good") + _toml_row(name="Bad", memory_gb=-1))
    with pytest.raises(ConfigError, match=r"memory_gb must be a finite number > 0; got -1\.$"):
        hardware.load(path)
    assert "Good" not in hardware.names()


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        hardware.load(tmp_path / "nope.toml")
    assert str(e.value) == f"hardware.load.path must be an existing TOML file; got '{tmp_path / 'nope.toml'}'."


# ---- JSON round trip and hashing ------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED)
def test_json_round_trip(name):
    spec = hardware.get(name)
    text = dumps(spec)
    data = json.loads(text)
    assert data["type"] == "device_spec" and data["version"] == 1
    back = loads(text)
    assert back == spec and isinstance(back, DeviceSpec)
    assert back.peak_flops_per_s("fp32") == spec.peak_flops_per_s("fp32")


def test_json_with_wrong_version_is_rejected():
    data = json.loads(dumps(hardware.get("T4")))
    data["version"] = 99
    with pytest.raises(ConfigError, match=r"^DeviceSpec\.version must be 1 .*; got 99\.$"):
        loads(json.dumps(data))


def test_specs_are_hashable_and_equal_by_value():
    a = hardware.get("A100-80GB")
    b = replace(a)
    assert a == b and hash(a) == hash(b)
    assert len({a, b, hardware.get("H200")}) == 2


# ---- the host ---------------------------------------------------------------------------------


def _cpu(flags, cores=4, ghz=3.0, vendor="Intel", family=6) -> CpuInfo:
    return CpuInfo(model="Test CPU", vendor=vendor, family=family, physical_cores=cores, logical_cores=cores,
                   usable_logical=cores, usable_cores=cores, ghz=ghz, ghz_source="test",
                   flags=tuple(sorted(flags)), memory_bytes=8 * 10**9)


@pytest.mark.parametrize(
    "flags, vendor, family, expected",
    [
        ({"sse2", "avx", "avx2", "fma"}, "Intel", 6, 4 * 3.0e9 * 32),  # 4 x 3.0 GHz x (8 lanes x 2 x 2) = 384 GFLOP/s
        ({"sse2", "avx", "avx2", "fma", "avx512f"}, "Intel", 6, 4 * 3.0e9 * 64),  # 16 lanes x 2 x 2
        ({"sse2", "avx", "avx2", "fma", "avx512f"}, "AMD", 25, 4 * 3.0e9 * 32),  # Zen 4: 256-bit pipes
        ({"sse2", "avx"}, "Intel", 6, 4 * 3.0e9 * 16),  # no FMA: 8 lanes x 2 (add + mul) x 1
        ({"sse2"}, "Intel", 6, 4 * 3.0e9 * 8),  # 4 lanes x 2 x 1
    ],
)
def test_formula_peak(flags, vendor, family, expected):
    flops, text = formula_peak_flops(_cpu(flags, vendor=vendor, family=family))
    assert flops == pytest.approx(expected)
    assert text.startswith(f"fp32 formula peak {expected / 1e9:.1f} GFLOP/s = 4 cores x 3.000 GHz")


def test_formula_bf16_needs_the_flags():
    with pytest.raises(ConfigError, match=r"^host\['Test CPU'\]\.dtype must be 'fp32' \(no avx512_bf16 .*; got 'bf16'\.$"):
        formula_peak_flops(_cpu({"avx2", "fma"}), "bf16")
    amx, _ = formula_peak_flops(_cpu({"avx512f", "fma", "amx_bf16", "amx_tile"}), "bf16")
    assert amx == pytest.approx(4 * 3.0e9 * 2048)  # 1024 bf16 multiply-adds per cycle per core


def test_cpu_info_plausible():
    info = cpu_info()
    assert 1 <= info.usable_cores <= info.physical_cores <= info.logical_cores
    assert info.usable_logical <= info.logical_cores
    assert 0.3 < info.ghz < 7.0
    assert info.memory_bytes <= psutil.virtual_memory().total


def test_host_spec_plausible():
    spec = host_spec()
    info = cpu_info()
    formula, _ = formula_peak_flops(info)
    fp32 = spec.peak_flops_per_s("fp32")
    assert 1e9 < fp32 <= 10 * formula  # measured: more than 1 GFLOP/s, not absurdly above the formula
    assert 0.1 < spec.memory_bandwidth_gbps < 2000
    assert spec.memory_gb == pytest.approx(info.memory_bytes / 1e9)
    assert spec.kind == "cpu" and spec.name == f"host ({info.model})"
    assert spec.source.startswith("measured on this host by profilers.host, torch ")
    assert spec.date == datetime.date.today().isoformat()
    assert "formula peak" in spec.notes and "read+write" in spec.notes
    assert spec.supports("bf16") == (info.has("avx512_bf16") or info.has("amx_bf16"))
    assert host_spec() is spec  # cached per process
    assert hardware.get("host") is spec and hardware.get("HOST") is spec
    assert loads(dumps(spec)) == spec


def test_host_device_name():
    info = cpu_info()
    assert host_device_name() == f"cpu: {info.model} ({info.usable_cores} cores)"


def test_hardware_and_host_import_without_torch():
    code = (
        "import sys\n"
        "from profilers import hardware\n"
        "from profilers.host import host_device_name, cpu_info, formula_peak_flops\n"
        "hardware.get('H100-SXM'); host_device_name(); formula_peak_flops()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
