"""The ``layerwise`` search method: one choice per layer instead of one per model.

1. **Measure** every (layer, choice) with :func:`profilers.profile_layers`: the quality drop when
   only that layer changes, its deployed bytes and FLOPs (cached in ``<output>/layer_profile.json``).
   A choice is a technique config (``Quantize("int8_weight_only")``, ``Prune("l1_unstructured",
   amount=0.5)``, ...) restricted to one layer with ``t.on(layer)``.
2. **Solve and verify** with :func:`optimizer.verify_layerwise`: the exact ILP minimizes the
   deployed bytes subject to the summed sensitivities staying within ``base - min_quality`` (and
   ``max_bytes`` when given); the assembled model is measured and the cap tightened until the
   *measured* quality meets the target.
3. **Price** the assembled model like any variant: its techniques (each choice on its layers) go
   through the same ``apply``, ``measure``, projection and cost model as every other strategy,
   and its quality is measured again by the same evaluator (journaled like any evaluation).

Budgets: the ILP's is in bytes (``max_bytes``); the method's own compute is capped like every
method's (``budget_usd``, ``timeout_s``, ``max_evaluations``), checked before each stage (profiling,
solving and verifying, pricing). The ILP's objective is bytes, not dollars (a per-layer dollar term is not additive: a layer's share
of the serving cost depends on the whole model's latency). So the unchanged model, also an
assignment, is priced and measured too, and the answer is the cheaper in dollars of the two that
meet the target. It is not certified against the whole knob space (status "best found"); the
report lists the verification rounds.
"""

from __future__ import annotations

from typing import Any

from profilers.config import invalid

from .methods import Outcome, SearchContext, SearchMethod, register_method

__all__ = ["Layerwise", "layerwise_variant", "check_layer_choices"]


def check_layer_choices(choices: Any, owner: str = "search", field_name: str = "layer_choices") -> tuple:
    """Technique configs that take a layer selector (``Quantize``, ``Prune``), in the one error format."""
    from profilers.techniques import Technique

    if isinstance(choices, (str, bytes)) or not hasattr(choices, "__iter__") or not list(choices):
        raise invalid(owner, field_name, "a non-empty list of technique configs that take a layer selector "
                      "(e.g. Quantize('int8_weight_only'), Prune('l1_unstructured', amount=0.5))", choices)
    out = tuple(choices)
    for i, c in enumerate(out):
        if not isinstance(c, Technique) or not c.selectable:
            raise invalid(owner, f"{field_name}[{i}]", "a technique config that takes a layer selector "
                          "(Quantize or Prune)", c)
    return out


def layerwise_variant(assignment: dict[str, str], configs: dict[str, Any]) -> Any:
    """A :class:`~optimizer.space.Variant` holding the assignment's techniques: each choice's
    config on the layers that took it, in composition order."""
    from .space import Variant

    by_label: dict[str, list[str]] = {}
    for layer, label in sorted(assignment.items()):
        if label in configs:
            by_label.setdefault(label, []).append(layer)
    techniques = tuple(sorted((configs[c].on(*layers) for c, layers in sorted(by_label.items())),
                              key=lambda t: t.stage))
    parts = [f"{c} on {len(layers)} layer{'s' if len(layers) != 1 else ''}" for c, layers in sorted(by_label.items())]
    key = "layerwise-" + "-".join(f"{c}x{len(layers)}" for c, layers in sorted(by_label.items())) if parts \
        else "layerwise-unchanged"
    return Variant(knobs=(), values=(), techniques=techniques, name=key,
                   description="layer-wise: " + (", ".join(parts) if parts else "every layer unchanged"))


@register_method
class Layerwise(SearchMethod):
    name = "layerwise"
    rank = 5
    summary = ("one choice per layer: measured per-layer sensitivities and bytes, an exact ILP for the fewest "
               "deployed bytes, the assembled model measured and the ILP tightened until it meets the target")
    options = frozenset({"layer_choices", "max_bytes"})

    def run(self, ctx: SearchContext) -> Outcome:
        from profilers import profile_layers
        from profilers.layer_profile import DEFAULT_CHOICES

        from .layerwise_verify import verify_layerwise

        choices = ctx.options.get("layer_choices") or DEFAULT_CHOICES
        base = next(v for v in ctx.variants if not any(v.knobs))
        ctx.ev.price(base)
        reason = ctx.stop()
        if reason:
            return Outcome("best found", f"stopped before profiling the layers: {reason}", stopped=True)
        # every layer unchanged is an assignment too: its dollars compete with the verified one's
        # (the ILP minimizes bytes; fewer bytes need not cost fewer dollars)
        ctx.ev.quality(base)
        cache = ctx.output_dir / "layer_profile.json" if ctx.output_dir is not None else None
        prof = profile_layers(ctx.workload, choices=choices, cache_path=cache)
        if ctx.min_quality > prof.base_quality:
            return Outcome("infeasible", f"the unchanged model measures {prof.base_quality:.6g}, below the target "
                           f"{ctx.min_quality:g}: no per-layer choice can raise it")
        reason = ctx.stop()
        if reason:
            return Outcome("best found", f"stopped after profiling the layers, before solving: {reason}", stopped=True)
        budgets = {"bytes": float(ctx.options["max_bytes"])} if "max_bytes" in ctx.options else {}
        vr = verify_layerwise(ctx.workload, prof, target_quality=ctx.min_quality, objective="bytes", budgets=budgets)
        rounds = tuple({"round": r.index, "sensitivity_cap": r.sensitivity_cap, "solve": r.solve_status,
                        "assignment": dict(r.assignment), "predicted_quality": r.predicted_quality,
                        "measured_quality": r.measured_quality, "measured_bytes": r.measured_bytes}
                       for r in vr.rounds)
        summary = (f"layer-wise over {len(prof.layers)} layers x {len(prof.choices)} choices "
                   f"({prof.measured} measured, {prof.from_cache} from cache); verify: {vr.status}, {vr.message}")
        if not vr.ok:
            return Outcome("infeasible", summary, layerwise=rounds)
        v = layerwise_variant(vr.assignment, prof.choice_configs)
        ctx.variants.append(v)
        ctx.ev.price(v)
        if ctx.progress is not None:
            ctx.progress(1, 1, v, None, ctx.ev.price(v).cost_usd)
        ctx.ev.quality(v)  # the assembled model, measured by the same evaluator as every strategy
        return Outcome("best found", summary, layerwise=rounds)
