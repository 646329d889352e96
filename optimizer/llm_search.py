"""The LLM serving search: weight format x KV format x tensor parallelism x batch x device x rent/own.

For each model of an ``[llm]`` job table (:class:`LLMSpace`), every combination is priced with
:func:`profilers.llm.serve` (continuous batching under the job's TTFT / TPOT targets for its request
mix) and the job's cost model: serving compute or, when owned, hardware and energy; the engineering
hours and calibration data of the format (``cost_models/data/techniques.toml``); the answer is the
cheapest total whose quality meets ``max_quality_loss``.

Quality comes from :mod:`profilers.llm_quality`: published effects of each format on the model's
family and size (perplexity or accuracy against the same source's fp16 figure), labelled
"published". A weight or KV format with no published row for the family is "quality unknown" and
never chosen (it is listed with that reason); bf16/fp16 weights with a bf16/fp16 KV cache are the
baseline.

Every configuration is priced analytically (no model is built), so thousands take seconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from profilers.config import check_choice, check_int, check_list, invalid, serializable

__all__ = ["LLMSpace", "LLMResult", "run_llm", "family_of"]

_BASELINE = ("bf16", "fp16")
#: sanity bounds of an [llm] table (checked without pricing): GPUs one model is split over, sequences
#: decoding at once (and an int4 quantization group)
MAX_TP = 1024
MAX_BATCH = 65536


def _gpu(field_: str, v: Any) -> str:
    from .whatif import _gpu as gpu

    try:
        return gpu(field_, v)
    except Exception as e:  # re-owned: the message names LLMSpace
        raise invalid("LLMSpace", field_, str(e).split(" must be ", 1)[1].split("; got")[0], v) from None


def _model(field_: str, v: Any) -> str:
    """A config name, or a config.json path (relative to the job file's folder, kept resolved)."""
    from profilers import llm
    from profilers.config import ConfigError, resolve_path

    if not isinstance(v, str) or not v.strip():
        raise invalid("LLMSpace", field_, "a config name (e.g. 'llama-2-7b') or a config.json path", v)
    p = resolve_path(v)
    if v.lower() not in llm.CONFIGS and p.is_file():
        v = str(p.resolve())
    try:
        llm.shape_of(v)
    except ConfigError as e:  # the llm module's message names what is allowed
        raise invalid("LLMSpace", field_, str(e).split(" must be ", 1)[-1].split("; got")[0], v) from None
    except RecursionError:
        raise invalid("LLMSpace", field_, "a config.json that parses (this one nests too deep to read)", v) from None
    except Exception as e:  # noqa: BLE001 - a config whose fields do not describe a decoder
        raise invalid("LLMSpace", field_, f"a decoder's config.json (reading it raised {type(e).__name__}: {e})",
                      v) from None
    return v


def _count(field_: str, v: Any, most: int) -> int:
    """An integer >= 1, and at most ``most`` (a sanity bound: past it, a typo)."""
    check_int("LLMSpace", field_, v, 1)
    return check_int("LLMSpace", field_, v, 1, most)


@serializable("llm_space")
@dataclass(frozen=True)
class LLMSpace:
    """What an LLM serving search may choose (a job's ``[llm]`` table).

    ``models``: config names (``llama-2-7b``, ``llama-2-70b``, ``llama-3-8b`` ...; see
    ``profilers.llm.CONFIGS``) or config.json paths; ``devices``: catalog GPUs; ``weights`` and
    ``kv``: formats (``profilers.llm.FORMATS`` / ``KV_DTYPES``); ``tp``: tensor-parallel degrees;
    ``batches``: sequences decoding at once; ``ownership``: "rent" and/or "own";
    ``max_quality_loss``: the largest published relative quality loss allowed (0.02 = perplexity up
    2 % or accuracy down 2 % against the same source's fp16 figure); ``runtime``: "fused" (serving
    engines) or "eager"; ``group_size``: int4 weights' quantization group; ``pool``: also price the
    cheapest mix of device types (``optimizer.plan_fleet``) for the chosen format.
    """

    models: tuple[str, ...] = ("llama-2-7b",)
    devices: tuple[str, ...] = ("L4", "A10G", "A100-80GB", "H100-SXM")
    weights: tuple[str, ...] = ("bf16", "fp8", "int8_weight_only", "int8_dynamic", "int4_weight_only")
    kv: tuple[str, ...] = ("bf16", "fp8", "int8")
    tp: tuple[int, ...] = (1, 2, 4, 8)
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    ownership: tuple[str, ...] = ("rent",)
    max_quality_loss: float = 0.02
    runtime: str = "fused"
    group_size: int = 128
    pool: bool = False

    def __post_init__(self) -> None:
        from profilers import llm

        o = "LLMSpace"
        object.__setattr__(self, "models", check_list(o, "models", self.models, _model))
        object.__setattr__(self, "devices", check_list(o, "devices", self.devices, _gpu))
        object.__setattr__(self, "weights", check_list(
            o, "weights", self.weights, lambda f, v: (check_choice(o, f, v, tuple(llm.FORMATS)), v)[1]))
        object.__setattr__(self, "kv", check_list(
            o, "kv", self.kv, lambda f, v: (check_choice(o, f, v, tuple(llm.KV_DTYPES)), v)[1]))
        object.__setattr__(self, "tp", check_list(o, "tp", self.tp, lambda f, v: _count(f, v, MAX_TP)))
        object.__setattr__(self, "batches", check_list(o, "batches", self.batches,
                                                       lambda f, v: _count(f, v, MAX_BATCH)))
        object.__setattr__(self, "ownership", check_list(
            o, "ownership", self.ownership, lambda f, v: (check_choice(o, f, v, ("rent", "own")), v)[1]))
        if not isinstance(self.max_quality_loss, (int, float)) or isinstance(self.max_quality_loss, bool) \
                or not 0 <= self.max_quality_loss < 1:
            raise invalid(o, "max_quality_loss", "a fraction in [0, 1) (0.02: at most 2 % worse than fp16)",
                          self.max_quality_loss)
        check_choice(o, "runtime", self.runtime, ("eager", "fused"))
        _count("group_size", self.group_size, MAX_BATCH)
        if not isinstance(self.pool, bool):
            raise invalid(o, "pool", "true or false", self.pool)

    @property
    def size(self) -> int:
        return (len(self.models) * len(self.devices) * len(self.weights) * len(self.kv) * len(self.tp)
                * len(self.batches) * len(self.ownership))

    def device_list(self) -> list[str]:
        return list(self.devices)


def family_of(model: str) -> tuple[str, float] | None:
    """(family, size in billions) of a config name such as ``llama-2-70b`` (None: not of that form)."""
    import re

    m = re.match(r"^(.*?)-(\d+(?:\.\d+)?)b$", Path(str(model)).name.lower().removesuffix(".json"))
    return (m.group(1), float(m.group(2))) if m else None


def _quality(model: str, weights: str, kv: str, act: str) -> tuple[float | None, str, tuple]:
    """(relative loss or None when unknown, where it comes from, published rows)."""
    if weights in _BASELINE + ("fp32",) and kv in (act, "bf16", "fp16", "fp32"):
        return 0.0, "baseline (the released weights)", ()
    from profilers import llm_quality

    fam = family_of(model)
    if fam is None:
        return None, f"quality unknown: no family/size in the name {model!r}", ()
    loss, srcs, rows = 0.0, [], []
    parts = []
    if weights not in _BASELINE + ("fp32",):
        parts.append((weights, ""))
    if kv not in (act, "bf16", "fp16", "fp32"):
        parts.append(("fp16", kv))
    for fmt, kvd in parts:
        eff = llm_quality.quality_effect(fam[0], fam[1], fmt, kv_dtype=kvd)
        if eff is None:
            what = f"{fmt} weights" if not kvd else f"{kvd} KV cache"
            return None, f"quality unknown: no published effect of {what} on {fam[0]} {fam[1]:g}B", ()
        rel = eff.relative_change
        loss += -rel if eff.higher_is_better else rel
        srcs.append(f"{eff.metric} {eff.baseline_value:g} -> {eff.value:g} ({eff.source}, {eff.date})")
        rows.extend(eff.rows)
    how = "published: " + "; ".join(srcs) + (" (effects added)" if len(parts) > 1 else "")
    return loss, how, tuple(rows)


@serializable("llm_result")
@dataclass(frozen=True)
class LLMResult:
    """Per model: the cheapest qualifying configuration (``best``), every priced row, and why the
    others lost. Costs are totals over the scenario's horizon (USD)."""

    job_name: str
    best: dict[str, dict]  # model -> row
    rows: tuple[dict, ...]
    configurations: int  # priced (every combination that the device and model allow)
    rejected: dict[str, int]  # reason -> count
    seconds: float
    notes: tuple[str, ...] = ()
    rivals: dict[str, list] = field(default_factory=dict)  # model -> rows whose cost band overlaps the best's
    pools: dict[str, dict] = field(default_factory=dict)


def run_llm(job: Any, *, log: Callable[[str], None] | None = None,
            progress: Callable[[int, int], None] | None = None) -> LLMResult:
    """Price every configuration of ``job.llm`` for the job's scenario and pick the cheapest per model."""
    from cost_models import CostModel, ModelFigures, Scenario
    from profilers import hardware, llm
    from profilers.config import ConfigError

    t0 = time.perf_counter()
    sp: LLMSpace = job.llm
    sc: Scenario = job.scenario
    serving = sc.serving
    mix = _mix(job)
    i_mean, o_mean = mix.mean()
    book = job.prices()
    rows, rejected = [], {}
    total = sp.size
    done = 0

    def reject(why: str, n: int = 1) -> None:
        rejected[why] = rejected.get(why, 0) + n

    for model in sp.models:
        shape = llm.shape_of(model)
        for device in sp.devices:
            spec = hardware.get(device)
            for weights in sp.weights:
                f = llm.FORMATS[weights]
                for kv in sp.kv:
                    q, q_how, q_rows = _quality(model, weights, kv, f.act)
                    # the engineering and data of each quantized piece (a KV format shares its dtype's row)
                    techs = tuple(sorted(t for t in {f.technique, "quantize_fp8" if kv == "fp8" else "",
                                                     "quantize_int8" if kv == "int8" else ""} if t))
                    for tp in sp.tp:
                        for batch in sp.batches:
                            done += 1
                            if progress and done % 500 == 0:
                                progress(done, total)
                            try:
                                s = llm.serve(shape, spec, mix, weights=weights, kv=kv, tp=tp, batch=batch,
                                              ttft_slo_s=serving.ttft_slo_s, tpot_slo_s=serving.tpot_slo_s,
                                              runtime=sp.runtime, group_size=sp.group_size)
                            except ConfigError as e:
                                reject(str(e).split(";")[0].split(" (")[0], len(sp.ownership))
                                continue
                            if not s.meets_slo:
                                reject("misses a target or memory" if s.fits_memory else "does not fit in memory",
                                       len(sp.ownership))
                                continue
                            lat = batch / s.requests_per_s
                            fig = ModelFigures(
                                device=spec.name, dtype=f.act, batch_size=batch, latency_s=lat, train_step_s=None,
                                peak_memory_bytes=int(s.memory_per_gpu_bytes), train_peak_memory_bytes=None,
                                parameter_bytes=int(llm.weight_bytes(shape, weights, sp.group_size)),
                                provenance=s.provenance, latency_band_s=(lat * s.band[0], lat * s.band[1]),
                                devices_per_replica=tp)
                            for own in sp.ownership:
                                scen = sc.replace(techniques=techs, serving__samples_per_request=1.0,
                                                  ownership__mode=own)
                                try:
                                    br = CostModel(scen, book).estimate(fig, model_name=shape.name)
                                except ConfigError as e:  # e.g. no purchase price to own this device
                                    reject(str(e).split(";")[0][:100])
                                    continue
                                if not br.ok:
                                    reject(br.message.split(";")[0][:80])
                                    continue
                                lo, mid, hi = br.band_usd
                                tokens_out = serving.avg_requests_per_s * o_mean * serving.horizon_hours * 3600
                                rows.append(dict(
                                    model=shape.name, device=spec.name, weights=weights, kv=kv, tp=tp, batch=batch,
                                    ownership=own, replicas=br.replicas, gpus=br.replicas * tp, total_usd=mid,
                                    band_usd=(lo, hi), components=br.components,
                                    usd_per_m_output=mid / tokens_out * 1e6 if tokens_out else math.inf,
                                    usd_per_m_input=(mid * s.prefill_share / (tokens_out * i_mean / o_mean) * 1e6
                                                     if tokens_out else math.inf),
                                    ttft_p90_s=s.ttft_p90_s, tpot_p90_s=s.tpot_p90_s,
                                    tokens_per_s=s.output_tokens_per_s, requests_per_s=s.requests_per_s, quality_loss=q, quality=q_how,
                                    quality_rows=q_rows, provenance=s.provenance))
    best, rivals = {}, {}
    for model in {r["model"] for r in rows}:
        ok = [r for r in rows if r["model"] == model and r["quality_loss"] is not None
              and r["quality_loss"] <= sp.max_quality_loss]
        if not ok:
            continue
        b = min(ok, key=lambda r: r["total_usd"])
        best[model] = b
        # other formats / devices / ownerships whose band overlaps the best's (one per kind of choice)
        seen, rv = set(), []
        for r in sorted(ok, key=lambda r: r["total_usd"]):
            key = (r["device"], r["weights"], r["kv"], r["tp"], r["ownership"])
            if r is b or key in seen or key == (b["device"], b["weights"], b["kv"], b["tp"], b["ownership"]):
                continue
            seen.add(key)
            if r["band_usd"][0] <= b["band_usd"][1]:
                rv.append(r)
        rivals[model] = rv[:5]
    for r in rows:
        if r["quality_loss"] is None:
            reject(r["quality"])
        elif r["quality_loss"] > sp.max_quality_loss:
            reject(f"published quality loss above max_quality_loss ({sp.max_quality_loss:g})")
    notes = (f"request mix: mean {i_mean:.0f} input / {o_mean:.0f} output tokens per request"
             + (f" (from {serving.request_mix})" if serving.request_mix else ""),
             "TTFT and TPOT targets are checked at the 90th percentile of the mix (profilers.llm.serve); times are "
             "calibrated projections with an 80 % band",
             "quality: published effects (profilers/data/llm_quality.csv), never measured here for these models")
    pools = _pools(best, rows, sc, book) if sp.pool else {}
    if log:
        log(f"priced {len(rows)} feasible of {total} configurations in {time.perf_counter() - t0:.1f} s")
    return LLMResult(job_name=job.name, best=best, rows=tuple(rows), configurations=total, rejected=rejected,
                     seconds=time.perf_counter() - t0, notes=notes, rivals=rivals, pools=pools)


def _mix(job: Any):
    from profilers import llm

    s = job.scenario.serving
    if s.request_mix:
        p = Path(s.request_mix)
        if not p.is_absolute():
            p = job.base_dir / p
        return llm.RequestMix.read(p)
    if s.input_tokens is None:
        raise invalid("Job", "scenario.serving.input_tokens", "given (with output_tokens) or a request_mix file in an "
                      "'llm' job (token-level serving)", None)
    return llm.RequestMix.fixed(s.input_tokens, s.output_tokens)


def _pools(best: dict, rows: list, sc: Any, book: Any) -> dict:
    """For each model's best format: the cheapest mix of device types (rented) for the peak rate."""
    from cost_models.components import device_hour_rate

    from .fleet import Demand, DeviceOffer, plan_fleet

    out = {}
    s = sc.serving
    for model, b in best.items():
        offers = []
        for device in sorted({r["device"] for r in rows if r["model"] == model}):
            cands = [r for r in rows if r["model"] == model and r["device"] == device and r["weights"] == b["weights"]
                     and r["kv"] == b["kv"] and r["ownership"] == "rent"]
            if not cands:
                continue
            c = min(cands, key=lambda r: r["total_usd"])
            rate, src = device_hour_rate(device, sc.replace(ownership__mode="rent"), book)
            offers.append(DeviceOffer(f"{device} x{c['tp']}", rate * c["tp"], {model: c["requests_per_s"]},
                                      {model: f"{c['provenance']}; price {src}"}))
        if len(offers) < 2:
            continue
        plan = plan_fleet([Demand(model, s.peak_rps)], offers)
        if plan.ok and plan.usd_per_hour is not None:
            out[model] = {"devices": {d: n for d, n in plan.devices.items() if n},
                          "serving_usd": plan.usd_per_hour * s.horizon_hours, "message": plan.message}
    return out


def llm_markdown(res: LLMResult, job: Any, environment: dict | None = None) -> str:
    """report.md of an LLM serving search: the answer per model, why, the rivals, what was rejected."""
    from profilers.render import markdown_table, usd

    sp, s = job.llm, job.scenario.serving
    lines = [f"# sigmastar LLM serving: {job.name}", ""]
    if job.description:
        lines += [job.description, ""]
    lines += [f"{s.avg_requests_per_s:g} requests/s on average ({s.peak_rps:g} at peak) for {s.horizon_months:g} "
              f"months; targets: TTFT p90 <= {s.ttft_slo_s if s.ttft_slo_s is not None else 'none'} s, TPOT p90 <= "
              f"{s.tpot_slo_s if s.tpot_slo_s is not None else 'none'} s; quality: at most "
              f"{sp.max_quality_loss:.1%} worse than fp16 (published effects). Costs are totals over the horizon, USD.",
              "", "## Answer", ""]
    if not res.best:
        lines += ["**No configuration meets the targets and the quality bound.** Rejections:", ""]
    for model, b in sorted(res.best.items()):
        lines += [f"**{model}**: **{b['weights']}** weights, **{b['kv']}** KV cache, tensor parallel **{b['tp']}**, "
                  f"batch {b['batch']} on **{b['device']} x {b['gpus']}** ({b['replicas']} replica(s) of {b['tp']} "
                  f"GPU(s), {b['ownership']}): **{usd(b['total_usd'])}** (80 % band {usd(b['band_usd'][0])} - "
                  f"{usd(b['band_usd'][1])}); **{usd(b['usd_per_m_output'])} per million output tokens**, "
                  f"{usd(b['usd_per_m_input'])} per million input tokens (prefill's share of the time).",
                  "", f"- TTFT p90 {b['ttft_p90_s'] * 1e3:.0f} ms, TPOT p90 {b['tpot_p90_s'] * 1e3:.1f} ms, "
                  f"{b['tokens_per_s']:,.0f} output tokens/s per replica (projected).",
                  f"- Quality: {b['quality']} (loss {b['quality_loss']:.2%}).",
                  "- Cost by component: " + ", ".join(f"{k} {usd(v)}" for k, v in b["components"].items()) + ".", ""]
        rv = res.rivals.get(model) or []
        if rv:
            lines += ["**Ranking not certain**: these configurations' 80 % cost bands overlap the best's; measuring "
                      "their TPOT and TTFT on the devices named would settle it.", "",
                      markdown_table(["weights", "KV", "tp", "batch", "device", "own/rent", "total", "80 % band",
                                      "quality loss"],
                                     [[r["weights"], r["kv"], r["tp"], r["batch"], r["device"], r["ownership"],
                                       usd(r["total_usd"]), f"{usd(r['band_usd'][0])} - {usd(r['band_usd'][1])}",
                                       f"{r['quality_loss']:.2%}"] for r in rv]), ""]
        if model in res.pools:
            p = res.pools[model]
            lines += ["Serving pool for this format (rented, `plan_fleet`): "
                      + ", ".join(f"{n} x {d}" for d, n in p["devices"].items())
                      + f": {usd(p['serving_usd'])} of serving compute over the horizon. {p['message']}", ""]
    lines += ["## Cheapest configuration per device, format and KV cache", ""]
    per = {}
    for r in res.rows:
        if r["quality_loss"] is None or r["quality_loss"] > sp.max_quality_loss:
            continue
        k = (r["model"], r["device"], r["weights"], r["kv"], r["ownership"])
        if k not in per or r["total_usd"] < per[k]["total_usd"]:
            per[k] = r
    table = sorted(per.values(), key=lambda r: (r["model"], r["total_usd"]))
    lines += [markdown_table(["model", "device", "weights", "KV", "own/rent", "tp", "batch", "GPUs", "total",
                              "$/M output", "TPOT p90 ms"],
                             [[r["model"], r["device"], r["weights"], r["kv"], r["ownership"], r["tp"], r["batch"],
                               r["gpus"], usd(r["total_usd"]), usd(r["usd_per_m_output"]), f"{r['tpot_p90_s'] * 1e3:.1f}"]
                              for r in table[:40]]), ""]
    lines += ["## Rejected configurations", "", markdown_table(["reason", "configurations"],
                                                                sorted(res.rejected.items(), key=lambda kv: -kv[1])), ""]
    lines += ["## How it was priced", "",
              f"{res.configurations:,} configurations ({len(sp.models)} models x {len(sp.devices)} devices x "
              f"{len(sp.weights)} weight formats x {len(sp.kv)} KV formats x {len(sp.tp)} tp degrees x "
              f"{len(sp.batches)} batches x {len(sp.ownership)} ownership) in {res.seconds:.1f} s.", ""]
    lines += [f"- {n}" for n in res.notes]
    if res.best:
        lines += [f"- Example provenance: {next(iter(res.best.values()))['provenance']}"]
    if environment:
        lines += ["", "Environment: " + ", ".join(f"{k} {v}" for k, v in environment.items())]
    return "\n".join(lines) + "\n"


def write_llm_report(res: LLMResult, job: Any, output_dir: str | Path, environment: dict | None = None) -> dict:
    """Write llm.json (the result), configs.csv (every feasible priced row) and report.md."""
    import pandas as pd

    from profilers.config import dumps

    from .durable import atomic_write_text, check_writable

    out = check_writable(output_dir)
    atomic_write_text(out / "llm.json", dumps(res, indent=1))
    atomic_write_text(out / "configs.csv", pd.DataFrame([{k: v for k, v in r.items() if k not in (
        "provenance", "components", "quality_rows")} for r in res.rows]).to_csv(index=False))
    atomic_write_text(out / "report.md", llm_markdown(res, job, environment))
    return {"results": out / "llm.json", "configs": out / "configs.csv", "report": out / "report.md"}
