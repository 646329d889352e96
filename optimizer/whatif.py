"""The what-if: transformer configs (no weights) served and trained on each catalog GPU, priced.

:class:`WhatIf` is the ``[whatif]`` table of a ``kind = "whatif"`` job; :func:`run_whatif` runs
such a job into a :class:`WhatIfResult` (serving rows, training rows, the cheapest plan per model).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profilers.config import (
    check_choice,
    check_fields,
    check_int,
    check_list,
    invalid,
    resolve_path,
    serializable,
)

if TYPE_CHECKING:
    from .job_spec import Job

__all__ = ["MAX_BATCH_SIZE", "WhatIf", "WhatIfResult", "run_whatif", "allowed_serve_dtypes", "serve_cost_keys"]

#: dtypes a what-if may serve in (profilers' dtype names; each device supports a subset)


def allowed_serve_dtypes() -> tuple[str, ...]:
    """The dtypes a what-if may serve in: fp32 and every weight dtype a ``Quantize`` mode declares."""
    from profilers.techniques import Quantize

    return ("fp32", *dict.fromkeys(spec.weight_dtype for spec in Quantize.SPECS))


def serve_cost_keys(dtype: str) -> tuple[str, ...]:
    """The cost model's technique keys of serving a bf16 checkpoint in ``dtype``: the ``Quantize``
    mode of that weight dtype when it has fewer than 16 bits; none for fp32/bf16/fp16 (the
    checkpoint is analyzed in bf16, so serving in 16 bits is a cast, not a technique)."""
    from profilers.techniques import Quantize

    q = Quantize.for_weight_dtype(dtype)
    return (q.cost_key,) if q is not None and q.bits < 16 else ()
#: a cheap bound on a serving batch (checked without building the model): no catalog device holds more
#: sequences of a transformer in one batch than this
MAX_BATCH_SIZE = 65536
_DECODER_TYPES = ("gpt2", "llama", "mistral")


# ----------------------------------------------------------------------------------------------
# the what-if spec
# ----------------------------------------------------------------------------------------------
@serializable("whatif")
@dataclass(frozen=True)
class WhatIf:
    """An LLM what-if: each model config (no weights) served and trained on each device.

    * ``models``: bundled config names (``llama-2-7b``, ``llama-2-70b``, ``gpt2``) or
      ``config.json`` paths of decoder-only transformers (GPT-2, Llama, Mistral); a relative path
      is read against the job file's folder (:func:`profilers.config.relative_to`) and kept resolved;
    * ``devices``: catalog GPUs (any case; empty: every GPU in the catalog);
    * serving is **prompt scoring**: one request = one forward pass over ``serve_seq_len`` tokens
      (scoring, classification, embedding; for token generation with a KV cache, tensor parallelism
      and $/M tokens run an ``kind = "llm"`` job: :mod:`optimizer.llm_search`), at each of
      ``serve_batch_sizes`` (at most :data:`MAX_BATCH_SIZE`) and ``serve_dtypes`` the device
      supports, one model copy per device, its kernels run as ``serve_runtime`` says (``"fused"``, the
      default: TensorRT-LLM / vLLM-style kernels, FlashAttention; ``"eager"``: PyTorch eager);
    * training: the scenario's training plan (tokens per run) with ``global_batch`` sequences of
      ``train_seq_len`` tokens per step, laid out by ``profilers.parallel.plan`` over
      ``train_device_counts`` devices (data, tensor and pipeline parallel, ZeRO, recomputation), in
      ``train_precision`` (``"bf16"``, ``"fp16"``, ``"fp32"`` or ``"fp8"``: fp8 GEMMs where the device has
      an fp8 peak, else bf16), priced by :func:`optimizer.training_price.price_training` (GPU-hours
      ideal and paid, rented and owned dollars, energy).

    Every rule is checked here, once: built in Python an error reads ``WhatIf.models[0] must ...``,
    built from a job file ``job.whatif.models[0] must ...``.
    """

    models: tuple[str, ...] = ("llama-2-7b", "llama-2-70b")
    devices: tuple[str, ...] = ()
    serve_seq_len: int = 512
    serve_batch_sizes: tuple[int, ...] = (1, 8, 32)
    serve_dtypes: tuple[str, ...] = ("bf16", "fp8", "int8")
    serve_runtime: str = "fused"
    train_seq_len: int = 4096
    global_batch: int = 256
    train_device_counts: tuple[int, ...] = (8, 16, 32, 64)
    train_precision: str = "bf16"

    def __post_init__(self) -> None:
        o = "WhatIf"
        object.__setattr__(self, "models", check_list(o, "models", self.models, _model_config))
        devices = self.devices
        if isinstance(devices, (list, tuple)) and not devices:
            devices = ()  # every GPU in the catalog
        else:
            devices = check_list(o, "devices", devices, _gpu)
        object.__setattr__(self, "devices", devices)
        for f in ("serve_seq_len", "train_seq_len", "global_batch"):
            check_int(o, f, getattr(self, f), 1)
        object.__setattr__(self, "serve_batch_sizes", check_list(o, "serve_batch_sizes", self.serve_batch_sizes,
                                                                 _batch_size))
        object.__setattr__(self, "serve_dtypes", check_list(
            o, "serve_dtypes", self.serve_dtypes, lambda f, v: (check_choice(o, f, v, allowed_serve_dtypes()), v)[1]))
        from profilers.projection import RUNTIMES

        check_choice(o, "serve_runtime", self.serve_runtime, RUNTIMES)
        from profilers.parallel.config import PRECISIONS

        check_choice(o, "train_precision", self.train_precision, PRECISIONS)

        def count(f: str, n: Any) -> int:
            check_int(o, f, n, 1)
            if self.global_batch % n:
                raise invalid(o, f, f"a divisor of global_batch ({self.global_batch}), so that every device's "
                              "share of a step is whole", n)
            return n

        object.__setattr__(self, "train_device_counts", check_list(o, "train_device_counts",
                                                                   self.train_device_counts, count))
        check_fields(self)

    def device_list(self) -> list[str]:
        from profilers import hardware

        if self.devices:
            return list(self.devices)
        return [n for n in hardware.names() if hardware.get(n).kind == "gpu"]


def _batch_size(field: str, v: Any) -> int:
    check_int("WhatIf", field, v, 1)
    if v > MAX_BATCH_SIZE:
        raise invalid("WhatIf", field, f"an integer <= {MAX_BATCH_SIZE} (no device holds a larger batch)", v)
    return v


def _gpu(field: str, v: Any) -> str:
    from profilers import hardware

    names = hardware.names()
    match = next((n for n in names if isinstance(v, str) and n.lower() == v.lower()), None)
    if match is None:
        raise invalid("WhatIf", field, "a catalog device: one of " + ", ".join(repr(n) for n in names)
                      + " (GPUs only: this host's CPU cannot serve these models)", v)
    return match


def _bundled_configs() -> list[str]:
    d = resources.files("profilers").joinpath("data/hf_configs")
    return sorted(p.name.removesuffix(".json") for p in d.iterdir() if p.name.endswith(".json"))


def _model_config(field: str, v: Any) -> str:
    """A bundled config name, or a decoder-only ``config.json`` path (kept resolved)."""
    o = "WhatIf"
    names = _bundled_configs()
    if not isinstance(v, str) or not v.strip():
        raise invalid(o, field, "a bundled config name (" + ", ".join(names) + ") or a config.json path", v)
    if v in names:
        data = json.loads(resources.files("profilers").joinpath(f"data/hf_configs/{v}.json").read_text())
        resolved = v
    else:
        p = resolve_path(v)
        if not p.is_file():
            raise invalid(o, field, "a bundled config name (" + ", ".join(names) + ") or an existing config.json "
                          "path", v)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except RecursionError:
            raise invalid(o, field, "a valid config.json (this one nests too deep to read)", v) from None
        except ValueError as e:  # not JSON, not UTF-8, or an integer past Python's 4,300-digit limit
            raise invalid(o, field, f"a valid config.json ({e})", v) from None
        resolved = str(p.resolve())
    mt = data.get("model_type") if isinstance(data, dict) else None
    if mt not in _DECODER_TYPES:
        raise invalid(o, field, "a decoder-only transformer config (model_type " + ", ".join(
            repr(t) for t in _DECODER_TYPES) + f"); {v!r} has model_type {mt!r}", v)
    return resolved


# ----------------------------------------------------------------------------------------------
# running a what-if job: LLM configs across the GPU catalog, served and trained
# ----------------------------------------------------------------------------------------------


@serializable("whatif_result")
@dataclass(frozen=True)
class WhatIfResult:
    """Serving rows (model x device x dtype x batch), training rows (model x device: the cheapest
    planned layout) and, per model, the cheapest plan priced as one :class:`CostBreakdown`."""

    job_name: str
    serving: tuple[dict, ...]
    training: tuple[dict, ...]
    plans: tuple[dict, ...]
    seconds: float
    notes: tuple[str, ...] = ()

    def to_json(self, **kw: Any) -> str:
        from profilers.config import dumps

        return dumps(self, **kw)

    def serving_dataframe(self):
        import pandas as pd

        return pd.DataFrame(list(self.serving))

    def training_dataframe(self):
        import pandas as pd

        return pd.DataFrame(list(self.training))

    def _repr_html_(self) -> str:
        from .report import whatif_html

        return whatif_html(self)


def _config_dict(model: str) -> dict:
    if model in _bundled_configs():
        return json.loads(resources.files("profilers").joinpath(f"data/hf_configs/{model}.json").read_text())
    return json.loads(Path(model).read_text())


def _model_label(model: str) -> str:
    return model if model in _bundled_configs() else Path(model).parent.name or Path(model).stem


def run_whatif(job: Job, *, log: Any = None) -> WhatIfResult:
    """Serve and train each model of ``job.whatif`` on each device, priced with the job's scenario.

    Serving: ``profilers.analyze`` (meta device, no weights) at each batch size, projected onto
    each device in each dtype it supports (roofline in ``serve_runtime``, efficiency and overhead from
    :mod:`profilers.calibration`, with its error band), priced with the serving
    plan (replicas for the peak, SLO, memory fit). Training: ``profilers.parallel.plan`` lays the
    model out over ``train_device_counts`` devices and keeps the cheapest layout that fits; the
    cost model prices its device-hours for the training plan's tokens.
    """
    import time

    from cost_models import CostModel, DataPlan, TrainingPlan
    from profilers import analyze, hardware, project
    from profilers.parallel import TransformerShape

    from .training_price import price_training

    log = log or (lambda m: None)
    if job.kind != "whatif":
        raise invalid("run_whatif", "job.kind", "'whatif' to run a what-if", job.kind)
    t0 = time.perf_counter()
    w, sc, book = job.whatif, job.scenario, job.prices()
    devices = w.device_list()
    serve_sc = sc.replace(training=TrainingPlan(), data=DataPlan())
    serving, training, plans, notes = [], [], [], []
    figs: dict[tuple, Any] = {}
    for model in w.models:
        label = _model_label(model)
        for b in w.serve_batch_sizes:
            log(f"analyzing {label} at batch {b} x {w.serve_seq_len} tokens on the meta device")
            prof = analyze(model, batch_size=b, seq_len=w.serve_seq_len, dtype="bf16", train=False, name=label)
            for d in devices:
                spec = hardware.get(d)
                for dt in w.serve_dtypes:
                    row = {"model": label, "device": d, "dtype": dt, "batch_size": b, "parameters": prof.parameters}
                    if not spec.supports(dt):
                        serving.append({**row, "status": "unsupported", "total_usd": math.inf,
                                        "message": f"{d} has no {dt} peak ({', '.join(spec.peak_tflops)})"})
                        continue
                    pr = project(prof, spec, dt, runtime=w.serve_runtime)
                    techs = serve_cost_keys(dt)
                    br = CostModel(serve_sc.replace(techniques=techs), book).estimate(pr, model_name=label)
                    serving.append({**row, "latency_s": pr.latency_s, "peak_memory_gb": pr.peak_memory_bytes / 1e9,
                                    "fits_memory": pr.fits_memory, "replicas": br.replicas,
                                    "total_usd": br.total_usd, "status": br.status,
                                    "message": br.message, "provenance": pr.provenance})
                    figs[("serve", label, d, dt, b)] = (pr, techs)
        trains = sc.training.samples_per_epoch > 0
        shape = TransformerShape.from_hf_config(_config_dict(model), seq_len=w.train_seq_len, name=label)
        for d in (devices if trains else ()):
            spec = hardware.get(d)
            r = price_training(shape, spec, w.train_device_counts, w.global_batch, sc, book,
                               precision=w.train_precision if spec.supports(w.train_precision) else None,
                               label=label, log=log)
            fig = r.pop("figures", None)
            r.pop("breakdown", None)
            r.pop("config", None)
            training.append(r)
            if fig is not None:
                figs[("train", label, d)] = (fig, r["devices"])
        # the cheapest plan: the cheapest serving row + the cheapest training row, priced together
        srows = [r for r in serving if r["model"] == label and r["status"] == "ok"]
        trows = [r for r in training if r["model"] == label and r["status"] == "ok"]
        if not srows or (trains and not trows):
            plans.append({"model": label, "status": "infeasible",
                          "message": ("no device serves it within the SLO and memory" if not srows else
                                      "no device count trains it (see the training rows)")})
            continue
        s = min(srows, key=lambda r: r["total_usd"])
        spr, techs = figs[("serve", label, s["device"], s["dtype"], s["batch_size"])]
        pc = sc.replace(techniques=techs)
        tfig = None
        t = None
        if trains:
            t = min(trows, key=lambda r: r["total_usd"])
            tfig, n = figs[("train", label, t["device"])]
            pc = pc.replace(training=dataclasses.replace(sc.training, devices=n, scaling_efficiency=1.0))
        br = CostModel(pc, book).estimate(spr, train_figures=tfig, model_name=label)
        plans.append({"model": label, "status": br.status, "serve_device": s["device"], "serve_dtype": s["dtype"],
                      "serve_batch_size": s["batch_size"], "replicas": br.replicas,
                      "train_device": t["device"] if t else None, "train_devices": t["devices"] if t else None,
                      "train_layout": t["layout"] if t else None, "total_usd": br.total_usd, "breakdown": br})
    notes.append("serving is prompt scoring: one request = one forward pass over serve_seq_len tokens, one model "
                 "copy per device (token generation is priced by kind = \"llm\" jobs: optimizer.llm_search); memory "
                 "is weights + the largest op's operands "
                 "(a lower bound)")
    notes.append("training: time per step from profilers.parallel (analytic FLOPs, GEMM efficiency from "
                 "profilers.calibration); the "
                 "scenario's scaling efficiency is set to 1.0 because the planned layout already models the "
                 "communication")
    return WhatIfResult(job_name=job.name, serving=tuple(serving), training=tuple(training), plans=tuple(plans),
                        seconds=time.perf_counter() - t0, notes=tuple(notes))
