"""optimizer.training_price: plan() priced by the cost model; `sigmastar plan`."""

from __future__ import annotations

import json

import pytest

from cost_models import PriceBook, Scenario
from cost_models.scenario import Ownership, TrainingPlan
from optimizer.cli import main
from optimizer.training_price import price_training
from profilers import hardware
from profilers.parallel import TransformerShape

SHAPE = TransformerShape(layers=8, hidden=1024, heads=16, vocab=32000, seq_len=2048, layout="llama",
                         tied_embeddings=False, dropout=False, name="toy-llama")


def _scenario(tokens: float = 1e10, mode: str = "rent") -> Scenario:
    return Scenario(training=TrainingPlan(samples_per_epoch=tokens, unit="tokens", tokens_per_sample=2048),
                    ownership=Ownership(mode=mode))


def test_price_training_hours_follow_the_step_time_and_goodput():
    book = PriceBook.default()
    r = price_training(SHAPE, hardware.get("H100-SXM"), [8, 16], 256, _scenario(), book)
    assert r["status"] == "ok" and r["devices"] in (8, 16)
    # ideal GPU-hours = tokens / (global batch x seq) steps x step_s x devices / 3600
    steps = 1e10 / (256 * 2048)
    assert r["gpu_hours_ideal"] == pytest.approx(steps * r["step_s"] * r["devices"] / 3600)
    assert 0 < r["goodput"] < 1
    assert r["gpu_hours_paid"] == pytest.approx(r["gpu_hours_ideal"] / r["goodput"])
    assert r["wall_days_per_run"] == pytest.approx(r["gpu_hours_paid"] / r["devices"] / 24)
    # rented: the device-hour items are the paid hours at the book's rate
    rate = book.gpu_hour("H100-SXM").usd_per_unit
    br = r["breakdown"]
    compute = sum(it.cost_usd for it in br.items if it.unit == "device-hour")
    assert compute == pytest.approx(r["gpu_hours_paid"] * rate)
    assert r["usd_rented"] == r["total_usd"] == br.total_usd
    # owned: energy = paid hours x TDP x PUE / 1000 is priced, and the total differs from renting
    assert r["energy_kwh"] > 0 and r["usd_owned"] > 0 and r["usd_owned"] != r["usd_rented"]
    owned = price_training(SHAPE, hardware.get("H100-SXM"), [8, 16], 256, _scenario(mode="own"), book)
    assert owned["total_usd"] == pytest.approx(r["usd_owned"])


def test_price_training_fp8_and_infeasible_and_unsupported():
    book = PriceBook.default()
    bf = price_training(SHAPE, hardware.get("H100-SXM"), [8], 256, _scenario(), book)
    f8 = price_training(SHAPE, hardware.get("H100-SXM"), [8], 256, _scenario(), book, precision="fp8")
    assert f8["status"] == "ok" and "fp8" in f8["layout"] and f8["step_s"] < bf["step_s"]
    no = price_training(SHAPE, hardware.get("A100-80GB"), [8], 256, _scenario(), book, precision="fp8")
    assert no["status"] == "unsupported" and "fp8" in no["message"]
    big = TransformerShape(layers=80, hidden=8192, heads=64, kv_heads=8, ffn_hidden=28672, vocab=32000, seq_len=4096,
                           layout="llama", tied_embeddings=False, dropout=False, name="70b")
    inf = price_training(big, hardware.get("L4"), [1], 8, _scenario(), book)
    assert inf["status"] == "infeasible" and inf["total_usd"] == float("inf")


def test_cli_plan_prints_the_priced_layouts(tmp_path, capsys):
    out = tmp_path / "plan.json"
    rc = main(["plan", "llama-2-7b", "--devices", "H100-SXM", "--counts", "64", "--global-batch", "256",
               "--tokens", "1e10", "--json", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "cheapest: 64 x H100-SXM" in text and "GPU-h paid" in text
    rows = json.loads(out.read_text())
    assert rows[0]["status"] == "ok" and rows[0]["config"]["dp"] * rows[0]["config"]["tp"] * rows[0]["config"]["pp"] == 64


def test_cli_plan_bad_input_names_the_field(capsys):
    assert main(["plan", "llama-2-7b", "--devices", "H100-SXMX", "--quiet"]) == 2
    assert "WhatIf.devices" in capsys.readouterr().err
    assert main(["plan", "llama-2-7b", "--counts", "3", "--global-batch", "256", "--quiet"]) == 2
    assert "a divisor of global_batch" in capsys.readouterr().err
    assert main(["plan", "llama-2-7b", "--tokens", "0", "--quiet"]) == 2
    assert "plan.tokens" in capsys.readouterr().err


def test_planned_figures_carry_their_device_count_and_no_flat_efficiency():
    import dataclasses

    from cost_models.usage import compute_usage
    from optimizer.training_price import planned_figures
    from profilers.config import ConfigError

    fig, res = planned_figures(SHAPE, hardware.get("H100-SXM"), [8], 256, precision="bf16")
    assert res.status == "ok" and fig.train_devices == 8 and fig.batch_size == 256 // 8
    sc = _scenario(tokens=1e10)
    sc8 = sc.replace(training=dataclasses.replace(sc.training, devices=8, scaling_efficiency=0.5))
    u = compute_usage(fig, sc8, fig)
    # device-hours = samples / per-device batch x the layout's step / 3600, the flat 0.5 not applied:
    # 1e10 tokens / 2048 = 4,882,812.5 samples; / 32 per device x step_s / 3600
    assert u.efficiency == 1.0
    assert u.blocks[0].device_hours_per_run == pytest.approx(1e10 / 2048 / 32 * fig.train_step_s / 3600)
    with pytest.raises(ConfigError, match=r"TrainingPlan\.devices.*planned for"):
        compute_usage(fig, sc, fig)  # planned for 8, the scenario trains on 1


def test_the_search_prices_multi_gpu_training_of_a_decoder_with_plan(tmp_path):
    """A search whose scenario trains on 8 GPUs prices a transformers decoder's training with the
    parallel model's cheapest layout (plan), a CNN with one device's step and the flat efficiency."""
    import dataclasses

    from cost_models import CostModel
    from optimizer import SearchSpace
    from optimizer.evaluate import Evaluator
    from profilers import workloads

    space = SearchSpace(quantize=("none", "int8_dynamic"), devices=("H100-SXM",), batch_sizes=(8,))
    wl = workloads.get("tinylm")
    seq = wl.inputs(1).shape[-1]
    sc = Scenario(training=TrainingPlan(samples_per_epoch=1e9, unit="tokens", tokens_per_sample=seq, devices=8))
    ev = Evaluator(wl, space, CostModel(sc, PriceBook.default()), profile_time_cap_s=0.1)
    base, quant = space.variants()
    for v in (base, quant):
        dep = ev.price(v)
        tf = ev.training_projection(v, dep)
        assert dep.feasible and tf.train_devices == 8 and "layout dp" in tf.provenance
        assert any("profilers.parallel.plan" in p for p in dep.breakdown.provenance)
    # the quantized variant trains the base model (post-training quantization): the same planned step
    assert ev.training_projection(quant, ev.price(quant)) is ev.training_projection(base, ev.price(base))
    # one device: the per-device projection, as before
    one = Evaluator(wl, space, CostModel(sc.replace(training=dataclasses.replace(sc.training, devices=1)),
                                         PriceBook.default()), profile_time_cap_s=0.1)
    assert getattr(one.training_projection(base, one.price(base)), "train_devices", None) is None
