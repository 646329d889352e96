"""Pricing and quality of model variants: the two oracles every search method uses.

* :meth:`Evaluator.price` (cheap, no training): builds the variant's architecture and numerics
  (``apply(..., structure_only=True)``), measures it on this machine, re-expresses the profile at
  each serving batch size, projects it onto each device (efficiency calibrated on this machine),
  prices every (device, batch) with the cost model and keeps the cheapest feasible deployment.
* :meth:`Evaluator.quality` (expensive): applies the techniques for real (training included),
  measures P(M) with the workload's evaluation. Results persist in ``<output_dir>/evaluations.jsonl``
  keyed by content (base model, techniques, workload, seed), so a resumed search never re-trains.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from profilers.config import SigmastarError, to_json_dict

from .space import SearchSpace, Strategy, Variant

__all__ = ["Deployment", "Evaluator", "EvaluationStopped", "journal_row_problem", "who", "ON_ERROR"]

#: what a search does when the workload's own ``evaluate(model)`` raises: "raise" stops it with that
#: error (finished work kept), "skip" records the variant as failed and goes on (status "incomplete"
#: when it could change the answer)
ON_ERROR = ("raise", "skip")


def journal_row_problem(row: dict) -> str | None:
    """Why a row of ``evaluations.jsonl`` is unusable (None when it is a valid row): a content key,
    and either a finite quality with no error or no quality with an error."""
    if not isinstance(row.get("content"), str) or not row["content"]:
        return "no content key"
    q, err = row.get("quality"), row.get("error", "")
    if not isinstance(err, str):
        return f"error {err!r} is not a string"
    if q is None:
        return None if err else "no quality and no error"
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q):
        return f"quality {q!r} is not a finite number"
    return None


class EvaluationStopped(SigmastarError):
    """The search stopped because the workload's ``evaluate(model)`` raised (``on_error="raise"``);
    ``__cause__`` is the user's exception, with its traceback. Finished evaluations are kept."""


def who() -> str:
    """Who journaled a row (provenance): ``SIGMASTAR_WORKER_ID`` when set, else ``host:pid``."""
    import os
    import socket

    return os.environ.get("SIGMASTAR_WORKER_ID", "").strip() or f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Deployment:
    """The cheapest feasible deployment of one variant (or why none is feasible)."""

    variant: Variant
    cost_usd: float  # inf when no (device, batch) is feasible
    device: str | None = None
    batch_size: int | None = None
    breakdown: Any = None  # cost_models.CostBreakdown of the cheapest
    projection: Any = None
    train_figures: Any = None  # what priced the cheapest's training (a projection, or planned parallel figures)
    options: list[tuple[str, int, float, str]] = field(default_factory=list)  # device, batch, usd, status/message
    profile: Any = None
    error: str = ""
    #: True when pricing raised (a fault: a corrupt or unwritable cache, a full disk, a bug), not a
    #: technique that does not apply; the variant's cost is then unknown, never "infeasible"
    fault: bool = False
    #: device -> (batch, breakdown, projection, usd) of the cheapest feasible batch on that device
    per_device: dict[str, tuple[int, Any, Any, float]] = field(default_factory=dict)
    pool: Any = None  # optimizer.pool.ServingPool when a pool of device types is cheaper than any one type

    @property
    def feasible(self) -> bool:
        return math.isfinite(self.cost_usd)


class Evaluator:
    def __init__(self, workload: Any, space: SearchSpace, cost_model: Any, *, seed: int = 0,
                 output_dir: str | Path | None = None, profile_time_cap_s: float = 0.5,
                 log: Callable[[str], None] | None = None, on_evaluation: Callable | None = None,
                 pool: bool = False, runtime: str = "eager", retries: int = 2, on_error: str = "raise") -> None:
        self.workload, self.space, self.cost_model, self.seed = workload, space, cost_model, seed
        self.on_error = on_error  # see ON_ERROR
        self.pool = pool  # price a pool of the space's device types for serving (optimizer.pool)
        self.runtime = runtime  # how the models run on a GPU (profilers.project)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.profile_time_cap_s = profile_time_cap_s
        self.log = log or (lambda m: None)
        self.on_evaluation = on_evaluation  # (variant, quality or None, fidelity, error) after each evaluation
        self.base = workload.build()
        from profilers.techniques import TechniqueCache

        self.cache = TechniqueCache(self.output_dir / "models" if self.output_dir else None)
        self.base_fingerprint = self.cache.fingerprint(self.base)
        self._prices: dict[str, Deployment] = {}
        self._workloads: dict[str, Any] = {}  # variant key -> its workload (workload_for)
        self._quality: dict[str, tuple[float | None, str]] = {}
        self.quality_calls = 0  # evaluations actually run in this process (not from the cache file)
        self.quality_seconds: dict[float, list[float]] = {}  # fidelity -> wall time of each of them
        self._base_train: dict[str, Any] = {}
        self.retries = retries  # a failed evaluation is retried by up to this many later runs
        self._failed_runs: dict[str, tuple[int, str]] = {}  # content key -> (failed attempts journaled, last error)
        self._failed_now: set[str] = set()  # content keys whose evaluation failed in this run
        self._planned: dict[tuple, tuple[Any, str]] = {}
        self._journal = self.output_dir / "evaluations.jsonl" if self.output_dir else None
        if self._journal is not None:
            self._load_journal()

    def _load_journal(self) -> None:
        """Finished evaluations from the journal; a failed attempt is not a measurement: it is counted,
        and the evaluation runs again unless ``retries`` later runs have failed it already. Rows that do
        not validate (a torn line, garbage, a non-finite quality) are skipped and logged."""
        from .durable import check_writable, read_rows

        check_writable(self.output_dir)
        rows, problems = read_rows(self._journal, journal_row_problem)
        for p in problems:
            self.log(f"evaluations journal: {p}")
        for row in rows:
            key = row["content"]
            if row.get("quality") is not None and not row.get("error"):
                self._quality[key] = (float(row["quality"]), "")
            else:
                n, _ = self._failed_runs.get(key, (0, ""))
                self._failed_runs[key] = (n + 1, row.get("error") or "failed")
        for key, (n, err) in self._failed_runs.items():
            if key not in self._quality and n > self.retries:
                self._quality[key] = (None, f"{err} (failed in {n} runs; not retried: search.retries = "
                                            f"{self.retries})")

    def _cache_problems(self) -> None:
        """Log (once) every corrupt model-cache file the technique cache found, deleted and rebuilt."""
        while self.cache.problems:
            self.log(self.cache.problems.pop(0))

    def failed_attempts(self, v: Variant, fidelity: float = 1.0) -> int:
        """Failed attempts at ``v``'s evaluation journaled by earlier runs, plus this run's."""
        key = self.content_key(v, fidelity)
        return self._failed_runs.get(key, (0, ""))[0] + (key in self._failed_now)

    # ---- content keys -------------------------------------------------------------------------
    def content_key(self, v: Variant, fidelity: float = 1.0) -> str:
        """The key of a quality result: base model, workload, seed and the technique configs (a
        lower fidelity has fewer training steps in its configs, hence its own key)."""
        from profilers.techniques.cache import library_versions

        payload = {"model": self.base_fingerprint, "workload": self.workload.name, "seed": self.seed,
                   "techniques": [to_json_dict(t) for t in self.space.techniques(v, fidelity)],
                   "versions": library_versions()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    # ---- price: no training -------------------------------------------------------------------
    def trains_deployed(self, v: Variant) -> bool:
        """Whether the deployed model of ``v`` is the model that trains. A technique applied after
        training (``post_training``, e.g. quantization) deploys numerics that are never trained, so
        training is priced with the model before it: the base model's step."""
        return not any(t.post_training for t in self.space.techniques(v))

    def training_projection(self, v: Variant, dep: "Deployment") -> Any:
        """The figures that priced ``v``'s training on ``dep``'s device (see :meth:`trains_deployed`
        and :meth:`_parallel_training`)."""
        if dep.train_figures is not None:
            return dep.train_figures
        return dep.projection if self.trains_deployed(v) else self._base_train_projection(dep.device)

    def _shape(self, model: Any) -> Any:
        """The decoder-transformer shape of ``model`` (a transformers GPT-2 / Llama / Mistral model,
        at the workload's sequence length), or None when the parallel model cannot describe it."""
        from profilers.config import ConfigError
        from profilers.parallel import TransformerShape

        cfg = getattr(model, "config", None)
        if cfg is None or getattr(cfg, "model_type", None) not in ("gpt2", "llama", "mistral"):
            return None
        x = self.workload.inputs(1)
        x = next(iter(x.values())) if isinstance(x, dict) else x[0] if isinstance(x, (tuple, list)) else x
        seq = int(x.shape[-1]) if getattr(x, "ndim", 0) == 2 and not x.dtype.is_floating_point else None
        try:
            return TransformerShape.from_hf_config(cfg, seq_len=seq, name=self.workload.name)
        except (ConfigError, TypeError, ValueError) as e:
            self.log(f"training priced per device (flat scaling efficiency): {type(e).__name__}: {e}")
            return None

    def _parallel_training(self, model: Any, spec: Any, batch: int) -> tuple[Any, str]:
        """``(figures, why_not)`` for a scenario that trains on several GPUs: the cheapest layout of the
        trained model from :func:`profilers.parallel.plan` (optimizer.training_price.planned_figures) at a
        global batch of ``batch`` x devices, instead of one device's step and the flat scaling
        efficiency. ``(None, "")`` where it does not apply (one device, a CPU, a model that is not a
        decoder transformer); ``(None, reason)`` when no layout fits."""
        devices = self.cost_model.scenario.training.devices
        if devices <= 1 or spec.kind == "cpu":
            return None, ""
        shape = self._shape(model)
        if shape is None:
            return None, ""
        key = (shape, spec.name, batch)
        if key not in self._planned:
            from .training_price import planned_figures

            precision = "bf16" if spec.supports("bf16") else "fp16"
            fig, res = planned_figures(shape, spec, [devices], batch * devices, precision=precision)
            self._planned[key] = (fig, "" if fig is not None else
                                  f"training on {devices} x {spec.name}: {res.message}")
        return self._planned[key]

    def _base_train_projection(self, device: str) -> Any:
        """Training figures: the techniques train the full-precision model (fine-tuning happens
        before quantization), so training is priced with the base model's step on that device."""
        if device not in self._base_train:
            from profilers import measure, project

            from profilers import hardware

            if "profile" not in self._base_train:
                self._base_train["profile"] = self._measured("base-train", lambda: measure(
                    self.base, self.workload, time_cap_s=self.profile_time_cap_s, min_runs=5, device="cpu"))
            # as in price(): calibrated on this CPU for the CPU, the published-measurement calibration
            # (profilers.calibration) for a GPU
            eff = "calibrated" if hardware.get(device).kind == "cpu" else None
            self._base_train[device] = project(self._base_train["profile"], device, efficiency=eff,
                                               runtime=self.runtime)
        return self._base_train[device]

    def _measured(self, key: str, run: Callable[[], Any]) -> Any:
        """A measured profile, kept in ``<output_dir>/profiles/<key>.json``: a resumed search, and the
        report's itemized re-pricing, read the figures the search priced with instead of measuring
        again (one set of figures per run). A file that does not read back is measured again."""
        from profilers import Profile

        path = self.output_dir / "profiles" / f"{key}.json" if self.output_dir is not None else None
        if path is not None and path.exists():
            try:
                return Profile.from_json(path.read_text())
            except Exception as e:  # noqa: BLE001 - a corrupt cache file is never evidence: measure again
                self.log(f"cached profile {path.name} unreadable ({type(e).__name__}: {e}); measuring again")
        prof = run()
        if path is not None:
            from .durable import atomic_write_text

            atomic_write_text(path, prof.to_json())
        return prof

    def workload_for(self, v: Variant) -> Any:
        """The workload variant ``v`` is built, profiled and evaluated on: the search's, changed by
        the variant's workload transforms (``Transform`` on="workload": resolution, sequence length)."""
        if v.key not in self._workloads:
            wl = self.workload
            for t in self.space.techniques(v):
                on_workload = getattr(t, "on_workload", None)
                if on_workload is not None:
                    wl = on_workload(wl)
            self._workloads[v.key] = wl
        return self._workloads[v.key]

    def price(self, v: Variant) -> Deployment:
        if v.key in self._prices:
            return self._prices[v.key]
        from profilers import count_flops, measure, project
        from profilers.projection import at_batch, calibrate, unsupported_dtypes
        from profilers.techniques import UnsupportedTechnique, apply

        dep = Deployment(variant=v, cost_usd=math.inf)
        try:
            wl = self.workload_for(v)
            model = apply(self.base, self.space.techniques(v), wl, structure_only=True, cache=self.cache,
                          seed=self.seed)
            self._cache_problems()
            train = self.trains_deployed(v)
            # measured on this machine's CPU: the calibration below is against the host's spec
            prof = self._measured(self.content_key(v), lambda: measure(
                model, wl, train=train, time_cap_s=self.profile_time_cap_s, min_runs=5, device="cpu"))
            dep.profile = prof
            eff = calibrate(prof)
            src = f"calibrated on {prof.device_description}"
            cm = self.cost_model.with_scenario(techniques=self.space.cost_keys(v))
            for b in self.space.batch_sizes:
                pb = prof if b == prof.batch_size else at_batch(prof, count_flops(model, wl.inputs(b)), b)
                for d in self.space.devices:
                    from profilers import hardware

                    spec = hardware.get(d)
                    missing = unsupported_dtypes(pb, spec)
                    if missing:
                        dep.options.append((spec.name, b, math.inf, f"{', '.join(missing)} unsupported on {spec.name}"))
                        continue
                    # each op at its own dtype (per-op precision). This CPU's efficiency is calibrated
                    # from the measurement; it says little about other devices' kernels, which read
                    # the calibration against published measurements (with its error band)
                    if spec.kind == "cpu":
                        proj = project(pb, spec, efficiency=eff, efficiency_source=src)
                    else:
                        proj = project(pb, spec, runtime=self.runtime)
                    tfig, why = self._parallel_training(model if train else self.base, spec, b)
                    if why:
                        dep.options.append((spec.name, b, math.inf, why))
                        continue
                    if tfig is None:
                        tfig = proj if train else self._base_train_projection(d)
                    br = cm.estimate(proj, train_figures=tfig, model_name=f"{self.workload.name} [{v.label}]")
                    usd = br.total_usd if br.status == "ok" else math.inf
                    dep.options.append((proj.device, b, usd, br.status if br.status == "ok" else br.message))
                    if usd < dep.per_device.get(proj.device, (0, None, None, math.inf))[-1]:
                        dep.per_device[proj.device] = (b, br, proj, usd)
                    if usd < dep.cost_usd:
                        dep.cost_usd, dep.device, dep.batch_size = usd, proj.device, b
                        dep.breakdown, dep.projection, dep.train_figures = br, proj, tfig
            if self.pool and dep.feasible:
                from .pool import serving_pool

                dep.pool = serving_pool(v.key, dep, self.cost_model.scenario)
                if dep.pool is not None and dep.pool.saving_usd > 0:
                    dep.cost_usd = dep.pool.total_usd
        except UnsupportedTechnique as e:
            dep.error = str(e)
        except Exception as e:  # a fault: the variant's price is unknown, and the search says so
            import traceback

            dep.error, dep.fault = f"{type(e).__name__}: {e}", True
            self.log(f"pricing {v.key} failed: {dep.error}\n{traceback.format_exc(limit=-6)}")
        self._prices[v.key] = dep
        return dep

    # ---- quality: the expensive oracle --------------------------------------------------------
    def quality(self, v: Variant, fidelity: float = 1.0) -> float | None:
        """P(M) of variant ``v`` measured on held-out data (None when producing it failed).

        ``fidelity < 1``: the variant trained with that fraction of its training steps (a
        multi-fidelity rung); journaled under its own content key, never taken for the variant's quality.
        """
        key = self.content_key(v, fidelity)
        if key in self._quality:
            return self._quality[key][0]
        from profilers.techniques import apply, quality

        t0 = time.perf_counter()
        err = tb = ""
        stop: BaseException | None = None
        try:
            wl = self.workload_for(v)
            model = apply(self.base, self.space.techniques(v, fidelity), wl, cache=self.cache, seed=self.seed)
            self._cache_problems()
            q: float | None = quality(model, wl)  # a finite number, checked (BadQuality otherwise)
        except Exception as e:  # a fault, recorded as one (never a quality); retried by a later run
            import traceback

            q, err, tb = None, f"{type(e).__name__}: variant {v.key}: {e}", traceback.format_exc(limit=-8)
            from profilers.techniques.quality import EvaluateError

            if isinstance(e, EvaluateError) and self.on_error == "raise":
                stop = e
        seconds = time.perf_counter() - t0
        if q is None:
            self._failed_now.add(key)
        self.quality_calls += 1
        self.quality_seconds.setdefault(fidelity, []).append(seconds)
        self._quality[key] = (q, err)
        if self._journal is not None:
            from .durable import append_row

            append_row(self._journal, {"content": key, "variant": v.key, "fidelity": fidelity, "quality": q,
                                       "error": err, "seconds": seconds, "at": round(time.time(), 3), "worker": who(),
                                       **({"traceback": tb} if tb else {})})
        at = "" if fidelity >= 1 else f" at fidelity {fidelity:g}"
        self.log(f"quality {v.key}{at}: {q if q is not None else 'failed: ' + err}")
        if self.on_evaluation is not None:
            self.on_evaluation(v, q, fidelity, err)
        if stop is not None:
            kept = f"finished evaluations are kept in {self._journal}; run it again to resume" if self._journal \
                else "give search(output_dir=...) to keep finished evaluations across runs"
            raise EvaluationStopped(f"the search stopped: variant {v.label!r} ({v.key}): {stop}. Its traceback is "
                                    f"above. {kept[0].upper() + kept[1:]}. To fix: correct evaluate(), or pass "
                                    "on_error='skip' to record failing variants and go on.") from stop.__cause__
        return q

    def mean_seconds(self, fidelity: float = 1.0) -> float:
        """Mean wall time of this process's evaluations at ``fidelity`` (0 when none ran yet)."""
        times = self.quality_seconds.get(fidelity, [])
        return sum(times) / len(times) if times else 0.0

    def record_quality(self, v: Variant, q: float) -> None:
        """A quality measured elsewhere (another worker's trial in a shared study)."""
        self._quality.setdefault(self.content_key(v), (q, ""))

    def quality_error(self, v: Variant, fidelity: float = 1.0) -> str:
        return self._quality.get(self.content_key(v, fidelity), (None, ""))[1]

    def known_quality(self, v: Variant) -> float | None:
        return self._quality.get(self.content_key(v), (None, ""))[0]

    def priced(self, v: Variant) -> Deployment | None:
        """``v``'s deployment if it was priced in this process (None otherwise; :meth:`price` prices it)."""
        return self._prices.get(v.key)

    def evaluated(self, v: Variant) -> bool:
        return self.content_key(v) in self._quality

    # ---- the result row -----------------------------------------------------------------------
    def strategy(self, v: Variant, quality_source: str) -> Strategy:
        dep = self.price(v)
        comps = dict(dep.breakdown.components) if dep.breakdown is not None else {}
        prov = []
        if dep.projection is not None:
            prov.append(dep.projection.provenance)
        if dep.breakdown is not None:
            prov.extend(getattr(dep.breakdown, "provenance", ()))
        pooled = dep.pool is not None and dep.pool.saving_usd > 0
        if pooled:
            comps["train_deploy"] = comps.get("train_deploy", 0.0) - dep.pool.saving_usd
            prov.append(dep.pool.provenance)
        band = None
        if dep.breakdown is not None and dep.breakdown.ok and (dep.breakdown.low_usd is not None
                                                                or dep.breakdown.high_usd is not None):
            lo, _, hi = dep.breakdown.band_usd
            saving = dep.pool.saving_usd if pooled else 0.0  # the pool's saving, at the expected times
            band = (lo - saving, hi - saving)
        return Strategy(
            variant=v.key, label=v.label, techniques=tuple(self.space.techniques(v)),
            device=dep.pool.describe() if pooled else (dep.device or "-"), batch_size=dep.batch_size or 0,
            replicas=sum(dep.pool.devices.values()) if pooled else int(getattr(dep.breakdown, "replicas", 0) or 0),
            cost_usd=dep.cost_usd, quality=self.known_quality(v), quality_source=quality_source,
            cost_breakdown=comps, provenance=tuple(prov), pool=dict(dep.pool.devices) if pooled else {},
            pool_saving_usd=dep.pool.saving_usd if pooled else 0.0, cost_band_usd=band)
