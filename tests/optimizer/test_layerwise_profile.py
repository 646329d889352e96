"""profilers.profile_layers (measured per-layer sensitivities and costs) and optimizer.verify_layerwise
(solve -> assemble -> measure -> tighten), on the digits CNN, through the public API."""

from __future__ import annotations

import itertools
import re

import pytest

from optimizer import LayerwiseVerifyResult, solve_layerwise, verify_layerwise
from profilers import LayerProfile, assemble_layers, profile_layers, workloads
from profilers.config import ConfigError, dumps, loads
from profilers.layer_profile import DEFAULT_CHOICES, deployed_bytes
from profilers.techniques import Distill, Prune, Quantize, quality

pytest.importorskip("highspy")
pytest.importorskip("torchao")
CHOICES = (Quantize("bf16"), Quantize("int8_weight_only"), Prune("l1_unstructured", amount=0.5),
           Prune("l1_unstructured", amount=0.8), Prune("l1_unstructured", amount=0.95))
LABELS = ("bf16", "int8_weight_only", "prune_l1_0.5", "prune_l1_0.8", "prune_l1_0.95")


@pytest.fixture(scope="module")
def wl():
    return workloads.get("digits")


@pytest.fixture(scope="module")
def profile(wl, one_thread, tmp_path_factory):
    path = tmp_path_factory.mktemp("layers") / "digits.json"
    return profile_layers(wl, choices=CHOICES, cache_path=path), path


def test_costs_are_measured_and_match_hand_arithmetic(profile):
    p, _ = profile
    assert p.layers == ("features.0", "features.2", "classifier.1", "classifier.3")
    assert p.choices == ("fp32", *LABELS)
    assert p.choice_configs == dict(zip(LABELS, CHOICES))  # the configs, kept: labels are never parsed
    fc1 = p.measurements["classifier.1"]  # Linear(512 -> 64)
    # fp32: weight 64*512*4 = 131,072 B + bias 64*4 = 256 B
    assert fc1["fp32"].bytes == 131_328
    # int8 weight-only (torchao Int8Tensor): int8 data 64*512 = 32,768 B + per-row fp32 scale 64*4 = 256 B
    # + per-row int8 zero point 64 B, + the fp32 bias 256 B = 33,344 B: 131,328 / 33,344 = 3.94x smaller
    assert fc1["int8_weight_only"].bytes == 33_344
    assert 3.9 < fc1["fp32"].bytes / fc1["int8_weight_only"].bytes < 4.0
    assert fc1["bf16"].bytes == 131_328 // 2  # every tensor 2 bytes per element
    # half the weights pruned: 16,384 non-zero values * 4 B + a 1-bit mask 32,768 / 8 = 4,096 B + bias 256 B
    assert fc1["prune_l1_0.5"].bytes == 69_888
    # forward FLOPs at batch 64: 2 * 64 * 512 * 64 = 4,194,304 for every choice (dense kernels)
    assert {m.flops for m in fc1.values()} == {4_194_304}
    # conv 16 -> 32, 3x3, on 8x8 positions: 2 * 64 * 64 * 32 * 16 * 9 = 37,748,736
    assert p.measurements["features.2"]["fp32"].flops == 37_748_736


def test_sensitivities_are_the_measured_quality_change_of_one_layer(wl, profile):
    p, _ = profile
    for by_choice in p.measurements.values():
        assert by_choice["fp32"].sensitivity == 0.0 and by_choice["fp32"].quality == p.base_quality
        for m in by_choice.values():
            assert m.sensitivity == pytest.approx(p.base_quality - m.quality, abs=1e-12)
    # re-measured independently: the same one-layer model gives the same quality
    m = p.measurements["classifier.3"]["prune_l1_0.95"]
    assert quality(assemble_layers(wl.build(), {"classifier.3": Prune(amount=0.95)}), wl) == m.quality
    assert quality(assemble_layers(wl.build(), {"classifier.3": "prune_l1_0.95"}, choices=p), wl) == m.quality
    assert m.sensitivity > 0.1  # 95 % of the output layer's weights zeroed costs real accuracy
    assert "measured on" in p.provenance and "held-out" in p.provenance
    # torchao has no int8 convolution: recorded with the reason, not replaced
    assert set(p.skipped) == {"features.0", "features.2"}
    assert "convolution" in p.skipped["features.2"]["int8_weight_only"]
    assert "int8_weight_only" not in p.measurements["features.2"]


def test_profile_feeds_solve_layerwise_and_bytes_add_up(wl, profile):
    p, _ = profile
    r = solve_layerwise(p.options(), budgets={"bytes": 0.3 * p.fp32_bytes()})
    assert r.ok and r.totals["bytes"] <= 0.3 * p.fp32_bytes()
    model = assemble_layers(wl.build(), r.assignment, choices=p.choice_configs)
    assert deployed_bytes(model) == p.other_bytes + r.totals["bytes"]  # per-layer costs are exact
    assert deployed_bytes(wl.build()) == p.fp32_bytes()
    back = loads(dumps(p))
    assert back == p and all(type(c) is type(p.choice_configs[k]) for k, c in back.choice_configs.items())


def test_cache_file_spares_remeasuring(wl, profile):
    p, path = profile
    assert path.exists() and p.measured == 4 * 6 and p.from_cache == 0
    again = profile_layers(wl, choices=CHOICES, cache_path=path)
    assert again.measured == 0 and again.from_cache == 4 * 6
    assert again.measurements == p.measurements and again.skipped == p.skipped
    assert again.measure_s < p.measure_s


def test_verify_meets_the_target_on_the_first_round(wl, profile):
    p, _ = profile
    r = verify_layerwise(wl, p, target_quality=p.base_quality - 0.015)
    assert isinstance(r, LayerwiseVerifyResult) and r.ok and r.status == "met"
    assert r.measured_quality >= r.target_quality
    assert quality(assemble_layers(wl.build(), r.assignment, choices=p), wl) == r.measured_quality  # really measured
    last = r.rounds[-1]
    assert r.model_bytes == last.measured_bytes == p.other_bytes + last.totals["bytes"] < 0.5 * r.fp32_bytes
    assert last.predicted_quality == pytest.approx(p.base_quality - last.predicted_sensitivity)
    assert r.message.startswith("Met: measured quality")
    assert loads(dumps(r)) == r


@pytest.mark.parametrize("tighten", ["cap", "correct"])
def test_too_optimistic_sensitivities_are_tightened_until_measured_quality_meets_target(wl, profile, tighten):
    p, _ = profile
    # a hundredth of each measured drop (a proxy far too optimistic): the first answer compresses far too much
    optimistic = {l: {c: {**o, "sensitivity": 0.01 * o["sensitivity"]} for c, o in cs.items()}
                  for l, cs in p.options().items()}
    target = p.base_quality - 0.03
    r = verify_layerwise(wl, p, target_quality=target, options=optimistic, tighten=tighten)
    first = r.rounds[0]
    assert first.predicted_quality >= target > first.measured_quality  # the ILP's first answer falls short
    assert r.status == "met" and len(r.rounds) >= 2 and r.measured_quality >= target
    assert len({tuple(x.assignment.values()) for x in r.rounds}) == len(r.rounds)  # never the same twice
    caps = [x.sensitivity_cap for x in r.rounds]
    if tighten == "cap":
        assert all(b < a for a, b in itertools.pairwise(caps))
    else:
        assert len(set(caps)) == 1  # the sensitivities are corrected instead
    assert r.model_bytes > first.measured_bytes  # meeting the target costs bytes


def test_no_tighter_assignment_is_exhausted_with_a_hint(wl, profile):
    p, _ = profile
    blind = {l: {c: {**o, "sensitivity": 0.0} for c, o in cs.items()} for l, cs in p.options().items()}
    r = verify_layerwise(wl, p, target_quality=p.base_quality - 0.01, options=blind)
    assert r.status == "exhausted" and not r.ok and r.assignment == {} and r.model_bytes is None
    assert r.rounds[0].measured_quality < r.target_quality and r.rounds[-1].solve_status == "infeasible"
    assert "To fix: keep every layer 'fp32'" in r.message


def test_max_rounds_is_a_status(wl, profile):
    p, _ = profile
    blind = {l: {c: {**o, "sensitivity": 0.0} for c, o in cs.items()} for l, cs in p.options().items()}
    r = verify_layerwise(wl, p, target_quality=p.base_quality - 0.01, options=blind, tighten="correct", max_rounds=1)
    assert r.status == "max_rounds" and len(r.rounds) == 1 and "To fix: raise max_rounds" in r.message


ALLOWED = "a Prune or Quantize config (a technique that takes a layer selector)"


@pytest.mark.parametrize("choices, field, got", [
    (("bf16",), "choices[0]", "'bf16'"),  # names are gone: choices are technique configs
    ((Quantize("bf16"), Distill(width=0.5)), "choices[1]", "'Distill'"),
])
def test_choices_must_be_selectable_technique_configs(wl, choices, field, got):
    with pytest.raises(ConfigError, match=re.escape(f"profile_layers.{field} must be {ALLOWED}; got {got}.")):
        profile_layers(wl, choices=choices)


def test_a_choice_with_its_own_selector_is_rejected(wl):
    with pytest.raises(ConfigError, match=re.escape("profile_layers.choices[0] must be a config without layers (the "
                                                    "choice is applied to one layer at a time); got ")):
        profile_layers(wl, choices=(Quantize("bf16").on("classifier.1"),))


def test_default_choices_are_configs_and_the_cache_key_holds_their_json(wl, one_thread, tmp_path):
    assert DEFAULT_CHOICES == (Quantize("bf16"), Quantize("int8_weight_only"), Prune("l1_unstructured", amount=0.5),
                               Prune("l1_unstructured", amount=0.8))
    path = tmp_path / "c.json"
    a = profile_layers(wl, choices=(Prune(amount=0.5),), layers=["classifier.1"], cache_path=path)
    assert a.choices == ("fp32", "prune_l1_0.5") and a.measured == 2
    # another config (finetuned) is another key even where the layer and method are the same
    b = profile_layers(wl, choices=(Prune(amount=0.5, lr=2e-3),), layers=["classifier.1"], cache_path=path)
    assert b.choices == ("fp32", "prune_l1_0.5_lr0.002") and (b.measured, b.from_cache) == (1, 1)


def test_bad_profile_inputs(wl, one_thread):
    with pytest.raises(ConfigError, match=re.escape("profile_layers.choices must be a non-empty sequence of Prune or "
                                                    "Quantize configs (e.g. Quantize('bf16'), Prune('l1_unstructured', "
                                                    "amount=0.5)); got ().")):
        profile_layers(wl, choices=())
    names = "['features.0', 'features.2', 'classifier.1', 'classifier.3']"
    with pytest.raises(ConfigError, match=re.escape("profile_layers.layers must be None (every Linear/Conv layer) or "
                                                    f"a non-empty sequence of names among {names}; got [].")):
        profile_layers(wl, layers=[])
    with pytest.raises(ConfigError, match=re.escape("profile_layers.layers must be names of Linear/Conv layers of "
                                                    f"DigitsCNN ({names}); got 'features.1'.")):
        profile_layers(wl, layers=["features.1"])
    with pytest.raises(ConfigError, match=re.escape("assemble_layers.assignment must be layer names among")):
        assemble_layers(wl.build(), {"fc9": Quantize("bf16")})
    with pytest.raises(ConfigError, match=re.escape("assemble_layers.assignment['classifier.1'] must be 'fp32', a "
                                                    "technique config or a label among the choices ('fp32'); got "
                                                    "'prune_l1_0.5'.")):
        assemble_layers(wl.build(), {"classifier.1": "prune_l1_0.5"})  # a label needs the profile's configs


def test_bad_verify_inputs(wl, profile):
    p, _ = profile
    for bad in (1.5, float("nan"), True):
        with pytest.raises(ConfigError, match=r"verify_layerwise\.target_quality must be a finite number <= the "
                                              r"unchanged model's quality 0\.\d+ \(top-1 accuracy .*\); got "
                                              + re.escape(repr(bad)) + r"\.$"):
            verify_layerwise(wl, p, target_quality=bad)
    opts = p.options()
    opts["classifier.1"]["int3"] = opts["classifier.1"]["fp32"]
    labels = ", ".join(repr(c) for c in ("fp32", *LABELS))
    with pytest.raises(ConfigError, match=re.escape("verify_layerwise.options['classifier.1'] must be labels of the "
                                                    f"profile's choices ({labels}); got 'int3'.")):
        verify_layerwise(wl, p, target_quality=0.9, options=opts)
    with pytest.raises(ConfigError, match=re.escape("verify_layerwise.options must be layers of the profile "
                                                    "['features.0', 'features.2', 'classifier.1', 'classifier.3']; "
                                                    "got 'fc9'.")):
        verify_layerwise(wl, p, target_quality=0.9, options={"fc9": {"fp32": {"sensitivity": 0, "bytes": 1}}})
    with pytest.raises(ConfigError, match=re.escape("verify_layerwise.tighten must be one of 'cap', 'correct'; "
                                                    "got 'loose'.")):
        verify_layerwise(wl, p, target_quality=0.9, tighten="loose")
    with pytest.raises(ConfigError, match=re.escape("verify_layerwise.max_rounds must be an integer >= 1; got 0.")):
        verify_layerwise(wl, p, target_quality=0.9, max_rounds=0)
    with pytest.raises(ConfigError, match=re.escape("verify_layerwise.profile must be a LayerProfile from "
                                                    "profilers.profile_layers; got 'dict'.")):
        verify_layerwise(wl, {}, target_quality=0.9)
    assert isinstance(p, LayerProfile)
