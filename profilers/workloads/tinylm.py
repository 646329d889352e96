"""A tiny byte-level Llama causal LM, trained on this machine from text that ships with Python.

Text (no download): the topics of ``pydoc_data.topics`` (the Python language reference bundled with
CPython's ``pydoc``), joined in sorted key order, as UTF-8 bytes (~466 K). Tokens are the bytes
(vocabulary 256, nothing else: no BOS, EOS or padding token). The split is fixed: the last 10 % of
the bytes are held out, the rest train.

Model: ``transformers.LlamaForCausalLM`` (:data:`CONFIG`: 4 layers, hidden 128, 4 query heads and 2
key/value heads (GQA, head dim 32), SwiGLU intermediate 352 (2.75 x hidden), RoPE, RMSNorm, untied
embeddings, 256 positions): 803,968 parameters, 738,432 outside the embedding and output layers.
``config.use_cache`` is False, so a plain forward returns logits only (a KV cache is built only when
asked: ``use_cache=True``, as :func:`profilers.generation.measure_generation` does).

Training (:data:`TRAIN`): AdamW on random windows of :data:`SEQ_LEN` + 1 bytes of the training split,
next-byte cross entropy, linear warm-up then cosine decay, gradient clipping; seeded and
deterministic (one intra-op thread, bit-identical weights run to run). 400 steps of 8 windows
(~410 K bytes, about one pass over the training split) take ~31 s on a 2-core CPU. The trained
``state_dict`` is cached per process and on disk (``<cache dir>/<sha256>.pt``, written atomically,
as the technique cache does), keyed by the SHA-256 of the config, the training hyperparameters and
the corpus bytes. The cache dir is
``$SIGMASTAR_CACHE_DIR/tinylm``, else ``$XDG_CACHE_HOME/sigmastar/tinylm``, else
``~/.cache/sigmastar/tinylm``. A cache file is used only when it loads (``weights_only``), carries
the same key, its tensors hash to the digest stored with them and their names and shapes are the
model's; anything else (a truncated or corrupt file) is retrained and overwritten, never trusted.

P(M) = **held-out perplexity** over bytes: ``exp(mean next-byte cross entropy)`` over
:data:`EVAL_WINDOWS` = 128 fixed windows (16,384 predicted bytes), evenly spaced among the 364
non-overlapping windows of the held-out split (:func:`perplexity`; ~0.5 s on one thread).
LOWER IS BETTER: 1 is a perfect model, 256 is uniform guessing; a model worse than uniform guessing
(or one whose loss is not finite) scores 256, so the value stays in ``quality_range`` (1, 256).
The unigram baseline (byte frequencies of the training split, add-one smoothed, on the same
held-out bytes) is :func:`unigram_perplexity` (25.63); the trained model reaches 5.80.

:func:`inputs` are the first held-out windows (all 364, in order, repeated past the last),
:func:`targets` their next bytes, :func:`loss` the next-byte cross entropy (logits or a model output).

:func:`scaled_model` (a distillation student) keeps the depth, the 4 query / 2 key-value heads, the
vocabulary and positions, and scales the hidden size (to a multiple of 8: even head dims for RoPE)
and the intermediate size by ``width``: ``scaled_model(0.5)`` has about a quarter of the
non-embedding parameters.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import invalid, is_number
from ..workload import Workload

__all__ = ["CONFIG", "TRAIN", "SEQ_LEN", "HIGHER_IS_BETTER", "corpus", "split", "cache_dir", "cache_key",
           "trained_state", "trained_model", "training_info", "inputs", "targets", "loss", "train_batch",
           "perplexity", "unigram_perplexity", "scaled_model", "workload"]

#: the quality metric (held-out perplexity) is better when LOWER
HIGHER_IS_BETTER = False

SEQ_LEN = 128  # tokens (bytes) per window
VOCAB = 256  # bytes
HELD_OUT_FRACTION = 0.1  # the last 10 % of the corpus bytes
EVAL_WINDOWS = 128  # held-out windows P(M) is measured on (16,384 predicted bytes)
EVAL_BATCH = 64
MAX_PERPLEXITY = float(VOCAB)  # uniform guessing; evaluate never reports more
CACHE_FORMAT = 1

#: the baseline architecture (``transformers.LlamaConfig`` keyword arguments)
CONFIG: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "use_cache": False,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
}

#: the training recipe of the baseline
TRAIN: dict[str, Any] = {
    "steps": 400,
    "batch_size": 8,
    "seq_len": SEQ_LEN,
    "lr": 2e-3,
    "warmup_steps": 20,
    "schedule": "cosine",
    "betas": (0.9, 0.95),
    "weight_decay": 0.01,
    "grad_clip": 1.0,
    "seed": 0,
    # intra-op threads while training (restored after): one thread is the same arithmetic on every
    # machine, and on 2 shared cores two spinning OpenMP threads ran ~6x slower when another
    # process held a core (1 thread: ~30 s here, contended or not)
    "threads": 1,
}


# ---- text -------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def corpus() -> bytes:
    """The UTF-8 bytes of ``pydoc_data.topics``' texts, joined in sorted key order."""
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics)).encode("utf-8")


@functools.lru_cache(maxsize=1)
def split() -> dict[str, torch.Tensor]:
    """``{"train": ..., "held_out": ...}``: uint8 tensors of bytes; the last 10 % are held out."""
    data = torch.frombuffer(bytearray(corpus()), dtype=torch.uint8)
    cut = len(data) - int(len(data) * HELD_OUT_FRACTION)
    return {"train": data[:cut].clone(), "held_out": data[cut:].clone()}


def _windows(data: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    return data[starts[:, None] + torch.arange(length, device=data.device)].long()


@functools.lru_cache(maxsize=1)
def _held_out_windows() -> torch.Tensor:
    """Every non-overlapping window of ``SEQ_LEN + 1`` held-out bytes (stride ``SEQ_LEN``), [N, 129]."""
    held = split()["held_out"]
    n = (len(held) - 1) // SEQ_LEN
    return _windows(held, torch.arange(n, device=held.device) * SEQ_LEN, SEQ_LEN + 1)


@functools.lru_cache(maxsize=1)
def _eval_windows() -> torch.Tensor:
    """:data:`EVAL_WINDOWS` of the held-out windows, evenly spaced over the held-out split, [128, 129]."""
    w = _held_out_windows()
    return w[torch.linspace(0, len(w) - 1, min(EVAL_WINDOWS, len(w)), device=w.device).round().long()]


def _held_out_rows(batch_size: int) -> torch.Tensor:
    w = _held_out_windows()
    return w[torch.arange(batch_size, device=w.device) % len(w)]


def inputs(batch_size: int) -> torch.Tensor:
    """The first ``batch_size`` held-out windows (repeated past the last): LongTensor [B, 128]."""
    return _held_out_rows(batch_size)[:, :-1].contiguous()


def targets(batch_size: int) -> torch.Tensor:
    """The next bytes of :func:`inputs`' windows: LongTensor [B, 128]."""
    return _held_out_rows(batch_size)[:, 1:].contiguous()


def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    v = out.get("logits") if isinstance(out, dict) else getattr(out, "logits", None)
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise invalid("tinylm", "model output", "logits: a tensor or an output with .logits", type(out).__name__)


def loss(output: Any, target: torch.Tensor) -> torch.Tensor:
    """Mean next-byte cross entropy of ``output`` (logits [B, T, 256] or a model output with
    ``.logits``) against ``target`` [B, T]."""
    logits = _logits(output)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1).to(logits.device))


def train_batch(batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of the training split (never held-out bytes): (inputs, next bytes), [B, 128] each."""
    train = split()["train"]
    starts = torch.randint(len(train) - SEQ_LEN, (batch_size,), generator=generator, device=train.device)
    w = _windows(train, starts, SEQ_LEN + 1)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


# ---- model ------------------------------------------------------------------------------------------


def _build(config: dict[str, Any]) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("cpu"):  # real weights even when first called under a meta-device context
        return LlamaForCausalLM(LlamaConfig(**config))


def _lr_at(step: int, hp: dict[str, Any]) -> float:
    warm = min(1.0, (step + 1) / max(1, hp["warmup_steps"]))
    return hp["lr"] * warm * 0.5 * (1 + math.cos(math.pi * step / hp["steps"]))


def _train(config: dict[str, Any], hp: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train a fresh model with the recipe ``hp``; (state_dict, {"train_s", "final_loss", ...})."""
    if hp["seq_len"] != SEQ_LEN:
        raise invalid("tinylm", "TRAIN['seq_len']", f"{SEQ_LEN} (the workload's windows)", hp["seq_len"])
    if hp["schedule"] != "cosine":
        raise invalid("tinylm", "TRAIN['schedule']", "'cosine' (warm-up, then cosine decay)", hp["schedule"])
    threads = torch.get_num_threads()
    torch.set_num_threads(hp.get("threads", 1))
    try:
        # real tensors and gradients even when called under a meta-device or no_grad context
        with torch.device("cpu"), torch.enable_grad():
            return _train_loop(config, hp)
    finally:
        torch.set_num_threads(threads)


def _train_loop(config: dict[str, Any], hp: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(hp["seed"])
        model = _build(config)
    gen = torch.Generator().manual_seed(hp["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], betas=tuple(hp["betas"]),
                            weight_decay=hp["weight_decay"])
    model.train()
    t0 = time.perf_counter()
    last = math.nan
    for step in range(hp["steps"]):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, hp)
        x, y = train_batch(hp["batch_size"], gen)
        opt.zero_grad(set_to_none=True)
        value = loss(model(input_ids=x), y)
        value.backward()
        nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        opt.step()
        last = float(value.detach())
    meta = {"train_s": time.perf_counter() - t0, "final_loss": last, "steps": hp["steps"],
            "threads": torch.get_num_threads(), "torch": str(torch.__version__)}
    state = {k: v.detach().clone() for k, v in model.eval().state_dict().items()}
    return state, meta


def cache_dir() -> Path:
    """Where trained weights are cached (see the module docstring)."""
    if os.environ.get("SIGMASTAR_CACHE_DIR"):
        return Path(os.environ["SIGMASTAR_CACHE_DIR"]) / "tinylm"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sigmastar" / "tinylm"


def cache_key(config: dict[str, Any] | None = None, hp: dict[str, Any] | None = None) -> str:
    """SHA-256 of the config, the training hyperparameters and the corpus bytes."""
    payload = {"format": CACHE_FORMAT, "config": CONFIG if config is None else config,
               "train": TRAIN if hp is None else hp}
    h = hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode())
    h.update(corpus())
    return h.hexdigest()


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _load(path: Path, key: str, config: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The cached (state, meta) when the file is intact and is this key's; else None."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        state, meta = obj["state"], obj["meta"]
        if obj.get("format") != CACHE_FORMAT or obj.get("key") != key or obj.get("digest") != _digest(state):
            return None
        from transformers import LlamaConfig, LlamaForCausalLM

        with torch.device("meta"):  # names and shapes only
            ref = LlamaForCausalLM(LlamaConfig(**config)).state_dict()
        if set(ref) != set(state) or any(tuple(ref[k].shape) != tuple(state[k].shape) for k in ref):
            return None
        return state, dict(meta)
    except Exception:  # a truncated, corrupt or foreign file: retrain
        return None


def _save(path: Path, key: str, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save({"format": CACHE_FORMAT, "key": key, "digest": _digest(state), "state": state,
                        "meta": meta}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except (OSError, RuntimeError) as e:  # a read-only home or a full disk: still cached per process
        warnings.warn(f"tinylm: could not cache the trained weights at {path} ({e})", stacklevel=3)


def trained_state(config: dict[str, Any] | None = None, hp: dict[str, Any] | None = None, *,
                  directory: str | Path | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, training info) of the model trained with ``config`` and ``hp`` (default: the
    baseline's), read from the disk cache in ``directory`` (default :func:`cache_dir`) when an intact
    entry for their key is there, else trained and cached. Info: ``train_s``, ``final_loss``,
    ``steps``, ``threads``, ``torch`` of the training run, and ``from_cache``."""
    config = CONFIG if config is None else config
    hp = TRAIN if hp is None else hp
    key = cache_key(config, hp)
    path = Path(directory if directory is not None else cache_dir()) / f"{key}.pt"
    hit = _load(path, key, config) if path.is_file() else None
    if hit is not None:
        state, meta = hit
        return state, {**meta, "from_cache": True}
    state, meta = _train(config, hp)
    _save(path, key, state, meta)
    return state, {**meta, "from_cache": False}


@functools.lru_cache(maxsize=1)
def _baseline() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return trained_state()


def training_info() -> dict[str, Any]:
    """How the baseline's weights were obtained (see :func:`trained_state`)."""
    return dict(_baseline()[1])


def trained_model() -> nn.Module:
    """A fresh copy of the trained baseline (fp32, eval mode; trained or read from disk once per process)."""
    with torch.random.fork_rng(devices=[]):  # the initial values are overwritten: leave the caller's RNG alone
        model = _build(CONFIG)
    model.load_state_dict(_baseline()[0])  # copies into the model's own tensors
    return model.eval()


# ---- quality ----------------------------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def perplexity(model: nn.Module) -> float:
    """P(M): exp(mean next-byte cross entropy) over every held-out window (lower is better), capped
    at 256 (uniform guessing; also what a non-finite loss scores)."""
    windows = _eval_windows()
    dev = _model_device(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows), EVAL_BATCH):
            w = windows[i:i + EVAL_BATCH].to(dev)
            logits = _logits(model(w[:, :-1])).float()
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                                           reduction="sum"))
            count += w[:, 1:].numel()
    model.train(was_training)
    mean = total / count
    if not math.isfinite(mean):
        return MAX_PERPLEXITY
    return float(min(math.exp(min(mean, 700.0)), MAX_PERPLEXITY))


def unigram_perplexity() -> float:
    """The baseline to beat: byte frequencies of the training split (add-one smoothed) scored on the
    same held-out next bytes as :func:`perplexity`."""
    counts = torch.bincount(split()["train"].long(), minlength=VOCAB).double() + 1
    logp = (counts / counts.sum()).log()
    return float(math.exp(-float(logp[_eval_windows()[:, 1:]].mean())))


# ---- student ----------------------------------------------------------------------------------------


def scaled_config(width: float) -> dict[str, Any]:
    """:data:`CONFIG` with the hidden size (a multiple of 8, at least 8) and the intermediate size
    scaled by ``width``; same depth, heads (head dim = hidden / 4), vocabulary and positions."""
    if not is_number(width) or not width > 0 or not math.isfinite(width):
        raise invalid("tinylm.scaled_model", "width", "a number > 0", width)
    heads = CONFIG["num_attention_heads"]
    unit = 2 * heads  # even head dims (RoPE rotates pairs)
    hidden = max(unit, unit * round(CONFIG["hidden_size"] * width / unit))
    return {**CONFIG, "hidden_size": hidden, "head_dim": hidden // heads,
            "intermediate_size": max(1, round(CONFIG["intermediate_size"] * width))}


def scaled_model(width: float) -> nn.Module:
    """A fresh (untrained) tinylm of :func:`scaled_config` ``(width)`` (a distillation student)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TRAIN["seed"])
        return _build(scaled_config(width)).eval()


def workload() -> Workload:
    return Workload(
        name="tinylm",
        model=trained_model,
        inputs=inputs,
        targets=targets,
        loss=loss,
        evaluate=perplexity,
        quality_metric="held-out perplexity (bytes)",
        batch_size=8,
        seq_len=SEQ_LEN,
        description="tiny byte-level Llama causal LM (4 layers, hidden 128, GQA 4/2 heads) trained here on "
                    "pydoc_data.topics; quality = held-out byte perplexity, LOWER is better "
                    "(1 perfect, 256 uniform guessing)",
        train_batch=train_batch,
        scaled_model=scaled_model,
        train_samples=len(split()["train"]) - SEQ_LEN,
        quality_range=(1.0, MAX_PERPLEXITY),
        higher_is_better=HIGHER_IS_BETTER,
    )
