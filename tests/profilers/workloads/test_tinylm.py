"""The tinylm workload: a byte-level Llama trained here on pydoc_data.topics, held-out perplexity as P(M).

The first run in a fresh cache trains the baseline (~30 s on 2 CPU cores, one thread); later runs read
the weights from the on-disk cache (keyed by content).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

from profilers import Workload, workloads  # noqa: E402
from profilers.workloads import tinylm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wl() -> Workload:
    return workloads.get("tinylm")


@pytest.fixture(scope="module")
def model(wl):
    return wl.build()


def _non_embedding(m: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in m.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)


# ---- registry and fields ------------------------------------------------------------------------------


def test_registered_with_its_range_and_metric(wl):
    assert "tinylm" in workloads.names()
    assert workloads.quality_range("tinylm") == (1.0, 256.0)
    assert workloads.quality_metric("tinylm") == "perplexity"
    assert isinstance(wl, Workload) and wl.name == "tinylm"
    assert wl.batch_size == 8 and wl.seq_len == 128 and wl.quality_range == (1.0, 256.0)
    assert wl.quality_metric == "held-out perplexity (bytes)"
    assert "lower is better" in wl.description.lower()
    assert tinylm.HIGHER_IS_BETTER is False
    assert wl.train_samples == len(tinylm.split()["train"]) - 128


def test_the_split_is_the_last_tenth_of_the_corpus_bytes():
    from pydoc_data.topics import topics

    data = "".join(topics[k] for k in sorted(topics)).encode("utf-8")
    s = tinylm.split()
    assert len(data) > 400_000
    assert len(s["held_out"]) == len(data) // 10
    assert bytes(s["train"].tolist()) + bytes(s["held_out"].tolist()) == data


def test_inputs_targets_and_train_batches(wl):
    x, y = wl.inputs(5), wl.targets(5)
    assert x.shape == y.shape == (5, 128) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # next bytes
    assert torch.equal(wl.inputs(5), x)  # deterministic
    held = bytes(tinylm.split()["held_out"].tolist())
    assert bytes(x[0].tolist()) in held and bytes(x[4].tolist()) in held
    assert wl.inputs(1000).shape == (1000, 128)  # repeated past the held-out windows
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    (a, ay), (b, _) = wl.train_batch(4, g1), wl.train_batch(4, g2)
    assert a.shape == ay.shape == (4, 128) and torch.equal(a, b) and torch.equal(a[:, 1:], ay[:, :-1])
    train = bytes(tinylm.split()["train"].tolist())
    assert all(bytes(row.tolist()) in train for row in a)


def test_architecture(model):
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert (cfg.vocab_size, cfg.max_position_embeddings) == (256, 256)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (4, 2)  # GQA
    assert 2 <= cfg.num_hidden_layers <= 4 and 128 <= cfg.hidden_size <= 256
    assert 2.5 <= cfg.intermediate_size / cfg.hidden_size <= 3.0


# ---- quality ----------------------------------------------------------------------------------------


def test_trained_model_beats_the_unigram_baseline(wl, model):
    ppl, unigram = wl.evaluate(model), tinylm.unigram_perplexity()
    info = tinylm.training_info()
    print(f"\ntinylm held-out perplexity {ppl:.3f} vs unigram {unigram:.3f} "
          f"({info['steps']} steps, trained in {info['train_s']:.1f} s, from cache: {info['from_cache']})")
    lo, hi = wl.quality_range
    assert lo <= ppl <= hi and lo <= unigram <= hi
    assert 20 < unigram < 30  # English text bytes
    assert ppl < 0.35 * unigram  # clearly below: ~5.8 vs ~25.6


def test_evaluate_is_deterministic_and_leaves_the_model_as_it_was(wl, model):
    m = wl.build()
    m.train()
    a = wl.evaluate(m)
    assert m.training
    assert wl.evaluate(m) == a == wl.evaluate(model)


def test_a_worse_than_guessing_model_scores_the_top_of_the_range(wl, model):
    m = wl.build()
    with torch.no_grad():
        m.lm_head.weight.mul_(-50.0)  # confidently wrong
    assert wl.evaluate(m) == 256.0
    with torch.no_grad():
        m.lm_head.weight.fill_(float("nan"))
    assert wl.evaluate(m) == 256.0


def test_build_returns_independent_copies(wl, model):
    m = wl.build()
    with torch.no_grad():
        next(m.parameters()).zero_()
    assert next(wl.build().parameters()).abs().sum() > 0


def test_a_training_step_runs_and_lowers_the_loss_on_its_batch(wl):
    m = wl.build().train()
    x, y = wl.train_batch(8, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    before = float(wl.loss(m(x), y).detach())
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        loss = wl.loss(m(x), y)  # a model output (.logits) or the logits themselves
        loss.backward()
        opt.step()
    assert math.isfinite(before) and float(wl.loss(m(x).logits, y).detach()) < before


def test_measure_accepts_the_workload():
    from profilers import measure

    p = measure(workloads.get("tinylm"), batch_size=2, time_cap_s=0.2, min_runs=3, warmup=1)
    assert p.latency.median_s > 0 and p.train_step.median_s > 0 and p.parameters > 400_000


# ---- student ----------------------------------------------------------------------------------------


def test_scaled_model_half_width_has_a_quarter_of_the_non_embedding_parameters(wl, model):
    s = wl.scaled_model(0.5)
    assert s.config.num_hidden_layers == model.config.num_hidden_layers
    assert (s.config.num_attention_heads, s.config.num_key_value_heads) == (4, 2)
    assert s.config.hidden_size == model.config.hidden_size // 2
    assert s.config.head_dim * 4 == s.config.hidden_size and s.config.head_dim % 2 == 0
    ratio = _non_embedding(s) / _non_embedding(model)
    assert 0.23 <= ratio <= 0.27, ratio
    x = wl.inputs(2)
    assert s(x).logits.shape == (2, 128, 256)
    assert wl.scaled_model(1.0).config.hidden_size == model.config.hidden_size
    for w in (0.01, 0.3, 0.77):
        c = tinylm.scaled_config(w)
        assert c["hidden_size"] % 8 == 0 and c["hidden_size"] >= 8 and c["head_dim"] * 4 == c["hidden_size"]


@pytest.mark.parametrize("width", [0, -1, float("nan"), "half", True])
def test_scaled_model_rejects_bad_widths(width):
    from profilers import ConfigError

    with pytest.raises(ConfigError, match="width must be a number > 0"):
        tinylm.scaled_model(width)


def test_quality_target_outside_perplexity_range_is_rejected(wl):
    from profilers import ConfigError

    wl.check_target("job.constraints", "min_quality", 6.0)
    with pytest.raises(ConfigError, match=r"min_quality must be a number in \[1, 256\] \(held-out perplexity "
                                          r"\(bytes\) of tinylm\); got 0\.5\."):
        wl.check_target("job.constraints", "min_quality", 0.5)


# ---- the disk cache ---------------------------------------------------------------------------------

_TINY = {**tinylm.CONFIG, "hidden_size": 16, "head_dim": 4, "intermediate_size": 32, "num_hidden_layers": 1}
_FEW = {**tinylm.TRAIN, "steps": 2, "batch_size": 2}


def test_cache_key_covers_config_recipe_and_corpus():
    k = tinylm.cache_key()
    assert k == tinylm.cache_key(dict(tinylm.CONFIG), dict(tinylm.TRAIN)) and len(k) == 64
    assert tinylm.cache_key(_TINY) != k
    assert tinylm.cache_key(hp={**tinylm.TRAIN, "steps": 401}) != k


def test_cached_weights_are_reused_and_a_corrupt_file_is_retrained(tmp_path):
    state, info = tinylm.trained_state(_TINY, _FEW, directory=tmp_path)
    assert info["from_cache"] is False
    path = tmp_path / f"{tinylm.cache_key(_TINY, _FEW)}.pt"
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left
    again, info = tinylm.trained_state(_TINY, _FEW, directory=tmp_path)
    assert info["from_cache"] is True and all(torch.equal(state[k], again[k]) for k in state)

    path.write_bytes(path.read_bytes()[:1000])  # truncated
    retrained, info = tinylm.trained_state(_TINY, _FEW, directory=tmp_path)
    assert info["from_cache"] is False
    assert all(torch.equal(state[k], retrained[k]) for k in state)  # seeded: the same weights

    blob = dict(torch.load(path, weights_only=True))  # intact file, tampered tensor: digest mismatch
    name = next(iter(blob["state"]))
    blob["state"] = {**blob["state"], name: blob["state"][name] + 1}
    torch.save(blob, path)
    _, info = tinylm.trained_state(_TINY, _FEW, directory=tmp_path)
    assert info["from_cache"] is False

    path.write_bytes(b"not a checkpoint")
    _, info = tinylm.trained_state(_TINY, _FEW, directory=tmp_path)
    assert info["from_cache"] is False
    _, info = tinylm.trained_state(_TINY, _FEW, directory=tmp_path)
    assert info["from_cache"] is True


def test_structured_pruning_refuses_llama_attention_instead_of_hanging():
    from profilers.techniques import Prune, UnsupportedTechnique, apply
    from profilers.workloads import get

    wl = get("tinylm")
    with pytest.raises(UnsupportedTechnique, match=r"LlamaAttention \(q_proj / k_proj / v_proj, as in Llama\) is "
                       r"not supported: use method='l1_unstructured'"):
        apply(wl.build(), [Prune("structured", amount=0.3, finetune_steps=0)], wl)
