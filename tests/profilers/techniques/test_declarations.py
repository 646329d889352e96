"""What each technique declares on itself: its cost-model key, composition rules (read generically by
check_sequence), whether it trains, its copy at a lower fidelity, its short label, the ordered
Quantize modes and the serving-dtype -> technique map. No model runs here."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from profilers.config import ConfigError, dumps, serializable
from profilers.techniques import Distill, Layers, MixedPrecision, Prune, Quantize, Technique, from_json
from profilers.techniques.base import check_sequence

TOML = Path(__file__).resolve().parents[3] / "cost_models" / "data" / "techniques.toml"


@pytest.mark.parametrize("mode, key", [
    ("bf16", "mixed_precision"), ("fp16", "mixed_precision"),  # a cast to 16-bit weights: the same work
    ("int8_weight_only", "quantize_int8"), ("int8_dynamic", "quantize_int8"),
    ("fp8", "quantize_fp8"), ("int4_weight_only", "quantize_int4"),
])
def test_quantize_cost_key_of_every_mode(mode, key):
    assert Quantize(mode).cost_key == key
    assert Quantize(mode).spec.cost_key == key  # declared once, with the mode


def test_other_cost_keys_and_every_key_is_in_the_cost_model_data():
    assert (Prune().cost_key, Distill(width=0.5).cost_key, MixedPrecision().cost_key) == (
        "prune", "distill", "mixed_precision")
    names = {t["name"] for t in tomllib.loads(TOML.read_text())["technique"]}
    keys = {Quantize(m).cost_key for m in Quantize.MODES} | {"prune", "distill", "mixed_precision"}
    assert keys <= names, keys - names


def test_modes_are_one_ordered_table_least_to_most_compressed():
    assert Quantize.MODES == ("bf16", "fp16", "int8_weight_only", "int8_dynamic", "fp8", "int4_weight_only")
    assert [s.name for s in Quantize.SPECS] == list(Quantize.MODES)
    assert [Quantize(m).bits for m in Quantize.MODES] == [16, 16, 8, 8, 8, 4]  # never increasing
    assert [Quantize(m).weight_dtype for m in Quantize.MODES] == ["bf16", "fp16", "int8", "int8", "fp8", "int4"]
    assert [s.torchao_config for s in Quantize.SPECS] == [
        None, None, "Int8WeightOnlyConfig", "Int8DynamicActivationInt8WeightConfig",
        "Float8DynamicActivationFloat8WeightConfig", "Int4WeightOnlyConfig"]


def test_for_weight_dtype_maps_a_serving_dtype_to_its_technique():
    assert Quantize.for_weight_dtype("fp32") is None
    assert Quantize.for_weight_dtype("bf16") == Quantize("bf16")
    assert Quantize.for_weight_dtype("fp16") == Quantize("fp16")
    assert Quantize.for_weight_dtype("int8") == Quantize("int8_weight_only")  # the least compressed int8 mode
    assert Quantize.for_weight_dtype("fp8") == Quantize("fp8")
    assert Quantize.for_weight_dtype("int4") == Quantize("int4_weight_only")
    with pytest.raises(ConfigError, match=re.escape("Quantize.for_weight_dtype.dtype must be one of 'fp32', 'bf16', "
                                                    "'fp16', 'int8', 'fp8', 'int4'; got 'int2'.")):
        Quantize.for_weight_dtype("int2")


def test_trains():
    assert not Prune().trains and not Prune("structured", 0.3).trains
    assert Prune(finetune_steps=5).trains
    assert Prune(regularize="l1", reg_steps=3).trains
    assert Distill(width=0.5).trains
    assert not Quantize("bf16").trains and not MixedPrecision().trains


def test_at_fidelity_scales_training_steps():
    p = Prune("structured", 0.5, finetune_steps=100)
    assert p.at_fidelity(0.25) == Prune("structured", 0.5, finetune_steps=25)  # round(100 * 0.25)
    assert p.at_fidelity(0.001).finetune_steps == 1  # max(1, round(0.1))
    assert p.at_fidelity(1.0) is p and p.at_fidelity(2.0) is p
    assert Prune().at_fidelity(0.5) == Prune()  # 0 steps stay 0
    d = Distill(width=0.5, steps=300)
    assert d.at_fidelity(1 / 3).steps == 100 and d.at_fidelity(0.0001).steps == 1
    assert d.at_fidelity(0.5).width == 0.5  # only the training changes
    q = Quantize("int8_dynamic")
    assert q.at_fidelity(0.1) is q and MixedPrecision().at_fidelity(0.1) == MixedPrecision()
    for bad in (0, -1, float("nan"), True, "1"):
        with pytest.raises(ConfigError, match=r"^Prune\.at_fidelity\.fidelity must be a number in \(0, 1\]"):
            p.at_fidelity(bad)


def test_short_labels_are_stable_and_derived():
    assert Quantize("bf16").short_label() == "bf16"
    assert Quantize("int8_weight_only").short_label() == "int8_weight_only"
    assert Quantize("int8_dynamic", compile=True).short_label() == "int8_dynamic_compiled"
    assert Prune("l1_unstructured", amount=0.5).short_label() == "prune_l1_0.5"
    assert Prune("l1_unstructured", amount=0.8).short_label() == "prune_l1_0.8"
    assert Prune("structured", 0.3, finetune_steps=100).short_label() == "prune_structured_0.3_ft100"
    assert Prune("semi_structured_2_4").short_label() == "prune_2:4"
    assert Prune(amount=0.5, scope="global").short_label() == "prune_l1_0.5_global"
    assert Distill(width=0.5).short_label() == "distill_0.5"
    assert Distill(depth=0.5, steps=60).short_label() == "distill_depth0.5_steps60"
    assert MixedPrecision("fp16").short_label() == "amp_fp16"
    assert Quantize("bf16").on("fc1").short_label() == "bf16@fc1"
    # distinct configs, distinct labels (a label is a dict key)
    configs = [Quantize(m) for m in Quantize.MODES] + [Prune(amount=a) for a in (0.5, 0.8, 0.95)] + [
        Prune(amount=0.5, lr=2e-3), Prune(amount=0.5, finetune_steps=10), MixedPrecision("bf16")]
    assert len({c.short_label() for c in configs}) == len(configs)


def test_on_restricts_to_a_layer_and_round_trips():
    q = Quantize("int8_weight_only").on("fc1")
    assert q.layers == Layers(names=("fc1",)) and q.mode == "int8_weight_only"
    assert Prune(amount=0.5).on("a", "b").layers == Layers(names=("a", "b"))
    assert from_json(dumps(q)) == q and from_json(dumps(Prune().on("x"))) == Prune().on("x")
    assert Quantize("bf16").label() == "Quantize(mode='bf16', compile=False)"  # labels as before without a selector
    assert "layers=Layers(names=('fc1',))" in q.label()
    with pytest.raises(ConfigError, match=re.escape("Distill.layers must be not set: it applies to the whole model")):
        Distill(width=0.5).on("fc1")
    with pytest.raises(ConfigError, match=re.escape("Prune.layers must be None for method='structured'")):
        Prune("structured").on("fc1")
    with pytest.raises(ConfigError, match=re.escape("Quantize.layers must be None (the whole model) or a Layers "
                                                    "selector; got 'fc1'.")):
        Quantize("bf16", layers="fc1")


# ---------------------------------------------------------------------------------------------
# check_sequence reads the declarations
# ---------------------------------------------------------------------------------------------


def test_composition_rules_are_declared():
    assert (Distill.stage, Prune.stage, Quantize.stage, MixedPrecision.stage) == (0, 1, 2, 3)
    assert Prune.repeatable and not Quantize.repeatable and not Distill.repeatable
    assert not MixedPrecision.repeatable
    assert Quantize.excludes == ("MixedPrecision",) and MixedPrecision.excludes == ("Quantize",)
    assert Quantize.post_training and not (Prune.post_training or Distill.post_training
                                           or MixedPrecision.post_training)
    check_sequence([Distill(width=0.5), Prune(), Prune("structured"), Quantize()])  # two Prune: repeatable


def test_check_sequence_rejects_from_declarations():
    with pytest.raises(ConfigError, match=re.escape("apply.techniques must be at most one Distill; got "
                                                    "['Distill', 'Distill'].")):
        check_sequence([Distill(width=0.5), Distill(width=0.3)])
    with pytest.raises(ConfigError, match=re.escape("apply.techniques must be at most one Quantize; got "
                                                    "['Quantize', 'Quantize'].")):
        check_sequence([Quantize("int8_dynamic"), Quantize("bf16").on("fc1")])  # one is whole-model
    # each restricted to its own layers: a per-layer assignment, allowed
    check_sequence([Prune(amount=0.5).on("a"), Quantize("bf16").on("b"), Quantize("int8_weight_only").on("c")])
    with pytest.raises(ConfigError, match=re.escape("apply.techniques must be not both Quantize and MixedPrecision "
                                                    "(a quantized model's numerics are fixed by")):
        check_sequence([Quantize("bf16"), MixedPrecision()])


@serializable("test_toy_technique")
@dataclass(frozen=True)
class Toy(Technique):
    """A technique declared only here: check_sequence knows nothing about it but what it declares."""

    stage: ClassVar[int] = 2
    repeatable: ClassVar[bool] = True
    excludes: ClassVar[tuple[str, ...]] = ("Prune",)

    def exclusion_reason(self, other: Technique) -> str:
        return "toys and pruning do not mix"


def test_a_new_technique_declares_its_rules_without_touching_check_sequence():
    check_sequence([Toy(), Toy(), Quantize()])  # repeatable, same stage as Quantize
    with pytest.raises(ConfigError, match=re.escape("apply.techniques must be not both Prune and Toy (toys and "
                                                    "pruning do not mix); got ['Prune', 'Toy'].")):
        check_sequence([Prune(), Toy()])  # declared by Toy, checked both ways
    with pytest.raises(ConfigError, match=re.escape("in the order distill -> prune")):
        check_sequence([Toy(), Prune()])
