"""The ``sigmastar`` command line (optimizer/cli.py): profile, catalog, errors, help, console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from optimizer.cli import DEFAULT_DEVICES, build_parser, main
from profilers import Profile, Projection
from profilers.config import from_json_dict

REQUIRED = ["T4", "L4", "A10G", "A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIe", "H200", "B200", "MI300X"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_profile_digits_writes_json_that_loads_back(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["profile", "--time-cap", "0.2", "--batch-size", "16", "--output", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "measuring digits-cnn on this machine (time cap 0.2 s per loop)" in cap.err
    assert "digits-cnn" in cap.out and "measured on " in cap.out
    assert "note: quality: top-1 accuracy" in cap.out
    assert f"wrote {out / 'profile.json'} and {out / 'projections.json'}" in cap.out

    prof = Profile.from_json((out / "profile.json").read_text())
    assert prof.model == "digits-cnn" and prof.source == "measured" and prof.device == "host"
    assert prof.batch_size == 16 and prof.dtype == "fp32"
    assert prof.latency is not None and prof.train_step is not None  # training is on by default
    assert any(n.startswith("quality: ") and n.endswith("(measured)") for n in prof.notes)
    quality = float(next(n for n in prof.notes if n.startswith("quality: ")).split("= ")[1].split()[0])
    assert quality >= 0.95

    rows = json.loads((out / "projections.json").read_text())
    projections = [from_json_dict(r) for r in rows]
    assert all(isinstance(p, Projection) for p in projections)
    names = [p.device for p in projections]
    assert names == DEFAULT_DEVICES.split(",")  # the host CPU keeps its catalog name, "host"
    for p in projections:
        assert p.model == "digits-cnn" and p.dtype == "fp32" and p.forward_flops == prof.forward_flops
        assert p.latency_s > 0 and p.train_step_s > 0
        assert p.provenance.startswith(f"projected for {p.device}") and " (fp32, eager runtime) from " in p.provenance
        assert p.device in cap.out


def test_profile_config_gpt2_analyzes_without_running(capsys, tmp_path):
    rc = main(["profile", "--config", "gpt2", "--seq-len", "64", "--no-train", "--devices", "H100-SXM",
               "--output", str(tmp_path)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "analyzing gpt2 on the meta device (batch 1, seq 64)" in cap.err
    assert "analyzed on the meta device (no execution)" in cap.out
    assert "124,439,808" in cap.out  # GPT-2 small's exact parameter count
    assert "H100-SXM" in cap.out and "projected for H100-SXM (bf16, eager runtime)" in cap.out
    prof = Profile.from_json((tmp_path / "profile.json").read_text())
    assert prof.source == "analyzed" and prof.parameters == 124_439_808 and prof.dtype == "bf16"
    assert prof.seq_len == 64 and prof.train_flops is None and prof.train_ops == ()
    (pr,) = [from_json_dict(r) for r in json.loads((tmp_path / "projections.json").read_text())]
    assert pr.device == "H100-SXM" and pr.train_step_s is None and pr.fits_memory is True
    assert pr.calibration_rows and "published_measurements.csv" in pr.efficiency_source
    assert pr.latency_band_s[0] < pr.latency_s < pr.latency_band_s[1]


def test_unsupported_projection_dtype_is_skipped_and_reported(capsys):
    rc = main(["profile", "--config", "gpt2", "--seq-len", "8", "--no-train", "--devices", "T4,H100-SXM"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "skipped T4: bf16 unsupported (has fp32, fp16, int8)" in cap.out
    assert "projected for H100-SXM (bf16, eager runtime)" in cap.out


def test_catalog_lists_every_device(capsys):
    assert main(["catalog"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    for col in ("device", "mem GB", "mem GB/s", "dense peak TFLOP/s", "TDP W", "date", "source"):
        assert col in header
    lines = out.splitlines()[2:]
    for name in REQUIRED:
        assert any(line.split()[0] == name for line in lines), name
    assert "bf16=989.4" in out  # H100-SXM's dense bf16 peak


def test_unknown_device_exits_2_with_the_message_on_stderr(capsys):
    rc = main(["profile", "--devices", "host,Z100"])
    cap = capsys.readouterr()
    assert rc == 2
    assert cap.err.startswith("sigmastar profile: error: hardware.device must be one of T4, ")
    assert cap.err.rstrip().endswith("; got 'Z100'.")
    assert "measuring" not in cap.err and cap.out == ""  # failed before any work


@pytest.mark.parametrize("argv, message", [
    (["profile", "--config", "gpt2"], "profile.--seq-len must be an integer >= 1 with --config; got None."),
    (["profile", "--workload", "mnist", "--devices", "T4"], "workloads.name must be one of {workloads}; got 'mnist'."),
    (["profile", "--device-file", "/no/such/devices.toml"],
     "hardware.load.path must be an existing TOML file; got '/no/such/devices.toml'."),
    (["catalog", "--device-file", "/no/such/devices.toml"],
     "hardware.load.path must be an existing TOML file; got '/no/such/devices.toml'."),
])
def test_bad_input_exits_2(argv, message, capsys):
    from profilers import workloads

    message = message.format(workloads=", ".join(repr(n) for n in workloads.names()))  # 'digits', ...
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"sigmastar {argv[0]}: error: {message}\n"


def test_zero_batch_size_is_rejected(capsys):
    rc = main(["profile", "--config", "gpt2", "--seq-len", "8", "--batch-size", "0", "--no-train",
               "--devices", "H100-SXM"])
    assert rc == 2
    assert "batch_size" in capsys.readouterr().err


def test_profile_bf16_projects_onto_a_gpu(capsys):
    from profilers import hardware

    if hardware.get("host").supports("bf16"):
        pytest.skip("this host lists a bf16 peak; the case under test is a host without one")
    rc = main(["profile", "--dtype", "bf16", "--no-train", "--time-cap", "0.1", "--devices", "H100-SXM"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "projected for H100-SXM (bf16, eager runtime)" in cap.out


@pytest.mark.parametrize("argv", [["--dtype", "fp64"], ["--time-cap", "fast"], ["--bogus"]])
def test_argparse_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["profile", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: sigmastar") and "error: " in err


def test_no_subcommand_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


@pytest.mark.parametrize("argv", [["--help"], ["profile", "--help"], ["catalog", "--help"], ["profile", "-h"]])
def test_help_exits_0(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sigmastar")
    if argv[0] == "profile":
        for opt in ("--workload", "--config", "--seq-len", "--devices", "--time-cap", "--no-train", "--output"):
            assert opt in out


def test_parser_defaults():
    args = build_parser().parse_args(["profile"])
    assert args.workload == "digits" and args.devices == DEFAULT_DEVICES and args.time_cap == 5.0
    assert args.no_train is False and args.config is None and args.output is None


# ---- the installed console script ----------------------------------------------------------------


def _script() -> Path:
    path = Path(sys.executable).parent / ("sigmastar.exe" if os.name == "nt" else "sigmastar")
    if not path.exists():
        pytest.fail(f"console script not installed next to {sys.executable}: pip install -e .")
    return path


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([str(_script()), *argv], capture_output=True, text=True, timeout=120, env=env)


def test_console_script_help():
    r = _run("--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: sigmastar")
    assert "profile" in r.stdout and "catalog" in r.stdout


def test_console_script_exit_code_on_bad_input():
    r = _run("profile", "--devices", "Z100")
    assert r.returncode == 2
    assert "sigmastar profile: error: hardware.device must be one of " in r.stderr
