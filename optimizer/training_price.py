"""The training plan as a price: ``profilers.parallel.plan`` priced by the cost model.

:func:`price_training` lays a decoder transformer out on a device type over the given device
counts (the cheapest layout that fits), turns its step time into the scenario's training runs and
prices them twice, rented and owned: GPU-hours (ideal and paid, through the scenario's goodput),
wall-clock days, energy, dollars. The what-if's training table and ``sigmastar plan`` both read it.

    from profilers import hardware
    from profilers.parallel import TransformerShape
    from cost_models import PriceBook, Scenario
    from cost_models.scenario import TrainingPlan
    shape = TransformerShape(layers=32, hidden=4096, heads=32, ffn_hidden=11008, vocab=32000,
                             seq_len=4096, layout="llama", tied_embeddings=False, name="llama-2-7b")
    sc = Scenario(training=TrainingPlan(samples_per_epoch=2e12, unit="tokens", tokens_per_sample=4096))
    row = price_training(shape, hardware.get("H100-SXM"), [256, 512], 1024, sc, PriceBook.default())
    row["gpu_hours_paid"], row["usd_rented"], row["usd_owned"]
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

from profilers.config import ConfigError

__all__ = ["price_training", "planned_figures", "layout_text"]


def layout_text(cfg: Any) -> str:
    """``dp8 tp2 pp4 zero1 mb1 v2 recompute=selective sp fp8``: a layout in one line."""
    return (f"dp{cfg.dp} tp{cfg.tp} pp{cfg.pp} zero{cfg.zero_stage} mb{cfg.micro_batch}"
            + (f" v{cfg.interleave}" if cfg.interleave > 1 else "")
            + (f" recompute={cfg.recompute}" if cfg.recompute != "none" else "")
            + (" sp" if cfg.sequence_parallel else "")
            + (f" {cfg.precision}" if cfg.precision not in ("bf16", "fp16") else ""))


def planned_figures(shape: Any, spec: Any, counts: Sequence[int], global_batch: int, *, precision: str,
                    usd_per_device_hour: float | None = None) -> tuple[Any, Any]:
    """``(figures, plan result)``: the cheapest layout of ``shape`` on ``counts`` x ``spec`` as the
    cost model's training figures (``figures`` None when no layout fits; the result says why).

    The figures are per device: ``batch_size`` = global batch / devices, ``train_step_s`` the planned
    step of the whole layout, ``train_devices`` its device count (so the cost model applies no flat
    scaling efficiency: device-hours = samples / batch_size x train_step_s / 3600 = samples /
    global batch x step x devices / 3600).
    """
    from cost_models.figures import ModelFigures
    from profilers.parallel import plan

    res = plan(shape, spec, list(counts), global_batch, usd_per_device_hour=usd_per_device_hour,
               precision=precision)
    if res.status != "ok":
        return None, res
    c = res.cheapest
    n, step_s, mem = c.config.devices, c.time.total_s, int(c.memory.total_bytes)
    fig = ModelFigures(device=spec.name, dtype=precision, batch_size=max(1, global_batch // n), latency_s=step_s,
                       train_step_s=step_s, peak_memory_bytes=mem, train_peak_memory_bytes=mem,
                       parameter_bytes=shape.parameters() * 2, train_devices=n,
                       provenance=f"{c.time.provenance}; layout {layout_text(c.config)} (profilers.parallel.plan, "
                                  f"cheapest of {res.feasible} fitting layouts)")
    return fig, res


def price_training(shape: Any, spec: Any, counts: Sequence[int], global_batch: int, scenario: Any, book: Any, *,
                   precision: str | None = None, label: str | None = None,
                   log: Callable[[str], None] | None = None) -> dict:
    """One row: the cheapest layout of ``shape`` on ``counts`` x ``spec`` and its price.

    Keys: ``status`` ("ok", "infeasible", "no price", "unsupported"), ``message``, ``devices``,
    ``layout``, ``config``, ``step_s``, ``mfu``, ``tokens_per_s``, ``memory_gb_per_device``,
    ``training_runs``, ``gpu_hours_ideal`` and ``gpu_hours_paid`` (all runs), ``goodput``,
    ``goodput_note``, ``wall_days_per_run``, ``energy_kwh`` (paid hours x power x PUE, all runs),
    ``usd_rented`` / ``usd_owned`` (all runs; None when the book cannot price that mode, and
    ``price_notes`` says why), ``usd_per_run``
    and ``total_usd`` in the scenario's own mode, ``breakdown``, ``figures``, ``provenance``.
    """
    from cost_models import CostModel
    from cost_models.scenario import DataPlan, PeoplePlan, ServingPlan
    from cost_models.usage import compute_usage

    label = label or shape.name or f"{shape.layers}x{shape.hidden}"
    precision = precision or ("bf16" if spec.supports("bf16") else "fp16")
    row: dict[str, Any] = {"model": label, "device": spec.name, "precision": precision,
                           "parameters": shape.parameters()}
    if not spec.supports(precision):
        return {**row, "status": "unsupported", "total_usd": math.inf,
                "message": f"{spec.name} has no {precision} peak ({', '.join(spec.peak_tflops)})"}
    own = scenario.ownership
    rent_h, no_rent = None, ""
    try:
        rent_h = book.gpu_hour(spec.name, own.rent_tier, own.provider).usd_per_unit
    except ConfigError as e:
        no_rent = str(e)
    if not own.owns and rent_h is None:
        return {**row, "status": "no price", "total_usd": math.inf, "message": no_rent}
    if log:
        log(f"planning {label} training layouts on {spec.name} ({', '.join(map(str, counts))} devices, {precision})")
    fig, res = planned_figures(shape, spec, counts, global_batch, precision=precision,
                               usd_per_device_hour=None if own.owns else rent_h)
    if fig is None:
        return {**row, "status": "infeasible", "total_usd": math.inf, "message": res.message,
                "layouts_evaluated": res.evaluated}
    c = res.cheapest
    cfg, n, step_s = c.config, c.config.devices, c.time.total_s
    layout = layout_text(cfg)
    mem = fig.train_peak_memory_bytes
    # training only: no serving, data or technique work in this price
    base = scenario.replace(serving=ServingPlan(horizon_months=scenario.serving.horizon_months), data=DataPlan(),
                            people=PeoplePlan(usd_per_hour=scenario.people.usd_per_hour), techniques=(),
                            training=dataclasses.replace(scenario.training, devices=n))

    def estimate(mode: str):
        """(breakdown, None) in ``mode``, or (None, why) when the book cannot price it."""
        sc = base if own.mode == mode else base.replace(ownership=dataclasses.replace(own, mode=mode))
        try:
            return CostModel(sc, book).estimate(fig, train_figures=fig, model_name=label), None
        except ConfigError as e:
            return None, str(e)

    rented, why_rent = estimate("rent") if rent_h is not None else (None, no_rent)
    owned, why_own = estimate("own")
    br = owned if own.owns else rented
    if br is None:
        return {**row, "status": "no price", "total_usd": math.inf, "message": why_own if own.owns else why_rent}
    runs = br.training_runs
    paid = ideal = goodput = kwh = None
    if br.ok:
        usage = compute_usage(fig, base, fig, model_name=label)
        ideal = usage.training_device_hours
        paid = ideal / usage.goodput
        goodput = usage.goodput
        # energy of the busy hours, whoever pays it (the owned breakdown prices it; rent includes it)
        kwh = paid * usage.train_power_watts * own.pue / 1000.0
    return {**row, "status": br.status, "message": br.message, "devices": n, "layout": layout, "config": cfg,
            "step_s": step_s, "mfu": c.time.mfu, "tokens_per_s": c.time.tokens_per_s,
            "memory_gb_per_device": mem / 1e9, "training_runs": runs,
            "gpu_hours_ideal": ideal, "gpu_hours_paid": paid, "goodput": goodput,
            "wall_days_per_run": paid / max(runs, 1) / n / 24.0 if paid is not None else None, "energy_kwh": kwh,
            "usd_rented": rented.total_usd if rented else None, "usd_owned": owned.total_usd if owned else None,
            "price_notes": "; ".join(w for w in (why_rent if rented is None else None,
                                                 why_own if owned is None else None) if w),
            "usd_per_run": br.usd_per_training_run, "total_usd": br.total_usd, "breakdown": br, "figures": fig,
            "provenance": fig.provenance, "layouts_evaluated": res.evaluated, "layouts_fitting": res.feasible}
