"""Structured pruning: physically remove output channels / neurons / attention heads with
torch-pruning's dependency graph (DepGraph), leaving a smaller dense model with the same input and
output interface.

* Any Linear/Conv network (e.g. the digits CNN): ``amount`` of the output channels of every
  prunable layer are removed (L1 magnitude of each coupled group), and the layers that consume
  them shrink their inputs accordingly; the output layer keeps its outputs.
* BERT-style transformers (modules with ``query``/``key``/``value`` and ``num_attention_heads``,
  e.g. the MiniLM ``BertModel``): whole attention heads (q, k, v and the output projection's
  columns together) and FFN intermediate neurons are removed; the residual stream (hidden size)
  is kept, so the model's outputs keep their shape. The attention modules' ``num_attention_heads``
  and ``all_head_size`` are updated so forward still works (``config`` is shared and left alone).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import invalid
from ..flops import call_model
from .base import Context
from .pruning import LAYER_TYPES, Prune, output_layer_name, prunable_layers
from .training import _to_device

__all__ = ["attention_modules", "structured_layers", "structured_prune"]


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """BERT-style self-attention modules: Linear ``query``, ``key``, ``value`` and ``num_attention_heads``."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(getattr(m, "num_attention_heads", None), int)
            and all(isinstance(getattr(m, k, None), nn.Linear) for k in ("query", "key", "value"))]


def _residual_linears(model: nn.Module, attn: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Linears that write the transformer's residual stream (hidden size): never pruned, so the
    hidden size and thus the output shapes stay."""
    if not attn:
        return []
    hidden = attn[0][1].query.in_features
    qkv = {id(getattr(a, k)) for _, a in attn for k in ("query", "key", "value")}
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and m.out_features == hidden and id(m) not in qkv]


def structured_layers(model: nn.Module, t: Prune) -> list[tuple[str, nn.Module]]:
    """The layers whose output channels / neurons structured pruning removes."""
    residual = {id(m) for _, m in _residual_linears(model, attention_modules(model))}
    return [(n, m) for n, m in prunable_layers(model, t) if id(m) not in residual]


def _shapes(out: Any) -> list[tuple[int, ...]]:
    import torch_pruning as tp

    return [tuple(x.shape) for x in tp.utils.flatten_as_list(out) if isinstance(x, torch.Tensor)]


def _width(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def structured_prune(model: nn.Module, t: Prune, ctx: Context, notes: list[str]) -> None:
    """Remove ``t.amount`` of the channels / neurons / heads of ``model`` in place."""
    import torch_pruning as tp

    wl = ctx.workload
    if wl is None:
        raise invalid("Prune", "workload", "a Workload with example inputs (structured pruning traces the "
                      "model's graph to find coupled channels)", None)
    other = [type(m).__name__ for _, m in model.named_modules() if type(m).__name__.endswith("Attention")
             and any(isinstance(getattr(m, k, None), nn.Linear) for k in ("q_proj", "k_proj", "v_proj"))]
    if other:  # torch-pruning never finishes tracing these (rotary, grouped KV heads): refuse, never hang
        from .base import UnsupportedTechnique

        raise UnsupportedTechnique(t, "any device", f"structured pruning handles BERT-style attention (query, key, "
                                   f"value); {other[0]} (q_proj / k_proj / v_proj, as in Llama) is not supported: "
                                   "use method='l1_unstructured' or 'semi_structured_2_4'")
    x = _to_device(wl.inputs(2), ctx.device)
    model.eval()
    with torch.no_grad():
        before = _shapes(call_model(model, x))
    n_before = sum(p.numel() for p in model.parameters())

    attn = attention_modules(model)
    keep = set(id(m) for _, m in structured_layers(model, t))
    mods = dict(model.named_modules())
    ignored = [m for _, m in model.named_modules() if isinstance(m, LAYER_TYPES) and id(m) not in keep]
    ignored += [mods[n] for n in t.ignore]  # with their children: norms, embeddings, ...
    widths = {n: _width(m) for n, m in model.named_modules() if id(m) in keep}
    num_heads = {getattr(a, k): a.num_attention_heads for _, a in attn for k in ("query", "key", "value")}
    heads_before = {n: a.num_attention_heads for n, a in attn}

    with torch.enable_grad():  # DepGraph traces the autograd graph of one forward
        pruner = tp.pruner.MetaPruner(
            model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=float(t.amount),
            global_pruning=t.scope == "global", ignored_layers=ignored,
            num_heads=num_heads, prune_num_heads=bool(num_heads), prune_head_dims=False,
            head_pruning_ratio=float(t.amount) if num_heads else 0.0,
            forward_fn=lambda m, inputs: call_model(m, inputs))
        pruner.step()
    for _, a in attn:
        a.num_attention_heads = int(pruner.num_heads[a.query])
        a.all_head_size = a.query.out_features
        if a.query.out_features != a.num_attention_heads * a.attention_head_size:
            raise invalid("Prune", "method", "'structured' on attention whose heads torch-pruning removed whole "
                          f"(query has {a.query.out_features} outputs for {a.num_attention_heads} heads of "
                          f"{a.attention_head_size})", t.method)
    del pruner

    with torch.no_grad():
        after = _shapes(call_model(model, x))
    if after != before:
        raise invalid("Prune", "ignore", f"the modules whose outputs form the model's output (structured pruning "
                      f"changed the output shapes {before} -> {after}; output layer {output_layer_name(model)!r})",
                      t.ignore)
    n_after = sum(p.numel() for p in model.parameters())
    shrunk = [f"{n} {w}->{_width(mods[n])}" for n, w in widths.items() if n in mods and not any(
        n == f"{a}.{k}" for a, _ in attn for k in ("key", "value"))]
    notes.append("structured (torch-pruning DepGraph, L1 magnitude, "
                 f"{'global' if t.scope == 'global' else 'per layer'}): output channels/neurons "
                 + ", ".join(shrunk))
    if attn:
        hb = sum(heads_before.values())
        ha = sum(a.num_attention_heads for _, a in attn)
        notes.append(f"attention heads {hb} -> {ha} in {len(attn)} layers (head size kept; hidden size kept)")
    notes.append(f"parameters {n_before} -> {n_after} ({1 - n_after / n_before:.1%} fewer): a smaller dense "
                 "model, faster on any device")
