"""A :class:`~profilers.workload.Workload` from your own model, an evaluation function and example
inputs: :func:`from_model` (also ``Workload.from_model``), what :func:`optimizer.optimize` builds.

* ``model``: an ``nn.Module`` (each build is a deep copy, in eval mode) or a zero-argument factory.
  Plain modules, torchvision models and Hugging Face models work as they are: a model is called
  as ``model(x)``, ``model(*args)`` or ``model(**kwargs)`` by the inputs' shape, and a Hugging
  Face ``ModelOutput`` is read through its ``logits`` (see ``techniques.training.output_tensor``).
* ``evaluate(model) -> float``: the quality, higher is better (``higher_is_better=False`` for a
  loss or perplexity), on held-out data.
* ``example_inputs``: one batch as the model takes it: a tensor, a tuple of tensors or a dict of
  tensors (``input_ids``, ``attention_mask``), batch dimension first. A batch of any size is made
  by repeating and cutting these along dimension 0.
* ``train_data`` (optional): a DataLoader or any iterable of batches, each ``(inputs, targets)``,
  a dict whose ``labels`` entry is the target (Hugging Face style), or inputs alone (no labels:
  training then matches the original model's outputs). It is read once, up to ``max_train_samples``
  samples, and held in memory; techniques that train draw random batches from it (never from
  the evaluation data).
* ``loss(output, targets)``: default cross-entropy for integer targets (tokens flattened: logits
  ``[..., classes]`` against labels ``[...]``, label -100 ignored) and mean squared error for
  floating targets.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F

from .config import invalid
from .workload import Workload

__all__ = ["from_model", "default_loss"]

#: how many training samples :func:`from_model` reads from ``train_data`` at most
MAX_TRAIN_SAMPLES = 100_000


def _leaves(x: Any) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(x) if isinstance(t, torch.Tensor)]


def _map(fn: Callable[[torch.Tensor], Any], x: Any) -> Any:
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: fn(t) if isinstance(t, torch.Tensor) else t, x)


def _batch_size(x: Any, owner: str, field: str) -> int:
    leaves = _leaves(x)
    if not leaves or any(t.dim() == 0 for t in leaves):
        raise invalid(owner, field, "a tensor, a tuple of tensors or a dict of tensors, batch dimension first",
                      type(x).__name__ if not leaves else "a 0-d tensor")
    sizes = {t.shape[0] for t in leaves}
    if len(sizes) != 1:
        raise invalid(owner, field, "tensors with one batch size (dimension 0)", sorted(sizes))
    return sizes.pop()


def _resized(x: Any, n: int) -> Any:
    """``x`` with batch size ``n``: repeated along dimension 0, then cut."""
    def one(t: torch.Tensor) -> torch.Tensor:
        reps = -(-n // t.shape[0])
        return t.repeat(reps, *([1] * (t.dim() - 1)))[:n].clone()

    return _map(one, x)


def _split(batch: Any) -> tuple[Any, Any]:
    """(inputs, targets) of one training batch (targets None when it has no labels)."""
    if isinstance(batch, Mapping):
        rest = {k: v for k, v in batch.items() if k != "labels"}
        return rest, batch.get("labels")
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    return batch, None


def _gather(train_data: Iterable, limit: int) -> tuple[Any, Any, int]:
    """Every batch of ``train_data`` (up to ``limit`` samples) concatenated: (inputs, targets, n)."""
    xs, ys, n = [], [], 0
    try:
        batches = iter(train_data)
    except TypeError:
        raise invalid("from_model", "train_data", "a DataLoader or an iterable of batches", type(train_data).__name__) \
            from None
    for i, batch in enumerate(batches):
        x, y = _split(batch)
        b = _batch_size(x, "from_model", f"train_data[{i}] inputs")
        if y is not None and (not isinstance(y, torch.Tensor) or y.dim() == 0 or y.shape[0] != b):
            raise invalid("from_model", f"train_data[{i}] targets", f"a tensor with {b} rows (the inputs' batch)",
                          type(y).__name__ if not isinstance(y, torch.Tensor) else tuple(y.shape))
        if ys and (y is None) != (ys[0] is None):
            raise invalid("from_model", f"train_data[{i}]", "batches that all have targets or all have none",
                          "a batch " + ("without" if y is None else "with") + " targets")
        xs.append(x)
        ys.append(y)
        n += b
        if n >= limit:
            break
    if not xs:
        raise invalid("from_model", "train_data", "at least one batch", "an empty iterable")
    from torch.utils._pytree import tree_flatten, tree_unflatten

    flat = [tree_flatten(x) for x in xs]
    spec = flat[0][1]
    if any(s != spec for _, s in flat):
        raise invalid("from_model", "train_data", "batches of one structure (the same keys or arity)", "mixed")
    cols = [torch.cat([f[0][j] for f in flat])[:limit] for j in range(len(flat[0][0]))]
    inputs = tree_unflatten(cols, spec)
    targets = None if ys[0] is None else torch.cat(ys)[:limit]
    return inputs, targets, min(n, limit)


def default_loss(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for integer targets (``[..., classes]`` logits against ``[...]`` labels, -100
    ignored), mean squared error for floating targets."""
    if targets.is_floating_point():
        return F.mse_loss(output.float(), targets.float().reshape(output.shape))
    return F.cross_entropy(output.float().reshape(-1, output.shape[-1]), targets.reshape(-1), ignore_index=-100)


def from_model(model: Any, evaluate: Callable[[Any], float], *, example_inputs: Any, train_data: Iterable | None = None,
               loss: Callable[..., torch.Tensor] | None = None, scaled_model: Callable[[float], Any] | None = None,
               name: str | None = None, quality_metric: str = "", quality_range: tuple[float, float] | None = None,
               higher_is_better: bool = True, max_train_samples: int = MAX_TRAIN_SAMPLES) -> Workload:
    """The :class:`Workload` of your own model (see the module docstring)."""
    if isinstance(model, torch.nn.Module):
        module = model

        def factory() -> torch.nn.Module:
            return copy.deepcopy(module).eval()
    elif callable(model):
        factory = model
    else:
        raise invalid("from_model", "model", "a torch.nn.Module or a function returning one", type(model).__name__)
    if not callable(evaluate):
        raise invalid("from_model", "evaluate", "a function evaluate(model) -> float (higher is better)",
                      type(evaluate).__name__)
    if not isinstance(max_train_samples, int) or isinstance(max_train_samples, bool) or max_train_samples < 1:
        raise invalid("from_model", "max_train_samples", "an integer >= 1", max_train_samples)
    batch = _batch_size(example_inputs, "from_model", "example_inputs")
    example = _map(lambda t: t.detach().clone(), example_inputs)
    seq_len = None
    if isinstance(example, Mapping) and isinstance(example.get("input_ids"), torch.Tensor) \
            and example["input_ids"].dim() >= 2:
        seq_len = int(example["input_ids"].shape[1])

    train_batch = targets = None
    n_train = None
    if train_data is not None:
        x_all, y_all, n_train = _gather(train_data, max_train_samples)

        def train_batch(batch_size: int, generator: torch.Generator) -> tuple[Any, Any]:
            idx = torch.randint(n_train, (batch_size,), generator=generator)
            return _map(lambda t: t[idx], x_all), None if y_all is None else y_all[idx]

        if y_all is not None:
            def targets(batch_size: int) -> torch.Tensor:  # a training step's targets when profiling
                return _resized(y_all, batch_size)
            if loss is None:
                loss = default_loss
    if loss is not None and not callable(loss):
        raise invalid("from_model", "loss", "None or a function loss(output, targets) -> tensor", type(loss).__name__)
    if scaled_model is not None and not callable(scaled_model):
        raise invalid("from_model", "scaled_model", "None or a function scaled_model(width) -> nn.Module",
                      type(scaled_model).__name__)
    label = name or (type(model).__name__ if isinstance(model, torch.nn.Module) else getattr(model, "__name__", "model"))
    return Workload(name=label, model=factory, inputs=lambda b: _resized(example, b), targets=targets, loss=loss,
                    evaluate=evaluate, quality_metric=quality_metric or getattr(evaluate, "__name__", ""),
                    batch_size=batch, seq_len=seq_len, description="your own model (Workload.from_model)",
                    train_batch=train_batch, scaled_model=scaled_model, train_samples=n_train,
                    quality_range=quality_range, higher_is_better=higher_is_better)
