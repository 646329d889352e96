"""The Layers selector, the one rule of which layers are never touched, and techniques restricted to
selected layers (bf16 cast, torchao int8, L1 pruning) changing only those layers.

The digits CNN: features = conv3x3(1->16) ReLU conv3x3(16->32) ReLU maxpool2;
classifier = flatten fc(512->64) ReLU fc(64->10) (Linear/Conv layers: features.0, features.2,
classifier.1, classifier.3).
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from profilers.config import ConfigError, dumps, loads
from profilers.layer_profile import eligible_layers
from profilers.techniques import Layers, Prune, Quantize, UnsupportedTechnique, apply, records
from profilers.techniques.pruning import prunable_layers
from profilers.techniques.quantization import CastLayer
from profilers.techniques.selector import untouchable

LAYERS = ["features.0", "features.2", "classifier.1", "classifier.3"]


class WithAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        h = self.inp(x)
        return self.out(self.attn(h, h, h, need_weights=False)[0])


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def test_select_by_type_pattern_and_name(base):
    assert Layers(types=("Linear",)).select(base) == ["classifier.1", "classifier.3"]
    assert Layers(types=("Conv2d",)).select(base) == ["features.0", "features.2"]
    assert Layers(patterns=("classifier.[13]",)).select(base) == ["classifier.1", "classifier.3"]
    assert Layers(names=("classifier.1",)).select(base) == ["classifier.1"]
    # any criterion matching selects; definition order, no duplicates
    assert Layers(types=("Conv2d",), names=("classifier.3", "features.0")).select(base) == [
        "features.0", "features.2", "classifier.3"]
    assert Layers(types=("Module",)).select(base)[:1] == ["features"]  # base classes match too (isinstance)


def test_filter_fn_is_torchao_shaped(base):
    f = Layers(types=("Linear",), patterns=("features.0",)).filter_fn
    mods = dict(base.named_modules())
    assert [n for n, m in mods.items() if n and f(m, n)] == ["features.0", "classifier.1", "classifier.3"]


def test_multihead_attention_projections_are_never_touched():
    m = WithAttention()
    assert untouchable(m) == {"attn.out_proj"}
    assert eligible_layers(m) == ["inp", "out"]  # the layer-wise profile
    assert [n for n, _ in prunable_layers(m, Prune())] == ["inp"]  # pruning (the output layer kept by default)
    assert Layers(types=("Linear",)).select(m) == ["inp", "out"]  # a selector
    assert Layers(patterns=("attn*",)).select(m) == ["attn"]  # the attention module itself, not inside it
    with pytest.raises(ConfigError, match=re.escape("Layers.names must be layers outside nn.MultiheadAttention (its "
                                                    "fused kernel reads the raw projection weights); got "
                                                    "'attn.out_proj'.")):
        Layers(names=("attn.out_proj",)).select(m)


def test_layers_validation_and_json():
    with pytest.raises(ConfigError, match=re.escape("Layers.names must be non-empty, or types or patterns given")):
        Layers()
    with pytest.raises(ConfigError, match=re.escape("Layers.types must be a tuple of module class names such as "
                                                    "('Linear', 'Conv2d'); got 'Linear'.")):
        Layers(types="Linear")
    with pytest.raises(ConfigError, match=re.escape("Layers.patterns must be a tuple of fnmatch patterns")):
        Layers(patterns=("",))
    with pytest.raises(ConfigError, match=re.escape("Layers.types must be a tuple of module class names such as "
                                                    "('Linear', 'Conv2d'); got 'nn.Linear'.")):
        Layers(types=("nn.Linear",))
    sel = Layers(types=["Linear"], patterns=("features.*",))
    assert sel.types == ("Linear",) and hash(sel) == hash(Layers(types=("Linear",), patterns=("features.*",)))
    assert loads(dumps(sel)) == sel
    assert repr(Layers(names=("fc1",))) == "Layers(names=('fc1',))"


def test_unknown_names_are_an_error_not_ignored(base):
    with pytest.raises(ConfigError, match=r"^Layers\.names must be names of modules of DigitsCNN .*; got 'fc9'\.$"):
        Layers(names=("fc9",)).select(base)


# ---------------------------------------------------------------------------------------------
# techniques restricted to selected layers
# ---------------------------------------------------------------------------------------------


def changed_layers(before: dict, after: nn.Module) -> set[str]:
    now = after.state_dict()
    out = set()
    for name in LAYERS:
        w = now.get(f"{name}.weight", now.get(f"{name}.layer.weight"))
        if w is None or type(w) is not torch.Tensor or w.dtype != torch.float32 \
                or not torch.equal(w, before[f"{name}.weight"]):
            out.add(name)
    return out


def test_bf16_on_one_layer_casts_only_that_layer(base, wl):
    before = state(base)
    out = apply(base, Quantize("bf16").on("classifier.1"), wl, device="cpu", cache=False)
    assert isinstance(out.classifier[1], CastLayer)
    assert out.classifier[1].layer.weight.dtype == torch.bfloat16 and out.classifier[1].layer.bias.dtype == torch.bfloat16
    assert changed_layers(before, out) == {"classifier.1"}
    x = wl.inputs(8)
    with torch.no_grad():
        y, ref = out(x), base(x)
    assert y.dtype == torch.float32  # cast back: the model around it is unchanged
    assert torch.allclose(y, ref, atol=0.05) and not torch.equal(y, ref)
    assert any("cast to bf16: classifier.1" in n for n in records(out)[0].notes)
    # no selector: the whole model, as before
    whole = apply(base, Quantize("bf16"), wl, device="cpu", cache=False)
    assert all(p.dtype == torch.bfloat16 for p in whole.parameters())


def test_int8_on_one_linear_quantizes_only_that_layer(base, wl):
    pytest.importorskip("torchao")
    before = state(base)
    out = apply(base, Quantize("int8_weight_only").on("classifier.1"), wl, device="cpu", cache=False)
    assert is_traceable_wrapper_subclass(out.classifier[1].weight)
    assert changed_layers(before, out) == {"classifier.1"}
    assert type(out.classifier[3].weight.data) is torch.Tensor
    assert out(wl.inputs(4)).shape == (4, 10)


def test_int8_on_a_convolution_is_unsupported_with_the_reason(base, wl):
    pytest.importorskip("torchao")
    with pytest.raises(UnsupportedTechnique, match="no int8_weight_only kernel for a convolution: features.2 is a "
                                                   "Conv2d"):
        apply(base, Quantize("int8_weight_only").on("features.2"), wl, device="cpu", cache=False)


def test_l1_prune_on_one_layer_prunes_only_that_layer(base, wl):
    before = state(base)
    # the output layer may be chosen explicitly (the default keeps it)
    out = apply(base, Prune("l1_unstructured", amount=0.5).on("classifier.3"), wl, device="cpu", cache=False)
    assert changed_layers(before, out) == {"classifier.3"}
    w = out.classifier[3].weight
    assert int((w == 0).sum()) == 64 * 10 // 2  # half of the 640 weights
    assert all(not hasattr(x, "weight_orig") and not x._forward_pre_hooks for x in out.modules())  # permanent
    by_type = apply(base, Prune(amount=0.5, layers=Layers(types=("Conv2d",))), wl, device="cpu", cache=False)
    assert changed_layers(before, by_type) == {"features.0", "features.2"}


def test_prune_selector_matching_no_layer_is_an_error(base, wl):
    with pytest.raises(ConfigError, match=re.escape("Prune.layers must be a selector matching at least one Linear/Conv "
                                                    "layer of DigitsCNN outside ignore; got Layers(patterns=('x*',)).")):
        apply(base, Prune(layers=Layers(patterns=("x*",))), wl, device="cpu", cache=False)


def test_a_per_layer_assignment_is_one_apply(base, wl):
    pytest.importorskip("torchao")
    before = state(base)
    seq = [Prune(amount=0.5).on("features.0"), Quantize("bf16").on("classifier.1"),
           Quantize("int8_weight_only").on("classifier.3")]
    out = apply(base, seq, wl, device="cpu", cache=False)
    assert changed_layers(before, out) == {"features.0", "classifier.1", "classifier.3"}
    assert isinstance(out.classifier[1], CastLayer) and is_traceable_wrapper_subclass(out.classifier[3].weight)
    assert out(wl.inputs(4)).shape == (4, 10)
    assert len(records(out)) == 3
