"""Verify a layer-wise assignment on the real model, and tighten until it meets the target quality.

``solve_layerwise`` adds up per-layer sensitivities; compressing several layers at once can lose
more (or less) than the sum. :func:`verify_layerwise` closes that loop on measurements:

1. minimize a cost total (``objective``, bytes by default) with total predicted sensitivity capped
   at ``base quality - target_quality`` (and any other ``budgets``);
2. assemble the model with every layer's chosen choice and measure its quality on the workload's
   held-out data (and its deployed bytes);
3. if the measured quality is below the target by ``shortfall``, tighten and re-solve:

   * ``tighten="cap"`` (default): the next cap is the failed assignment's predicted total times
     ``allowance / measured drop`` (``allowance = base - target``: the prediction is taken to be off
     by the ratio just measured), or its predicted total minus the shortfall when that total is <= 0;
   * ``tighten="correct"``: the failed assignment's unexplained loss (measured drop minus predicted)
     is added, in equal parts, to the sensitivities of its compressed layers' choices (so that
     assignment's corrected total equals its measured drop); the cap stays.

Either way the failed assignment (and every earlier one) exceeds the new cap, so the loop never
repeats an assignment; it stops when the measured quality meets the target, when no assignment
satisfies the tightened problem (``"exhausted"``: keeping every layer unchanged still meets the
target), or after ``max_rounds``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from profilers.config import check_choice, invalid, serializable

__all__ = ["TIGHTEN", "LayerwiseVerifyResult", "VerifyRound", "verify_layerwise"]

OWNER = "verify_layerwise"
TIGHTEN = ("cap", "correct")


@serializable("layerwise_verify_round", 1)
@dataclass(frozen=True)
class VerifyRound:
    """One solve -> assemble -> measure round."""

    index: int
    sensitivity_cap: float
    solve_status: str
    solve_message: str
    assignment: dict[str, str]  # empty when the solve found none
    predicted_sensitivity: float | None  # sum of the chosen options' sensitivities (as given, uncorrected)
    predicted_quality: float | None  # base quality - predicted_sensitivity
    totals: dict[str, float]  # the solver's totals (with this round's corrections in "sensitivity")
    measured_quality: float | None  # the assembled model, measured
    measured_bytes: int | None  # the assembled model's deployed bytes, measured
    seconds: float  # solve + assemble + measure


@serializable("layerwise_verify_result", 1)
@dataclass(frozen=True)
class LayerwiseVerifyResult:
    status: str  # "met" | "exhausted" | "max_rounds"
    message: str
    target_quality: float
    base_quality: float
    quality_metric: str
    objective: str
    tighten: str
    rounds: tuple[VerifyRound, ...]
    assignment: dict[str, str]  # the assignment that met the target; empty otherwise
    measured_quality: float | None
    model_bytes: int | None  # deployed bytes of the final model, measured
    fp32_bytes: int  # deployed bytes of the unchanged model
    provenance: str

    @property
    def ok(self) -> bool:
        return self.status == "met"


def _check(workload, profile, target_quality, objective, budgets, tighten, max_rounds, options):
    from profilers.layer_profile import KEEP, LayerProfile
    from profilers.workload import Workload

    if not isinstance(workload, Workload):
        raise invalid(OWNER, "workload", "a profilers.Workload", type(workload).__name__)
    if not isinstance(profile, LayerProfile):
        raise invalid(OWNER, "profile", "a LayerProfile from profilers.profile_layers", type(profile).__name__)
    if profile.workload != workload.name:
        raise invalid(OWNER, "profile", f"a profile of workload {workload.name!r}", profile.workload)
    t = target_quality
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t > profile.base_quality:
        raise invalid(OWNER, "target_quality", f"a finite number <= the unchanged model's quality "
                      f"{profile.base_quality:.6g} ({profile.quality_metric or 'evaluate()'})", t)
    check_choice(OWNER, "tighten", tighten, TIGHTEN)
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise invalid(OWNER, "max_rounds", "an integer >= 1", max_rounds)
    if not isinstance(budgets, Mapping):
        raise invalid(OWNER, "budgets", "a mapping of cost term -> cap", budgets)
    if objective == "sensitivity":
        raise invalid(OWNER, "objective", "a cost term such as 'bytes' (sensitivity is capped by target_quality)",
                      objective)
    if not isinstance(options, Mapping) or not options:
        raise invalid(OWNER, "options", "None (the profile's) or a non-empty mapping of layer -> {choice: option}",
                      options)
    for layer, choices in options.items():
        if layer not in profile.layers:
            raise invalid(OWNER, "options", f"layers of the profile {list(profile.layers)}", layer)
        for c in choices:
            if c != KEEP and c not in profile.choice_configs:
                raise invalid(OWNER, f"options[{layer!r}]", "labels of the profile's choices ("
                              + ", ".join(repr(x) for x in profile.choices) + ")", c)


def _sensitivity(option: Any) -> float:
    return option.sensitivity if hasattr(option, "sensitivity") else float(option["sensitivity"])


def _with_correction(options: Mapping, correction: Mapping[tuple[str, str], float]) -> dict:
    from .layerwise import LayerOption, _as_option

    out = {}
    for layer, choices in options.items():
        out[layer] = {}
        for c, o in choices.items():
            o = _as_option(layer, c, o)
            extra = correction.get((layer, c), 0.0)
            out[layer][c] = LayerOption(o.costs, o.sensitivity + extra) if extra else o
    return out


def verify_layerwise(workload, profile, *, target_quality: float, objective: str = "bytes",
                     budgets: Mapping[str, float] | None = None, tighten: str = "cap", max_rounds: int = 8,
                     options: Mapping[str, Mapping[str, Any]] | None = None, solver: str = "highs",
                     time_limit_s: float | None = None) -> LayerwiseVerifyResult:
    """The cheapest assignment (``objective``) whose *measured* quality is at least ``target_quality``.

    ``profile``: a :class:`profilers.LayerProfile` of ``workload`` (from ``profilers.profile_layers``).
    ``options``: the per-layer options to solve with (default ``profile.options()``); e.g. sensitivities
    from a Hessian-trace estimate, verified here on the real model all the same. ``budgets``: further
    caps on cost terms (e.g. ``{"flops": ...}``). See the module docstring for ``tighten``.
    """
    from profilers.layer_profile import KEEP, assemble_layers, deployed_bytes
    from profilers.techniques import TechniqueCache, quality

    from .layerwise import solve_layerwise

    budgets = {} if budgets is None else budgets
    options = profile.options() if options is None and hasattr(profile, "options") else options
    _check(workload, profile, target_quality, objective, budgets, tighten, max_rounds, options)
    base = workload.build()
    if TechniqueCache.fingerprint(base) != profile.model_fingerprint:
        raise invalid(OWNER, "profile", "a profile of the model workload.build() returns now (its weights "
                      "changed since profiling: profile again)", profile.model_fingerprint[:12])
    allowance = profile.base_quality - float(target_quality)
    cap, correction = allowance, {}
    rounds: list[VerifyRound] = []
    status = "max_rounds"
    for i in range(max_rounds):
        t0 = time.perf_counter()
        r = solve_layerwise(_with_correction(options, correction), budgets=budgets, objective=objective,
                            sensitivity_cap=cap, solver=solver, time_limit_s=time_limit_s)
        if not r.ok:
            rounds.append(VerifyRound(i, cap, r.status, r.message, {}, None, None, {}, None, None,
                                      time.perf_counter() - t0))
            status = "exhausted"
            break
        predicted = math.fsum(_sensitivity(options[l][c]) for l, c in r.assignment.items())
        model = assemble_layers(base, r.assignment, choices=profile.choice_configs, workload=workload)
        q = quality(model, workload)
        rounds.append(VerifyRound(i, cap, r.status, r.message, dict(r.assignment), predicted,
                                  profile.base_quality - predicted, dict(r.totals), q, deployed_bytes(model),
                                  time.perf_counter() - t0))
        if q >= target_quality:
            status = "met"
            break
        drop, total = profile.base_quality - q, r.totals["sensitivity"]
        if tighten == "cap":
            cap = total * allowance / drop if total > 0 else total - (target_quality - q)
        else:
            changed = [(l, c) for l, c in r.assignment.items() if c != KEEP]
            residual = drop - total
            for key in changed:
                correction[key] = correction.get(key, 0.0) + residual / len(changed)
    final = rounds[-1] if status == "met" else None
    fp32 = profile.fp32_bytes()
    n = len(rounds)
    if final is not None:
        message = (f"Met: measured quality {final.measured_quality:.6g} >= target {target_quality:.6g} after {n} "
                   f"round(s); {final.measured_bytes:,} bytes ({final.measured_bytes / fp32:.1%} of fp32).")
    elif status == "exhausted":
        message = (f"No assignment left after {n} round(s): the tightened problem is infeasible: "
                   f"{rounds[-1].solve_message} To fix: keep every layer '{KEEP}' (quality "
                   f"{profile.base_quality:.6g}), lower target_quality or profile more choices.")
    else:
        message = (f"Target {target_quality:.6g} not met in {max_rounds} round(s) (best measured "
                   f"{max((x.measured_quality for x in rounds if x.measured_quality is not None), default=math.nan):.6g})."
                   " To fix: raise max_rounds (every round rules out the assignments that fell short).")
    provenance = (f"{profile.provenance}. Each round's model assembled from those choices and measured the same way "
                  f"(quality on the same held-out data the sensitivities came from).")
    return LayerwiseVerifyResult(
        status=status, message=message, target_quality=float(target_quality), base_quality=profile.base_quality,
        quality_metric=profile.quality_metric, objective=objective, tighten=tighten, rounds=tuple(rounds),
        assignment=dict(final.assignment) if final else {}, measured_quality=final.measured_quality if final else None,
        model_bytes=final.measured_bytes if final else None, fp32_bytes=fp32, provenance=provenance)
