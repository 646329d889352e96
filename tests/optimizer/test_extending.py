"""Extending sigmastar touches no other module: a new technique is one config dataclass and one
registered handler, a new search dimension is one declared field, a new search method is one
registered class. Everything here goes through the public API only."""

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from optimizer import SearchSpace, search
from optimizer.methods import METHODS, Outcome, SearchMethod, register_method
from optimizer.space import knob
from profilers.config import ConfigError, serializable
from profilers.techniques import ApplyRecord, Technique, apply, register


@serializable("test_extending.snap")
@dataclass(frozen=True)
class Snap(Technique):
    """A toy weight-sharing technique: every floating weight snapped to a grid of ``step``."""

    step: float = 0.1
    stage: ClassVar[int] = 2
    post_training: ClassVar[bool] = True

    @property
    def cost_key(self) -> str:
        return "quantize_int8"  # the engineering work of a post-training weight format

    def short_label(self) -> str:
        return f"snap_{self.step:g}"


@register(Snap)
def _snap(model, t, ctx):
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.copy_(torch.round(p / t.step) * t.step)
    return model, ApplyRecord(technique="", seconds=0.0, notes=(f"weights snapped to a grid of {t.step:g}",))


@serializable("test_extending.space")
@dataclass(frozen=True)
class SnapSpace(SearchSpace):
    snap: tuple[float, ...] = knob((0.0,), off=0.0, tag="s", allowed="a grid step in [0, 10] (0 = off)",
                                   check=lambda v: isinstance(v, (int, float)) and 0 <= v <= 10,
                                   technique=lambda space, v: Snap(step=v), describe=lambda v: f"snap to {v:g}")


SPACE = SnapSpace(prune_amount=(0.0,), snap=(0.0, 0.05, 0.5, 4.0), devices=("T4",), batch_sizes=(64,))


def test_the_toy_technique_is_applied_through_the_one_verb(wl):
    base = wl.build()
    out = apply(base, Snap(step=0.5), wl, cache=False)
    w = next(out.parameters())
    assert torch.equal(w, torch.round(w / 0.5) * 0.5)
    assert not torch.equal(next(base.parameters()), w)  # the input is not mutated


def test_the_toy_dimension_is_a_knob_with_its_own_validation():
    assert [n for n, _ in SnapSpace.knob_fields()] == ["distill_width", "prune_amount", "quantize", "snap"]
    assert SPACE.size == 4 and SPACE.snap == (0.0, 0.05, 0.5, 4.0)
    v = SPACE.variants()[2]
    assert v.key == "w1-p0-qnone-s0.5" and v.label == "snap to 0.5" and v.snap == 0.5
    assert SPACE.techniques(v) == [Snap(step=0.5)] and SPACE.cost_keys(v) == ("quantize_int8",)
    with pytest.raises(ConfigError, match=r"^SnapSpace\.snap\[1\] must be a grid step in \[0, 10\] \(0 = off\); "
                                          r"got 11\.$"):
        SnapSpace(snap=(0.0, 11))


def test_search_over_the_toy_dimension_lazy_matches_exhaustive(wl, cost_model, tmp_path):
    ex = search(wl, SPACE, cost_model, min_quality=0.9, method="exhaustive", profile_time_cap_s=0.1,
                output_dir=tmp_path, raise_infeasible=False)
    lazy = search(wl, SPACE, cost_model, min_quality=0.9, method="lazy", profile_time_cap_s=0.1,
                  output_dir=tmp_path, raise_infeasible=False)
    by_variant = {t.variant: t for t in ex.trials}
    # the coarsest grid destroys the model: measured, not assumed
    assert by_variant["w1-p0-qnone-s4"].quality < 0.5 <= by_variant["w1-p0-qnone-s0"].quality
    assert lazy.best is not None and ex.best is not None and lazy.best.variant == ex.best.variant
    assert lazy.status == "optimal"


class CheapestFirst(SearchMethod):
    name = "test-cheapest-first"
    summary = "evaluate variants cheapest first; stop at the first feasible one"

    def run(self, ctx):
        ctx.price_all()
        for v in sorted(ctx.variants, key=lambda v: ctx.ev.price(v).cost_usd):
            if not ctx.ev.price(v).feasible:
                continue
            q = ctx.ev.quality(v)
            if q is not None and q >= ctx.min_quality:
                return Outcome("optimal", "the cheapest feasible variant, by price order")
        return Outcome("infeasible", "no variant meets the target")


def test_a_new_method_is_one_registered_class(wl, cost_model, tmp_path):
    register_method(CheapestFirst)
    try:
        res = search(wl, SPACE, cost_model, min_quality=0.9, method="test-cheapest-first", profile_time_cap_s=0.1,
                     output_dir=tmp_path, raise_infeasible=False)
        assert res.method == "test-cheapest-first" and res.best is not None
        with pytest.raises(ConfigError, match=r"^search\.n_trials must be absent with method 'test-cheapest-first'"):
            search(wl, SPACE, cost_model, min_quality=0.9, method="test-cheapest-first", n_trials=3)
    finally:
        METHODS.pop(CheapestFirst.name)
    with pytest.raises(ConfigError, match=r"^search\.method must be one of 'lazy', 'exhaustive', 'tpe', 'random', 'nsga2', 'layerwise'; "):
        search(wl, SPACE, cost_model, min_quality=0.9, method="test-cheapest-first")
