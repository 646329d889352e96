"""``measure_generation``: prefill and decode of a causal LM with its KV cache, timed on this machine.

Autoregressive serving has two phases with different costs: the **prefill** (one forward over the
prompt, which fills the KV cache and yields the first output token: the time to first token,
TTFT) and the **decode** (one token per step, reading the whole cache: the time per output token,
TPOT). :func:`profilers.measure` times a plain forward, which is neither; this module times both.

* prefill: one forward of ``input_ids`` ``[batch, input_tokens]`` with ``use_cache=True`` (and, when
  the model supports it, logits only for the last position, as ``transformers``' ``generate`` does),
  returning the model's own KV cache (``DynamicCache``);
* decode: ``output_tokens`` greedy steps from the cache at the prompt length: each step feeds the
  previous step's arg-max token (the first: the prefill's) with the cache and appends one position
  to it. Before each timed run the cache is cropped back to the prompt (``DynamicCache.crop``, views:
  no copy), so every run starts at the same length. The decode :class:`~profilers.profile.Timing` is
  **per step**: ``median_s``, ``p10_s`` and ``p90_s`` are those of a run divided by ``output_tokens``;
  ``runs`` counts runs of ``output_tokens`` steps and ``timed_s`` is their total.

Both loops are timed by :mod:`profilers.measurement`'s timer (warm-up, repeated runs until the median
is stable or ``time_cap_s`` is spent, CUDA events after synchronization on a GPU, ``perf_counter`` on
the CPU with its contention check and retries): see :class:`~profilers.profile.Timing`.

KV-cache bytes are measured (the sum of the cache's key and value tensors' bytes) after the prefill
and after the last decode step, and compared with the analytic size ``2 (K and V) x layers x
key/value heads x head dim x bytes per element x batch`` per token (``kv_bytes_per_token``), read
from the model's config and the floating dtype the model computes in (its first plain floating
parameter's: bf16 for a model cast to bf16, fp32 for torchao int8 weights with fp32 activations);
``kv_bytes_match`` says whether both measurements are exactly that many tokens' worth (a
sliding-window, quantized or pre-allocated cache would not be).

The caller's model is never mutated: it runs on a copy, moved to ``device``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import inspect
from dataclasses import dataclass
from typing import Any

import torch

from .config import check_positive, dumps, invalid, loads, serializable
from .profile import Timing

__all__ = ["GenerationProfile", "measure_generation", "kv_cache_tensors", "kv_cache_bytes", "kv_bytes_per_token"]


@serializable("generation_profile")
@dataclass(frozen=True)
class GenerationProfile:
    """Prefill and decode figures of one causal LM at one batch and prompt length on one device.

    ``prefill``: one forward over the prompt (fills the KV cache); ``decode``: one greedy step with
    the cache, per step (see the module docstring). ``ttft_s`` is the prefill's median (the first
    output token comes from its logits), ``tpot_s`` the decode step's median and
    ``output_tokens_per_s`` = ``batch / tpot_s`` (tokens of the whole batch per second while
    decoding). KV bytes are for the whole batch; ``kv_bytes_per_token`` is analytic (None when the
    model's config does not say its layers, key/value heads and head dim)."""

    model: str
    device: str  # catalog name ("host" for this machine's CPU) or the GPU's name
    device_description: str
    dtype: str  # the weights' numeric format ("fp32", "bf16", "int8", ...)
    kv_dtype: str  # the KV cache's element type ("fp32", "bf16", ...)
    batch: int
    input_tokens: int
    output_tokens: int
    prefill: Timing
    decode: Timing  # per step
    ttft_s: float
    tpot_s: float
    output_tokens_per_s: float
    kv_bytes_after_prefill: int  # measured: input_tokens positions
    kv_bytes_after_decode: int  # measured: input_tokens + output_tokens positions
    kv_bytes_per_token: int | None  # analytic, whole batch
    kv_bytes_match: bool | None  # both measurements == kv_bytes_per_token x positions
    parameters: int
    torch_version: str
    threads: int | None  # torch intra-op threads (CPU)
    provenance: str  # "measured on <device>, torch <version>"
    created: str = ""
    notes: tuple[str, ...] = ()

    def to_json(self, **kw: Any) -> str:
        return dumps(self, **kw)

    @staticmethod
    def from_json(text: str) -> "GenerationProfile":
        obj = loads(text)
        if not isinstance(obj, GenerationProfile):
            raise invalid("GenerationProfile.from_json", "type", "'generation_profile'", type(obj).__name__)
        return obj

    def summary(self) -> dict[str, object]:
        """The headline figures as a flat dict (for tables and DataFrames)."""
        return {"model": self.model, "device": self.device, "dtype": self.dtype, "batch": self.batch,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "ttft_s": self.ttft_s,
                "tpot_s": self.tpot_s, "output_tokens_per_s": self.output_tokens_per_s,
                "kv_bytes_after_prefill": self.kv_bytes_after_prefill,
                "kv_bytes_after_decode": self.kv_bytes_after_decode, "kv_bytes_per_token": self.kv_bytes_per_token,
                "kv_bytes_match": self.kv_bytes_match, "provenance": self.provenance}


# ---- the model's cache ----------------------------------------------------------------------------------


def kv_cache_tensors(cache: Any) -> list[torch.Tensor]:
    """The key and value tensors a KV cache holds: a ``transformers`` ``Cache`` (``.layers`` with
    ``.keys``/``.values``, or the older ``.key_cache``/``.value_cache`` lists) or legacy nested
    tuples of tensors."""
    out: list[torch.Tensor] = []
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for layer in layers:
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if isinstance(t, torch.Tensor):
                    out.append(t)
        return out
    if hasattr(cache, "key_cache") and hasattr(cache, "value_cache"):
        return [t for t in list(cache.key_cache) + list(cache.value_cache) if isinstance(t, torch.Tensor)]
    if isinstance(cache, (tuple, list)):
        for item in cache:
            out.extend([item] if isinstance(item, torch.Tensor) else kv_cache_tensors(item))
        return out
    raise invalid("measure_generation", "model", "a causal LM whose KV cache is a transformers Cache or "
                  "nested tuples of tensors", type(cache).__name__)


def kv_cache_bytes(cache: Any) -> int:
    """Sum of the bytes of the cache's key and value tensors (elements x element size)."""
    return int(sum(t.numel() * t.element_size() for t in kv_cache_tensors(cache)))


def kv_bytes_per_token(config: Any, dtype: torch.dtype, batch: int = 1) -> int | None:
    """Analytic KV bytes per position: ``2 x layers x key/value heads x head dim x element size x
    batch``, from a ``transformers`` config; None when it does not say them."""
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None)
    if head_dim is None and heads and getattr(config, "hidden_size", None):
        head_dim = config.hidden_size // heads
    if not (layers and kv_heads and head_dim):
        return None
    return int(2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size() * batch)


def _forward_params(model: torch.nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _cache_of(out: Any) -> Any:
    """The KV cache a model output returns (``cache`` in transformers >= 5.x, else ``past_key_values``)."""
    if isinstance(out, dict):  # ModelOutput is an OrderedDict; avoids deprecated attribute access
        for key in ("cache", "past_key_values"):
            if out.get(key) is not None:
                return out[key]
        return None
    if isinstance(out, (tuple, list)) and len(out) > 1:
        return out[1]
    return None


def _logits_of(out: Any) -> torch.Tensor:
    if isinstance(out, dict) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, torch.Tensor):
        return out
    raise invalid("measure_generation", "model", "a causal LM returning logits", type(out).__name__)


_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


# ---- measurement ------------------------------------------------------------------------------------------


def measure_generation(model: torch.nn.Module, input_ids: torch.Tensor, *, output_tokens: int, device: Any = "cpu",
                       time_cap_s: float = 5.0, min_runs: int = 5, warmup: int = 2, max_runs: int = 10_000,
                       target_ci: float = 0.02, name: str | None = None) -> GenerationProfile:
    """Time the prefill of ``input_ids`` (``[batch, input_tokens]`` token ids) and ``output_tokens``
    greedy decode steps of ``model`` (a ``transformers`` causal LM, or any module that takes
    ``input_ids``, ``use_cache`` and its cache and returns logits and the cache) on ``device``, and
    measure its KV cache; see the module docstring. ``time_cap_s``, ``min_runs``, ``warmup``,
    ``max_runs`` and ``target_ci`` apply to each of the two timing loops (a decode run is
    ``output_tokens`` steps)."""
    from .flops import check_model
    from .measurement import _device_description, _time_runs, model_dtype, resolve_device

    check_model(model, "measure_generation")
    if (not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point()
            or input_ids.is_complex() or input_ids.dtype == torch.bool or 0 in input_ids.shape):
        raise invalid("measure_generation", "input_ids", "an integer tensor [batch, input_tokens] of token ids",
                      input_ids if not isinstance(input_ids, torch.Tensor) else
                      f"a {input_ids.dtype} tensor of shape {tuple(input_ids.shape)}")
    if not isinstance(output_tokens, int) or isinstance(output_tokens, bool) or output_tokens < 1:
        raise invalid("measure_generation", "output_tokens", "an integer >= 1", output_tokens)
    for f, v in (("time_cap_s", time_cap_s), ("target_ci", target_ci)):
        check_positive("measure_generation", f, v)
    if not isinstance(min_runs, int) or isinstance(min_runs, bool) or min_runs < 3:
        raise invalid("measure_generation", "min_runs", "an integer >= 3", min_runs)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise invalid("measure_generation", "warmup", "an integer >= 0", warmup)
    if not isinstance(max_runs, int) or isinstance(max_runs, bool) or max_runs < min_runs:
        raise invalid("measure_generation", "max_runs", f"an integer >= min_runs ({min_runs})", max_runs)
    batch, input_tokens = (int(s) for s in input_ids.shape)
    config = getattr(model, "config", None)
    max_pos = getattr(config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and input_tokens + output_tokens > max_pos:
        raise invalid("measure_generation", "output_tokens", f"at most {max_pos - input_tokens} (the model's "
                      f"{max_pos} positions less the {input_tokens} input tokens)", output_tokens)
    dev = resolve_device(device)
    catalog_name, description = _device_description(dev)

    net = copy.deepcopy(model).to(device=dev).eval()
    weight_dtype, act_dtype = model_dtype(net)
    ids = input_ids.to(dev)
    params = _forward_params(net)
    cache_kw = "cache" if "cache" in params else "past_key_values"
    prefill_kw: dict[str, Any] = {"use_cache": True}
    if "logits_to_keep" in params:  # only the last position's logits, as generate() does
        prefill_kw["logits_to_keep"] = 1
    elif "num_logits_to_keep" in params:
        prefill_kw["num_logits_to_keep"] = 1

    def prefill() -> Any:
        with torch.no_grad():
            return net(input_ids=ids, **prefill_kw)

    out = prefill()
    cache = _cache_of(out)
    if cache is None:
        raise invalid("measure_generation", "model", "a causal LM that returns its KV cache with use_cache=True",
                      type(model).__name__)
    if not (hasattr(cache, "crop") and hasattr(cache, "get_seq_length")):
        raise invalid("measure_generation", "model", "a causal LM whose KV cache can be cropped (a transformers "
                      "DynamicCache)", type(cache).__name__)
    if cache.get_seq_length() != input_tokens:
        raise invalid("measure_generation", "model", f"a KV cache holding the {input_tokens} prompt positions "
                      "after the prefill", f"{cache.get_seq_length()} positions")
    kv_after_prefill = kv_cache_bytes(cache)
    kv_tensors = kv_cache_tensors(cache)
    kv_dtype = kv_tensors[0].dtype if kv_tensors else act_dtype
    first = _logits_of(out)[:, -1:].argmax(-1)
    state = {"cache": cache}

    def decode() -> None:
        c = state["cache"]
        extra = c.get_seq_length() - input_tokens
        if extra:
            c.crop(-extra)  # back to the prompt (views, no copy)
        tok = first
        with torch.no_grad():
            for _ in range(output_tokens):
                o = net(input_ids=tok, **{cache_kw: c}, use_cache=True)
                c = _cache_of(o)
                tok = _logits_of(o)[:, -1:].argmax(-1)
        state["cache"] = c

    timing = dict(warmup=warmup, min_runs=min_runs, max_runs=max_runs, time_cap_s=time_cap_s, target_ci=target_ci)
    prefill_t = _time_runs(prefill, dev, **timing)
    runs = _time_runs(decode, dev, **timing)
    step = dataclasses.replace(runs, median_s=runs.median_s / output_tokens, p10_s=runs.p10_s / output_tokens,
                               p90_s=runs.p90_s / output_tokens)
    end = state["cache"]
    if end.get_seq_length() != input_tokens + output_tokens:  # a timed run ends with the cache at full length
        raise invalid("measure_generation", "model", f"a KV cache that grows by one position per decode step "
                      f"({input_tokens} + {output_tokens})", f"{end.get_seq_length()} positions")
    kv_after_decode = kv_cache_bytes(end)

    # analytic: from the config and the dtype the model computes in (not read off the cache)
    per_token = kv_bytes_per_token(config, act_dtype, batch) if config is not None else None
    match = None if per_token is None else (kv_after_prefill == per_token * input_tokens
                                            and kv_after_decode == per_token * (input_tokens + output_tokens))
    notes = [f"prefill: one forward of {batch} x {input_tokens} tokens with use_cache=True"
             + (" (logits of the last position only)" if len(prefill_kw) > 1 else ""),
             f"decode: {output_tokens} greedy steps from the cache at {input_tokens} positions, reported per step",
             f"KV cache: {type(cache).__name__}"]
    if match is False:
        notes.append(f"measured KV bytes ({kv_after_prefill} after prefill, {kv_after_decode} after decode) differ "
                     f"from the analytic {per_token} B per position")
    return GenerationProfile(
        model=name or type(model).__name__,
        device=catalog_name,
        device_description=description,
        dtype=weight_dtype,
        kv_dtype=_DTYPE_NAMES.get(kv_dtype, str(kv_dtype).removeprefix("torch.")),
        batch=batch,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        prefill=prefill_t,
        decode=step,
        ttft_s=prefill_t.median_s,
        tpot_s=step.median_s,
        output_tokens_per_s=batch / step.median_s,
        kv_bytes_after_prefill=kv_after_prefill,
        kv_bytes_after_decode=kv_after_decode,
        kv_bytes_per_token=per_token,
        kv_bytes_match=match,
        parameters=int(sum(p.numel() for p in net.parameters())),
        torch_version=torch.__version__,
        threads=torch.get_num_threads() if dev.type == "cpu" else None,
        provenance=f"measured on {description}, torch {torch.__version__}",
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        notes=tuple(notes),
    )
