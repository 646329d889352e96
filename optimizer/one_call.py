"""``optimizer.optimize``: one call from your model and an evaluation function to the cheapest
strategy that meets a quality target.

    from cost_models import Scenario, ServingPlan
    from optimizer import optimize

    res = optimize(model, accuracy, example_inputs=x[:32], train_data=loader, min_quality=0.9,
                   scenario=Scenario(serving=ServingPlan(avg_requests_per_s=50, latency_slo_s=0.1)))
    res                     # a short summary; res.report("out"), res.export("out/best")

It builds the :class:`~profilers.Workload` (:func:`profilers.own_model.from_model`), a default
search space of what the model and the data allow when none is given (:func:`default_space`), the
cost model of the scenario, and runs :func:`optimizer.search` (every keyword of which it passes on).
A :class:`~profilers.Workload` of your own stays the way to full control.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from profilers.config import invalid

from .result import SearchResult
from .space import SearchSpace

__all__ = ["optimize", "default_space"]

#: the default space's pruning amounts and quantization modes (each measured; those that do not run
#: here fail as faults with their reason, never silently)
PRUNE_AMOUNTS = (0.0, 0.25, 0.5)
QUANTIZE_MODES = ("none", "int8_weight_only", "int8_dynamic")
DISTILL_WIDTHS = (1.0, 0.5)


def default_space(workload: Any, *, devices: tuple[str, ...] | None = None,
                  batch_sizes: tuple[int, ...] | None = None) -> tuple[SearchSpace, list[str]]:
    """``(space, notes)``: what the workload allows. Structured pruning of 25 % and 50 % (with
    recovery fine-tuning when there is training data, without it otherwise), int8 weight-only and
    dynamic quantization, and distillation to half width when the workload has training data and
    ``scaled_model``. ``notes`` says what was left out and why."""
    notes = []
    trains = workload.train_batch is not None
    if not trains:
        notes.append("no training data (train_data=...): the default space has no fine-tuning after pruning and "
                     "no distillation")
    widths = (1.0,)
    if trains and workload.scaled_model is not None:
        widths = DISTILL_WIDTHS
    elif trains:
        notes.append("no scaled_model=...: the default space has no distillation (it needs a smaller copy of the "
                     "architecture)")
    kw: dict[str, Any] = dict(distill_width=widths, prune_amount=PRUNE_AMOUNTS, quantize=QUANTIZE_MODES,
                              finetune_steps=SearchSpace.finetune_steps if trains else 0)
    if devices is not None:
        kw["devices"] = tuple(devices)
    if batch_sizes is not None:
        kw["batch_sizes"] = tuple(batch_sizes)
    return SearchSpace(**kw), notes


def optimize(model: Any, evaluate: Callable[[Any], float], *, example_inputs: Any, min_quality: float,
             scenario: Any, train_data: Iterable | None = None, space: SearchSpace | None = None,
             loss: Callable | None = None, scaled_model: Callable[[float], Any] | None = None,
             name: str | None = None, higher_is_better: bool = True,
             quality_range: tuple[float, float] | None = None, prices: Any = None,
             devices: tuple[str, ...] | None = None, batch_sizes: tuple[int, ...] | None = None,
             method: str = "lazy", log: Callable[[str], None] | None = None, **search_options: Any) -> SearchResult:
    """The cheapest strategy for your model whose measured quality meets ``min_quality``.

    * ``model``: an ``nn.Module`` (plain, torchvision, Hugging Face) or a function returning one;
      ``evaluate(model) -> float`` its quality on held-out data (higher is better, or
      ``higher_is_better=False``); ``example_inputs``: one batch as the model takes it (a tensor,
      a tuple or a dict of tensors); ``train_data``: a DataLoader or iterable of batches for the
      techniques that train (fine-tuning after pruning, distillation); ``loss``, ``scaled_model``:
      see :func:`profilers.own_model.from_model`.
    * ``scenario``: a :class:`cost_models.Scenario` (traffic, latency target, horizon, training);
      ``prices``: a :class:`cost_models.PriceBook` (default: the bundled, dated prices).
    * ``space``: a :class:`SearchSpace`; None for :func:`default_space` (with ``devices`` and
      ``batch_sizes`` when given), which says through ``log`` (default: stderr) what it left out.
    * Every other keyword goes to :func:`optimizer.search` (``method``, ``output_dir``,
      ``n_trials``, ``timeout_s``, ``on_error``, ...).

    Misconfiguration is reported before anything runs; an ``evaluate`` that raises stops the search
    with its traceback (``on_error="skip"`` records the variant as failed and goes on).
    """
    from cost_models import CostModel, Scenario

    from profilers.own_model import from_model

    from .search import search

    if not isinstance(scenario, Scenario):
        raise invalid("optimize", "scenario", "a cost_models.Scenario (the traffic to serve, its latency target, "
                      "the horizon and the training plan)", type(scenario).__name__)
    workload = from_model(model, evaluate, example_inputs=example_inputs, train_data=train_data, loss=loss,
                          scaled_model=scaled_model, name=name, higher_is_better=higher_is_better,
                          quality_range=quality_range)
    say = log if log is not None else _stderr
    if space is None:
        space, notes = default_space(workload, devices=devices, batch_sizes=batch_sizes)
        for n in notes:
            say(f"optimize: {n}")
    elif devices is not None or batch_sizes is not None:
        raise invalid("optimize", "devices" if devices is not None else "batch_sizes",
                      "absent when a space is given (set them on the SearchSpace)", devices or batch_sizes)
    cost_model = CostModel(scenario, prices) if prices is not None else CostModel(scenario)
    return search(workload, space, cost_model, min_quality=min_quality, method=method, log=log, **search_options)


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr)
