"""``analyze``: the figures that need no execution, for models too large to instantiate.

The model is built on the **meta device** (shapes and dtypes, no storage), from a factory, a
module, a Hugging Face ``transformers`` config (a ``PretrainedConfig``, a config dict, a path to
a ``config.json``) or the name of a bundled config (:func:`bundled_configs`: Llama-2-7B/70B,
GPT-2, BERT-base; architecture fields of the published ``config.json`` files, no weights).

Derived, per stated formula:

* parameters: exact count of the built module; ``parameter_bytes`` = count x bytes(dtype);
* FLOPs: :func:`profilers.count_flops` over one forward and one forward + backward on meta tensors;
* gradients: one per parameter in the parameter dtype;
* optimizer state: ``adamw``/``adam`` 2 fp32 moments (8 B/param), plus fp32 master weights
  (4 B/param) when the parameters are bf16/fp16 (mixed-precision Adam: 2 + 2 + 12 B/param, as in
  the ZeRO paper); ``sgd_momentum`` 4 B/param; ``sgd`` 0;
* activations: bytes of the distinct tensors autograd saves for backward in one forward pass
  (``torch.autograd.graph.saved_tensors_hooks``), parameters excluded.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._pytree import tree_map

from .config import ConfigError, invalid
from .flops import count_flops, describe_inputs
from .measurement import TORCH_DTYPES
from .profile import DTYPE_BYTES, Profile

__all__ = ["analyze", "bundled_configs", "load_hf_config", "build_on_meta", "OPTIMIZER_STATE_BYTES"]

#: fp32 optimizer-state bytes per parameter (moments only; master weights are added for bf16/fp16)
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adam": 8, "sgd_momentum": 4, "sgd": 0}


def bundled_configs() -> list[str]:
    d = resources.files("profilers").joinpath("data/hf_configs")
    return sorted(p.name.removesuffix(".json") for p in d.iterdir() if p.name.endswith(".json"))


def load_hf_config(spec: Any):
    """A ``transformers.PretrainedConfig`` from a config object, a dict, a path or a bundled name."""
    import transformers

    if isinstance(spec, transformers.PretrainedConfig):
        return spec
    if isinstance(spec, (str, Path)):
        name = str(spec)
        if name in bundled_configs():
            text = resources.files("profilers").joinpath(f"data/hf_configs/{name}.json").read_text()
            spec = json.loads(text)
        elif Path(name).is_file():
            spec = json.loads(Path(name).read_text())
        else:
            raise invalid("analyze", "model", "a model factory, an nn.Module, a transformers config, a "
                          "config.json path or one of the bundled configs " + ", ".join(bundled_configs()), name)
    if isinstance(spec, Mapping):
        d = {k: v for k, v in spec.items() if not k.startswith("_")}
        if "model_type" not in d:
            raise invalid("analyze", "config.model_type", "present in a transformers config dict", None)
        d.pop("dtype", None)
        return transformers.AutoConfig.for_model(d.pop("model_type"), **d)
    raise invalid("analyze", "model", "a model factory, an nn.Module, a transformers config or a config name",
                  type(spec).__name__)


def _hf_model_on_meta(config) -> torch.nn.Module:
    import transformers

    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    config._attn_implementation = "eager"  # explicit masks; no data-dependent .item() on meta
    with torch.device("meta"):
        if cls is not None:
            return cls(config)
        return transformers.AutoModel.from_config(config, attn_implementation="eager")


def build_on_meta(model: Any) -> tuple[torch.nn.Module, str, Any]:
    """(module on meta, display name, HF config or None) for any accepted model spec."""
    if isinstance(model, torch.nn.Module):  # a copy: the caller's module is never changed
        return copy.deepcopy(model).to("meta"), type(model).__name__, getattr(model, "config", None)
    if callable(model) and not isinstance(model, (str, Path, Mapping)) and not hasattr(model, "to_dict"):
        with torch.device("meta"):
            try:
                built = model()
            except Exception as e:
                raise ConfigError(f"analyze: the model factory {getattr(model, '__name__', model)!r} raised "
                                  f"{type(e).__name__}: {e}") from e
        if not isinstance(built, torch.nn.Module):
            raise invalid("analyze", "model()", "an nn.Module returned by the factory", type(built).__name__)
        return built.to("meta"), getattr(model, "__name__", type(built).__name__), getattr(built, "config", None)
    config = load_hf_config(model)
    name = str(model) if isinstance(model, (str, Path)) else getattr(config, "model_type", "model")
    return _hf_model_on_meta(config), name, config


def _hf_inputs(config, batch_size: int, seq_len: int) -> dict[str, Any]:
    """Decoders get an explicit all-ones ``attention_mask`` (without one, transformers inspects
    position ids with ``.item()``); encoders get none (with one, they test ``mask.all()``)."""
    ids = torch.zeros(batch_size, seq_len, dtype=torch.long, device="meta")
    inputs: dict[str, Any] = {"input_ids": ids}
    arch = (getattr(config, "architectures", None) or [""])[0]
    if arch.endswith(("ForCausalLM", "LMHeadModel")):
        inputs["attention_mask"] = torch.ones_like(ids)
        inputs["use_cache"] = False
    return inputs


def _to_meta(inputs: Any, dtype: torch.dtype) -> Any:
    """Meta copies of the example inputs; floating ones in the analyzed dtype (as a real run needs)."""
    def conv(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        return torch.empty_like(t, device="meta", dtype=dtype if t.is_floating_point() else t.dtype)

    return tree_map(conv, inputs)


def _hf_loss(out: Any) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    if logits is None:
        logits = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return logits.float().sum()


def _activation_bytes(model: torch.nn.Module, inputs: Any, call: Callable[[], Any]) -> int:
    params = {StorageWeakRef(p.untyped_storage()) for p in model.parameters()}
    seen: dict[StorageWeakRef, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ref = StorageWeakRef(t.untyped_storage())
        if ref not in params and ref not in seen:
            seen[ref] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = call()
    del out
    return int(sum(seen.values()))


def analyze(model: Any, *, batch_size: int = 1, seq_len: int | None = None, inputs: Any = None,
            dtype: str = "bf16", optimizer: str = "adamw", train: bool = True, name: str | None = None) -> Profile:
    """Analyze ``model`` without running it; returns a :class:`Profile` with ``source="analyzed"``.

    ``model``: a factory (called under ``torch.device("meta")``), an ``nn.Module``, a transformers
    config / dict / ``config.json`` path, or a bundled config name (``"llama-2-70b"``).
    ``inputs``: example inputs (tensors; only shapes and dtypes are used) or a callable
    ``inputs(batch_size)``; for transformers configs they default to ``input_ids`` and an explicit
    ``attention_mask`` of shape ``[batch_size, seq_len]``.

        >>> p = analyze("llama-2-7b", batch_size=1, seq_len=4096)   # doctest: +SKIP
        >>> p.parameters
        6738415616
    """
    if dtype not in TORCH_DTYPES:
        raise invalid("analyze", "dtype", "one of " + ", ".join(TORCH_DTYPES), dtype)
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise invalid("analyze", "optimizer", "one of " + ", ".join(OPTIMIZER_STATE_BYTES), optimizer)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise invalid("analyze", "batch_size", "an integer >= 1", batch_size)
    net, default_name, config = build_on_meta(model)
    net = net.to(TORCH_DTYPES[dtype]).train(train)
    if inputs is None:
        if config is None:
            raise invalid("analyze", "inputs", "example inputs (tensors or inputs(batch_size)) for a non-transformers model", None)
        if seq_len is None:
            raise invalid("analyze", "seq_len", "an integer >= 1 for a transformers config", None)
        x = _hf_inputs(config, batch_size, seq_len)
    else:
        x = _to_meta(inputs(batch_size) if callable(inputs) else inputs, TORCH_DTYPES[dtype])
    if seq_len is not None and (not isinstance(seq_len, int) or seq_len < 1):
        raise invalid("analyze", "seq_len", "an integer >= 1", seq_len)
    loss_fn = _hf_loss if config is not None else None

    fwd = count_flops(net, x, owner="analyze")
    n_params = sum(p.numel() for p in net.parameters())
    pbytes = int(n_params * DTYPE_BYTES[dtype])
    bbytes = int(sum(b.numel() * b.element_size() for b in net.buffers()))
    profile = dict(
        model=name or default_name, source="analyzed", device="meta",
        device_description="meta device (no execution)", dtype=dtype, batch_size=batch_size,
        torch_version=torch.__version__, parameters=int(n_params), parameter_bytes=pbytes,
        buffer_bytes=bbytes, forward_flops=int(fwd.total), seq_len=seq_len, ops=fwd.ops,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    notes = [f"inputs {describe_inputs(x)}"]
    if train:
        tr = count_flops(net, x, train=True, loss_fn=loss_fn, owner="analyze")
        for p in net.parameters():
            p.grad = None
        from .flops import call_model

        act = _activation_bytes(net, x, lambda: call_model(net, x))
        master = 4 if dtype in ("bf16", "fp16") and optimizer != "sgd" else 0
        opt_per_param = OPTIMIZER_STATE_BYTES[optimizer] + master
        profile.update(
            train_flops=int(tr.total), train_ops=tr.ops, gradient_bytes=pbytes,
            optimizer_state_bytes=int(n_params * opt_per_param), activation_bytes=act,
        )
        notes.append(f"optimizer state: {optimizer}, {opt_per_param} B/param "
                     f"({OPTIMIZER_STATE_BYTES[optimizer]} moments + {master} fp32 master weights)")
    return Profile(**profile, notes=tuple(notes))
