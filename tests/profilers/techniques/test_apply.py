"""The one verb ``apply``: composition and its order, caching (memory and disk), records,
structure_only, the JSON round trip of every technique config, and that the input is never mutated.

The digits CNN: conv3x3(1->16), conv3x3(16->32), maxpool2, fc(512->64), fc(64->10) on 8x8 images.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from profilers import measure
from profilers.config import ConfigError, dumps, loads, to_json_dict
from profilers.techniques import (ApplyRecord, Distill, MixedPrecision, Prune, Quantize, TechniqueCache, apply,
                                  from_json, records)
from profilers.techniques import pruning as pruning_module

ORDER = "in the order distill -> prune -> quantize -> mixed precision"


@pytest.fixture
def train_calls(monkeypatch):
    """Counts the training loops that Prune runs (recovery fine-tuning)."""
    calls: list[int] = []
    real = pruning_module.train_steps

    def counting(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out[0])
        return out

    monkeypatch.setattr(pruning_module, "train_steps", counting)
    return calls


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    now = model.state_dict()
    assert now.keys() == before.keys()
    for k, v in before.items():
        assert type(now[k]) is torch.Tensor and now[k].dtype == v.dtype and torch.equal(now[k], v), k


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def size_profile(model, wl):
    return measure(model, wl, train=False, device="cpu", min_runs=3, warmup=1, time_cap_s=0.2)


PRUNE = Prune("structured", 0.5, finetune_steps=20)


# ---------------------------------------------------------------------------------------------
# composition: order enforcement
# ---------------------------------------------------------------------------------------------


def test_quantize_then_prune_is_rejected_naming_the_order(base):
    with pytest.raises(ConfigError, match=re.escape(f"apply.techniques must be {ORDER}")) as info:
        apply(base, [Quantize("int8_dynamic"), Prune()], cache=False)
    assert str(info.value).endswith("got ['Quantize', 'Prune'].")


def test_mixed_precision_before_prune_is_rejected(base):
    with pytest.raises(ConfigError, match=re.escape(ORDER)):
        apply(base, [MixedPrecision("bf16"), Prune()], cache=False)


def test_two_quantize_are_rejected(base):
    msg = "apply.techniques must be at most one Quantize; got ['Quantize', 'Quantize']."
    with pytest.raises(ConfigError, match=re.escape(msg)):
        apply(base, [Quantize("bf16"), Quantize("int8_dynamic")], cache=False)


def test_quantize_with_mixed_precision_is_rejected_with_the_reason(base):
    with pytest.raises(ConfigError, match=re.escape("apply.techniques must be not both Quantize and MixedPrecision")) as e:
        apply(base, [Quantize("int8_dynamic"), MixedPrecision("bf16")], cache=False)
    assert "autocast would override" in str(e.value)


def test_a_non_technique_in_the_list_is_rejected(base):
    # the registered technique types, in registration order (a test may have registered a toy one after them)
    with pytest.raises(ConfigError, match=r"^apply\.techniques\[1\] must be a Prune, Quantize, Distill, MixedPrecision"
                                          r"(, Transform or \w+| or Transform) config; got 'str'\.$"):
        apply(base, [Prune(), "int8"], cache=False)


def test_rejection_happens_before_any_work(base, train_calls):
    cache = TechniqueCache()
    with pytest.raises(ConfigError):
        apply(base, [Prune("structured", 0.5, finetune_steps=5), Quantize(), Prune()], cache=cache)
    assert train_calls == [] and cache.hits == cache.misses == 0


def test_bad_model_and_cache_arguments(base, wl):
    with pytest.raises(ConfigError, match=re.escape("apply.model must be a torch.nn.Module; got 'str'.")):
        apply("model", Quantize())
    with pytest.raises(ConfigError, match=re.escape("apply.cache must be True, False or a TechniqueCache; got 'yes'.")):
        apply(base, Quantize("bf16"), cache="yes")
    with pytest.raises(ConfigError, match=re.escape("apply.workload must be a Workload or None")):
        apply(base, Quantize("bf16"), "digits", cache=False)


def test_prune_then_quantize_on_digits_is_a_smaller_quantized_model_with_both_records(base, wl):
    before = snapshot(base)
    out = apply(base, [Prune("structured", 0.5, finetune_steps=20), Quantize("int8_dynamic")], wl,
                device="cpu", cache=False)
    p0, p1 = size_profile(base, wl), size_profile(out, wl)
    assert p1.dtype == "int8"
    assert p1.parameters < p0.parameters / 2  # half the channels of both convs and the fc: ~4x fewer
    assert p1.serialized_bytes < p0.serialized_bytes / 3
    assert is_traceable_wrapper_subclass(out.classifier[1].weight)
    assert out.classifier[1].weight.shape == (32, 256)  # fc(512->64) became fc(256->32)
    recs = records(out)
    assert [r.technique for r in recs] == [PRUNE.label(), Quantize("int8_dynamic").label()]
    assert recs[0].optimizer_steps == 20 and recs[0].samples == 20 * 64
    assert recs[1].optimizer_steps == 0 and recs[1].accelerated is False
    assert all(isinstance(r, ApplyRecord) and r.seconds > 0 for r in recs)
    assert_same_state(base, before)  # the input model is not mutated
    assert records(base) == ()


@pytest.mark.parametrize("techniques", [
    [Prune("l1_unstructured", 0.5)],
    [Prune("structured", 0.5, finetune_steps=3)],
    [Quantize("bf16")],
    [MixedPrecision("fp16")],
    [Distill(width=0.5, steps=3)],
], ids=["l1", "structured", "bf16", "amp", "distill"])
def test_input_model_is_never_mutated(base, wl, techniques):
    before = snapshot(base)
    training = base.training
    out = apply(base, techniques, wl, device="cpu", cache=False)
    assert out is not base
    assert_same_state(base, before)
    assert base.training == training and records(base) == ()


def test_empty_sequence_returns_a_copy(base):
    out = apply(base, [], cache=False)
    assert out is not base and records(out) == ()
    assert_same_state(out, snapshot(base))


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------


def test_records_accumulate_across_separate_apply_calls(base, wl):
    pruned = apply(base, PRUNE, wl, device="cpu", cache=False)
    q = apply(pruned, Quantize("int8_weight_only"), wl, device="cpu", cache=False)
    assert [r.technique for r in records(q)] == [PRUNE.label(), Quantize("int8_weight_only").label()]
    assert len(records(pruned)) == 1  # the earlier result is not touched by the later call


def test_apply_record_round_trips_through_json(base, wl):
    (rec,) = records(apply(base, Quantize("int8_dynamic"), wl, device="cpu", cache=False))
    again = loads(dumps(rec))
    assert again == rec and isinstance(again.notes, tuple) and again.accelerated is False


# ---------------------------------------------------------------------------------------------
# structure_only
# ---------------------------------------------------------------------------------------------


def test_structure_only_skips_training_but_builds_the_same_architecture(base, wl, train_calls):
    seq = [Prune("structured", 0.5, finetune_steps=20), Quantize("int8_weight_only")]
    cache = TechniqueCache()
    fast = apply(base, seq, wl, device="cpu", cache=cache, structure_only=True)
    trained = apply(base, seq, wl, device="cpu", cache=cache)  # structure_only is in the key: no false hit
    assert [r.optimizer_steps for r in records(fast)] == [0, 0]
    assert [r.samples for r in records(fast)] == [0, 0]
    assert [r.optimizer_steps for r in records(trained)] == [20, 0]
    assert train_calls == [0, 20]
    assert shapes(fast) == shapes(trained)
    assert [type(m) for m in fast.modules()] == [type(m) for m in trained.modules()]
    assert type(fast.classifier[1].weight) is type(trained.classifier[1].weight)
    assert size_profile(fast, wl).forward_flops == size_profile(trained, wl).forward_flops


# ---------------------------------------------------------------------------------------------
# caching
# ---------------------------------------------------------------------------------------------


def test_same_prefix_is_computed_once_per_cache(base, wl, train_calls):
    cache = TechniqueCache()
    first = apply(base, PRUNE, wl, device="cpu", cache=cache)
    assert (cache.hits, cache.misses) == (0, 1) and train_calls == [20]
    both = apply(base, [PRUNE, Quantize("int8_dynamic")], wl, device="cpu", cache=cache)
    # lookup from the longest prefix down: [Prune, Quantize] misses, [Prune] hits
    assert (cache.hits, cache.misses) == (1, 2)
    assert train_calls == [20]  # not re-trained
    assert records(both)[0] == records(first)[0]  # the very same record, seconds included
    again = apply(base, [PRUNE, Quantize("int8_dynamic")], wl, device="cpu", cache=cache)
    assert (cache.hits, cache.misses) == (2, 2) and train_calls == [20]
    assert records(again) == records(both)
    for k, v in first.state_dict().items():
        assert torch.equal(v, apply(base, PRUNE, wl, device="cpu", cache=cache).state_dict()[k])


def test_cached_results_are_independent_copies(base, wl):
    cache = TechniqueCache()
    a = apply(base, PRUNE, wl, device="cpu", cache=cache)
    expected = snapshot(a)
    with torch.no_grad():
        for p in a.parameters():
            p.zero_()
    b = apply(base, PRUNE, wl, device="cpu", cache=cache)
    assert cache.hits == 1
    assert_same_state(b, expected)


def test_seed_and_base_weights_change_the_key(base, wl, train_calls):
    cache = TechniqueCache()
    fp = cache.fingerprint(base)
    assert cache.key(fp, [PRUNE], wl, 0) != cache.key(fp, [PRUNE], wl, 1)
    assert cache.key(fp, [PRUNE], wl, 0) != cache.key(fp, [PRUNE], wl, 0, structure_only=True)
    assert cache.key(fp, [PRUNE], wl, 0) != cache.key(fp, [Prune("structured", 0.5, finetune_steps=21)], wl, 0)
    assert cache.key(fp, [PRUNE], wl, 0) == cache.key(cache.fingerprint(copy.deepcopy(base)), [PRUNE], wl, 0)
    changed = copy.deepcopy(base)
    with torch.no_grad():
        changed.classifier[3].bias[0] += 1e-3
    assert cache.fingerprint(changed) != fp

    apply(base, PRUNE, wl, device="cpu", cache=cache, seed=0)
    apply(base, PRUNE, wl, device="cpu", cache=cache, seed=1)
    apply(changed, PRUNE, wl, device="cpu", cache=cache, seed=0)
    assert cache.hits == 0 and cache.misses == 3 and train_calls == [20, 20, 20]
    apply(base, PRUNE, wl, device="cpu", cache=cache, seed=1)
    assert cache.hits == 1 and train_calls == [20, 20, 20]


def test_disk_cache_serves_a_fresh_process_cache_without_recomputing(base, wl, tmp_path, train_calls):
    seq = [PRUNE, Prune("l1_unstructured", 0.3)]
    first = apply(base, seq, wl, device="cpu", cache=TechniqueCache(tmp_path))
    files = sorted(p.name for p in tmp_path.iterdir())
    # one model per prefix, each beside its checksum
    assert len(files) == 4 and all(re.fullmatch(r"[0-9a-f]{64}\.(pt|sha256)", f) for f in files), files
    assert train_calls == [20]

    fresh = TechniqueCache(tmp_path)  # as a new process would see it: nothing in memory
    again = apply(base, seq, wl, device="cpu", cache=fresh)
    assert (fresh.hits, fresh.misses) == (1, 0) and train_calls == [20]
    assert records(again) == records(first)
    assert_same_state(again, snapshot(first))
    key = fresh.key(fresh.fingerprint(base), seq, wl, 0)
    assert f"{key}.pt" in files

    # the cache_dir argument is the same disk cache
    via_arg = apply(base, seq[:1], wl, device="cpu", cache=False, cache_dir=tmp_path)
    assert train_calls == [20] and records(via_arg) == records(first)[:1]


@pytest.mark.parametrize("mode", ["int8_weight_only", "int8_dynamic"])
def test_disk_cache_keeps_int8_quantized_models(base, wl, tmp_path, mode):
    seq = [Quantize(mode)]
    first = apply(base, seq, wl, device="cpu", cache=TechniqueCache(tmp_path))
    fresh = TechniqueCache(tmp_path)
    again = apply(base, seq, wl, device="cpu", cache=fresh)
    assert fresh.hits == 1
    assert is_traceable_wrapper_subclass(again.classifier[1].weight)  # comes back quantized
    x = wl.inputs(16)
    with torch.no_grad():
        assert torch.equal(again(x), first(x))


class Unpicklable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.out = nn.Linear(8, 2)
        self.hook = lambda t: t  # a lambda attribute: torch.save(module) cannot pickle it

    def forward(self, x):
        return self.out(self.hook(self.fc(x)))


def test_failed_disk_write_leaves_no_temp_file(tmp_path):
    try:
        apply(Unpicklable(), Prune("l1_unstructured", 0.5), cache=False, cache_dir=tmp_path)
    except Exception:  # noqa: BLE001 - whether it raises is not what this test checks
        pass
    assert [p.name for p in tmp_path.iterdir() if p.suffix in (".tmp", ".sha256")] == []


def test_no_cache_recomputes(base, wl, train_calls):
    apply(base, PRUNE, wl, device="cpu", cache=False)
    apply(base, PRUNE, wl, device="cpu", cache=False)
    assert train_calls == [20, 20]


def test_fingerprint_of_quantized_models_is_content_addressed():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(64, 64)).eval()
    b = copy.deepcopy(a)
    with torch.no_grad():
        b[0].weight[32, 32] = 0.0  # changes one int8 value in the middle, not the row's scale
    qa = apply(a, Quantize("int8_weight_only"), device="cpu", cache=False)
    qb = apply(b, Quantize("int8_weight_only"), device="cpu", cache=False)
    assert not torch.equal(qa[0].weight.qdata, qb[0].weight.qdata)
    cache = TechniqueCache()
    apply(qa, MixedPrecision("bf16"), cache=cache)
    out = apply(qb, MixedPrecision("bf16"), cache=cache)
    assert cache.hits == 0
    assert torch.equal(out.module[0].weight.qdata, qb[0].weight.qdata)


# ---------------------------------------------------------------------------------------------
# JSON round trip of every technique config
# ---------------------------------------------------------------------------------------------

CONFIGS = [
    Prune(),
    Prune("structured", 0.3, scope="global", finetune_steps=10, regularize="group_lasso", reg_steps=5,
          reg_strength=1e-3, lr=3e-4, batch_size=16, ignore=("features.0", "classifier.1")),
    Prune("semi_structured_2_4", 0.5),
    *[Quantize(m) for m in ("bf16", "fp16", "int8_dynamic", "int8_weight_only", "int4_weight_only", "fp8")],
    Quantize("int8_dynamic", compile=True),
    Distill(width=0.5),
    Distill(depth=0.5, student="examples.students:tiny", temperature=2.0, alpha=0.0, steps=7, batch_size=8, lr=1e-2),
    MixedPrecision("bf16"),
    MixedPrecision("fp16"),
]


@pytest.mark.parametrize("t", CONFIGS, ids=lambda t: t.label())
def test_every_config_round_trips_through_json(t):
    text = dumps(t)
    back = from_json(text)
    assert back == t and type(back) is type(t)
    assert from_json(to_json_dict(t)) == t
    assert back.label() == t.label()
    assert hash(back) == hash(t)
    d = to_json_dict(t)
    assert d["type"] and d["version"] == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["l1_unstructured", "structured", "semi_structured_2_4"]),
       amount=st.floats(0.01, 0.99), scope=st.sampled_from(["layer", "global"]),
       finetune=st.integers(0, 1000), reg=st.sampled_from(["none", "l1", "group_lasso"]),
       reg_steps=st.integers(0, 50), reg_strength=st.floats(0, 1), lr=st.floats(1e-6, 1.0),
       ignore=st.lists(st.text("abc.", min_size=1, max_size=5), max_size=3))
def test_prune_configs_round_trip(method, amount, scope, finetune, reg, reg_steps, reg_strength, lr, ignore):
    try:
        t = Prune(method, amount, scope, finetune, reg, reg_strength, reg_steps, lr, 64, tuple(ignore))
    except ConfigError:
        assume(False)
    assert from_json(dumps(t)) == t


@settings(max_examples=30, deadline=None)
@given(width=st.floats(0.01, 1.0), depth=st.floats(0.01, 1.0), temperature=st.floats(0.1, 20),
       alpha=st.floats(0, 1), steps=st.integers(1, 10_000))
def test_distill_configs_round_trip(width, depth, temperature, alpha, steps):
    assume(width < 1 or depth < 1)
    t = Distill(width=width, depth=depth, temperature=temperature, alpha=alpha, steps=steps)
    assert from_json(dumps(t)) == t


def test_from_json_rejects_what_is_not_a_technique(base, wl):
    (rec,) = records(apply(base, Quantize("bf16"), wl, device="cpu", cache=False))
    with pytest.raises(ConfigError, match=re.escape("techniques.from_json.type must be a technique config; "
                                                    "got 'ApplyRecord'.")):
        from_json(dumps(rec))
    with pytest.raises(ConfigError, match=re.escape("json.type must be one of ")):
        from_json({"type": "nope", "version": 1})
    with pytest.raises(ConfigError, match=re.escape("Quantize.version must be 1 (this release reads version 1); got 2.")):
        from_json({"type": "quantize", "version": 2, "mode": "bf16"})
    with pytest.raises(ConfigError, match=re.escape("Quantize.mode must be one of")):
        from_json({"type": "quantize", "version": 1, "mode": "int2"})  # validation runs on load too


@pytest.mark.parametrize("damage", ["zeroed", "truncated", "no checksum", "foreign"])
def test_a_corrupt_disk_cache_file_is_deleted_and_rebuilt_never_used(base, wl, train_calls, tmp_path, damage):
    apply(base, PRUNE, wl, device="cpu", cache=TechniqueCache(tmp_path))
    (pt,) = tmp_path.glob("*.pt")
    data = pt.read_bytes()
    if damage == "zeroed":
        pt.write_bytes(b"\0" * len(data))
    elif damage == "truncated":
        pt.write_bytes(data[: len(data) // 2])
    elif damage == "no checksum":
        pt.with_suffix(".sha256").unlink()
    else:  # a loadable file that is not ours: its checksum cannot match
        torch.save({"not": "a model"}, pt)
    cache = TechniqueCache(tmp_path)  # a new process: nothing in memory
    again = apply(base, PRUNE, wl, device="cpu", cache=cache)
    assert train_calls == [20, 20]  # rebuilt (trained again), not loaded
    assert len(cache.problems) == 1 and pt.name in cache.problems[0] and "rebuilt" in cache.problems[0]
    assert "checksum" in cache.problems[0]  # a mismatch, or no checksum file
    # the rebuilt file is whole again, and the next process loads it
    fresh = TechniqueCache(tmp_path)
    for k, v in apply(base, PRUNE, wl, device="cpu", cache=fresh).state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    assert fresh.hits == 1 and not fresh.problems and train_calls == [20, 20]


def test_cache_keys_change_with_the_library_versions(monkeypatch):
    from profilers.techniques import cache as cache_module

    k1 = TechniqueCache.key("fp", [PRUNE], None, 0)
    versions = dict(cache_module.library_versions(), torch="9.9.9")
    monkeypatch.setattr(cache_module, "library_versions", lambda: versions)
    assert TechniqueCache.key("fp", [PRUNE], None, 0) != k1
