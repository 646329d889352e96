"""Training calibration: the parallel model's free figures fitted to published training runs.

    python -m profilers.parallel.calibration      # refit and rewrite profilers/data/training_calibration.json

The rows are ``profilers/data/training_runs.csv`` (sources and conventions in ``training_runs.md``):
Megatron-LM, DeepSpeed ZeRO-3, PyTorch FSDP (llm-foundry, torchtitan) step times or throughputs,
each with its published layout, and the GPU-hours of whole pre-training runs.

What is fitted (everything else is counted from shapes and datasheets):

* a **GEMM efficiency per device** (the fraction of the dense peak the training GEMMs reach), shrunk
  towards the device's fused-runtime matmul efficiency of the inference calibration
  (:mod:`profilers.calibration`; log-space prior, sd ``OFFSET_SD``);
* one **jitter** (coefficient of variation of a device's step time; the straggler term of
  :mod:`.timing`), prior 0 +- ``JITTER_SD``;
* one **per-step host overhead** in seconds, prior 0 +- ``OVERHEAD_SD_S``;
* a **factor per framework** (Megatron-LM 2021 / 2022, DeepSpeed 2021, llm-foundry, torchtitan)
  on the device efficiency, shrunk to 1 (log-space sd ``FRAMEWORK_SD``): the software stack's share
  of a GEMM's speed. A prediction that names no framework (every ``plan()``, and
  the whole-run rows, whose stack is not among the fitted ones) uses the device efficiency alone:
  the shrinkage centre, between the stacks. The
  same kind of factor, keyed ``"fp8"``, scales fp8 training's efficiency (of the fp8 peak).

Least squares on ``log(predicted / published)`` (row sd ``ROW_SD``) with those priors
(scipy ``least_squares``, bounded). Validation is **10-fold cross-validation**: every throughput row
is predicted by a fit that did not see it (row i of the file in fold i mod 10; leave-one-out would
take ~250 fits of ~3 s). The GPU-hours rows are a **fixed test split**: never fitted, they are
predicted from ``plan()``'s fastest layout at the published GPU count (their layouts are not
published) with the fit of all throughput rows.

Devices without rows get their inference matmul efficiency times the geometric mean of the fitted
devices' training / inference ratios, and the provenance says so.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..config import invalid
from ..hardware import DeviceSpec
from .config import ParallelConfig, TransformerShape
from .flops import megatron_flops

__all__ = ["TrainingRun", "TrainingFit", "load_runs", "training", "fit", "predict_s", "predict_planned", "build", "FRAMEWORKS"]

DATA_CSV = "training_runs.csv"
DATA_JSON = "training_calibration.json"
OFFSET_SD = 0.5
FRAMEWORK_SD = 0.15
JITTER_SD = 0.02
OVERHEAD_SD_S = 0.2
ROW_SD = 0.1
FOLDS = 10
COMMAND = "python -m profilers.parallel.calibration"

#: what each framework overlapped and how it gathers, as its authors describe it (not fitted)
FRAMEWORKS: dict[str, dict[str, Any]] = {
    # Narayanan et al. 2021: no dp/tp overlap in the 2021 code
    "megatron-2021": dict(overlap_dp_comm=False, overlap_tp_comm="none", flash_attention=False),
    # Korthikanti et al. 2022 sec. 6.2: backward tp all-reduce overlapped with weight-gradient GEMMs
    "megatron-2022": dict(overlap_dp_comm=False, overlap_tp_comm="backward", flash_attention=False),
    # DeepSpeed ZeRO-3 (2021): prefetching gathers per sub-module (6 parameterised modules per GPT block)
    "deepspeed-2021": dict(overlap_dp_comm=True, overlap_tp_comm="none", zero3_gathers_per_layer=6,
                           flash_attention=False),
    # PyTorch FSDP: one gather per wrapped transformer block, prefetched; FlashAttention (llm-foundry's
    # triton/flash attn_impl, torchtitan's SDPA; the LLaMA paper's xformers memory-efficient attention)
    "llm-foundry": dict(overlap_dp_comm=True, flash_attention=True),
    "torchtitan": dict(overlap_dp_comm=True, flash_attention=True),
    "llama-1": dict(overlap_dp_comm=True, flash_attention=True),
    "llama-2": dict(overlap_dp_comm=True, flash_attention=True),
}


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    """One published row, ready for :func:`profilers.parallel.step_time`."""

    id: str
    category: str
    framework: str
    device: str
    shape: TransformerShape
    config: ParallelConfig | None  # None: layout not published (GPU-hours rows)
    gpus: int
    metric: str
    value: float
    published_s: float | None  # seconds per step (None for GPU-hours rows)
    train_tokens: float | None
    layout_note: str
    source: str


def _int(row: Mapping[str, str], key: str, default: int | None = None) -> int | None:
    v = (row.get(key) or "").strip()
    return int(float(v)) if v else default


def _shape(row: Mapping[str, str]) -> TransformerShape:
    return TransformerShape(
        layers=_int(row, "layers"), hidden=_int(row, "hidden"), heads=_int(row, "heads"),
        kv_heads=_int(row, "kv_heads", 0), ffn_hidden=_int(row, "ffn_hidden", 0), vocab=_int(row, "vocab"),
        seq_len=_int(row, "seq_len"), layout=row["layout"].strip(), tied_embeddings=row["tied_embeddings"].strip() == "1",
        dropout=row["dropout"].strip() == "1", name=row["model"].strip())


def _interleave_rule(shape: TransformerShape, pp: int, m: int) -> int:
    """Where a paper does not print v: the smallest divisor > 1 of the layers per stage that the
    schedule allows (m a multiple of pp), else 1. One rule for every such row."""
    if pp == 1 or shape.layers % pp or m % pp:
        return 1
    per = shape.layers // pp
    return next((v for v in range(2, per + 1) if per % v == 0), 1)


def _row(row: Mapping[str, str]) -> TrainingRun:
    shape = _shape(row)
    gpus = _int(row, "gpus")
    metric, value = row["metric"].strip(), float(row["value"])
    notes = []
    cfg = None
    if row.get("dp", "").strip():
        dp, tp, pp = _int(row, "dp"), _int(row, "tp", 1), _int(row, "pp", 1)
        mb = _int(row, "micro_batch")
        if mb is None:
            mb = 1
            notes.append("micro-batch not published: 1")
        gb = _int(row, "global_batch")
        m = -(-gb // (mb * dp))
        v = _int(row, "interleave")
        if v is None:
            v = _interleave_rule(shape, pp, m)
            if pp > 1:
                notes.append(f"interleave not published: {v} (smallest divisor > 1 of layers per stage)")
        cfg = ParallelConfig(dp=dp, tp=tp, pp=pp, zero_stage=_int(row, "zero_stage", 0), micro_batch=mb,
                             global_batch=gb, interleave=v, recompute=row["recompute"].strip(),
                             sequence_parallel=row["sequence_parallel"].strip() == "1",
                             precision=row["precision"].strip())
        gpus = gpus or cfg.devices
    if metric == "step_s":
        published = value
    elif metric == "tflops_per_gpu":  # Narayanan eq. 3 FLOPs over (GPUs x TFLOP/s)
        published = megatron_flops(shape.layers, shape.hidden, shape.vocab, shape.seq_len, cfg.global_batch) / (gpus * value * 1e12)
    elif metric == "tokens_per_s_per_gpu":
        published = cfg.global_batch * shape.seq_len / (value * gpus) if cfg else None
    elif metric == "gpu_hours":
        published = None
    else:
        raise invalid(DATA_CSV, "metric", "step_s, tflops_per_gpu, tokens_per_s_per_gpu or gpu_hours", metric)
    tokens = (row.get("train_tokens") or "").strip()
    return TrainingRun(id=row["id"].strip(), category=row["category"].strip(), framework=row["framework"].strip(),
                       device=row["device"].strip(), shape=shape, config=cfg, gpus=gpus or 0, metric=metric,
                       value=value, published_s=published, train_tokens=float(tokens) if tokens else None,
                       layout_note="; ".join(notes), source=row["source"].strip())


@cache
def load_runs(path: str | None = None) -> tuple[TrainingRun, ...]:
    """Every row of ``training_runs.csv`` (or the file at ``path``)."""
    src = Path(path) if path else Path(str(resources.files("profilers").joinpath("data", DATA_CSV)))
    with open(src, newline="") as f:
        return tuple(_row(r) for r in csv.DictReader(f))


# ---- the fit --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainingFit:
    """Fitted figures (``training_calibration.json``)."""

    efficiency_by_device: dict[str, float]
    prior_by_device: dict[str, float]
    jitter: float
    step_overhead_s: float
    rows: dict[str, int] = dataclasses.field(default_factory=dict)  # device -> rows fitted
    #: framework -> multiplier of the device efficiency its published rows show (shrunk to 1)
    framework_factor: dict[str, float] = dataclasses.field(default_factory=dict)

    def ratio(self) -> float:
        """Geometric mean of fitted / prior efficiency over the fitted devices (1 with none)."""
        rs = [math.log(self.efficiency_by_device[d] / self.prior_by_device[d]) for d in self.efficiency_by_device]
        return math.exp(sum(rs) / len(rs)) if rs else 1.0

    def efficiency(self, device: DeviceSpec, framework: str | None = None, precision: str | None = None) -> float:
        """The device's training GEMM efficiency, times ``framework``'s factor when one is named and
        the fp8 factor for fp8 training (fp8 GEMMs reach a smaller share of their doubled peak)."""
        e = self.efficiency_by_device.get(device.name) or min(0.95, _prior(device) * self.ratio())
        if framework:
            e *= self.framework_factor.get(framework, 1.0)
        if precision == "fp8":
            e *= self.framework_factor.get("fp8", 1.0)
        return min(1.0, e)

    def source(self, device: DeviceSpec) -> str:
        if device.name in self.efficiency_by_device:
            return (f"training GEMM efficiency fitted to {self.rows.get(device.name, 0)} published training rows of "
                    f"{device.name} (profilers.parallel.calibration)")
        return (f"no published training rows for {device.name}: its fused matmul efficiency x {self.ratio():.3g}, "
                "the fitted devices' training / inference ratio (profilers.parallel.calibration)")


def _prior(device: DeviceSpec) -> float:
    from ..calibration import load

    return load().lookup(device, "fused").efficiency["matmul"]


def _specs() -> dict[str, DeviceSpec]:
    from ..calibration import calibration_specs

    return calibration_specs()


def predict_s(run: TrainingRun, spec: DeviceSpec, efficiency: float, jitter: float, overhead_s: float,
              config: ParallelConfig | None = None) -> float:
    """Predicted seconds per step of ``run`` with the given figures."""
    from .timing import TimeModel, step_time

    tm = TimeModel(efficiency=min(1.0, efficiency), jitter=jitter, step_overhead_s=overhead_s,
                   **FRAMEWORKS.get(run.framework, {}))
    return step_time(run.shape, config or run.config, spec, tm).total_s


def fit(runs: Sequence[TrainingRun], specs: Mapping[str, DeviceSpec] | None = None,
        priors: Mapping[str, float] | None = None) -> TrainingFit:
    """Fit the figures to ``runs`` (rows with a published step time and layout)."""
    import numpy as np
    from scipy.optimize import least_squares

    specs = specs or _specs()
    runs = [r for r in runs if r.published_s is not None and r.config is not None]
    devices = sorted({r.device for r in runs})
    frameworks = sorted({r.framework for r in runs} | ({"fp8"} if any(r.config.precision == "fp8" for r in runs) else set()))
    nd, nf = len(devices), len(frameworks)
    priors = dict(priors or {d: _prior(specs[d]) for d in devices})
    logp = np.array([math.log(priors[d]) for d in devices])
    idx = [(devices.index(r.device), frameworks.index(r.framework),
            frameworks.index("fp8") if r.config.precision == "fp8" else None) for r in runs]
    pub = np.array([math.log(r.published_s) for r in runs])

    def residuals(x: np.ndarray) -> np.ndarray:
        eff, fw, jit, ovh = np.exp(x[:nd]), np.exp(x[nd:nd + nf]), x[-2], x[-1]
        pred = np.array([math.log(predict_s(r, specs[r.device], eff[i] * fw[j] * (fw[k] if k is not None else 1.0), jit, ovh))
                         for r, (i, j, k) in zip(runs, idx)])
        return np.concatenate([(pred - pub) / ROW_SD, (x[:nd] - logp) / OFFSET_SD, x[nd:nd + nf] / FRAMEWORK_SD,
                               [jit / JITTER_SD, ovh / OVERHEAD_SD_S]])

    x0 = np.concatenate([logp, np.zeros(nf), [0.005, 0.0]])
    lo = np.concatenate([np.full(nd, math.log(0.05)), np.full(nf, -1.0), [0.0, 0.0]])
    hi = np.concatenate([np.zeros(nd), np.full(nf, 1.0), [0.2, 5.0]])
    sol = least_squares(residuals, np.clip(x0, lo, hi), bounds=(lo, hi), diff_step=1e-3, x_scale="jac")
    return TrainingFit(efficiency_by_device={d: float(math.exp(v)) for d, v in zip(devices, sol.x[:nd])},
                       prior_by_device={d: float(priors[d]) for d in devices},
                       jitter=float(sol.x[-2]), step_overhead_s=float(sol.x[-1]),
                       rows={d: sum(1 for r in runs if r.device == d) for d in devices},
                       framework_factor={f: float(math.exp(v)) for f, v in zip(frameworks, sol.x[nd:nd + nf])})


def planned(run: TrainingRun, f: TrainingFit, spec: DeviceSpec):
    """``plan()``'s fastest layout for a row whose layout is not published, at its GPU count and a
    4M-token global batch (both Llama papers), with the fit's figures; None when nothing fits."""
    from .planner import plan
    from .timing import TimeModel

    tm = TimeModel(efficiency=f.efficiency(spec, run.framework), jitter=f.jitter, step_overhead_s=f.step_overhead_s,
                   **FRAMEWORKS.get(run.framework, {}))
    res = plan(run.shape, spec, _gpus(run), _global_batch(run), time_model=tm, recompute=("selective", "full"))
    return res.fastest if res.status == "ok" else None


#: GPUs of a whole-run row that does not state them: the 2048 A100-80GB of the LLaMA paper (sec. 2.4),
#: the same company's cluster a few months earlier (Llama 2 states GPU-hours, not the count)
DEFAULT_GPUS = 2048


def _gpus(run: TrainingRun) -> int:
    return run.gpus or DEFAULT_GPUS


def predict_planned(run: TrainingRun, f: TrainingFit, spec: DeviceSpec) -> tuple[float, ParallelConfig] | None:
    """(predicted value in the row's own metric, the layout) for a row without a published layout:
    ideal GPU-hours = train_tokens / tokens per second x GPUs / 3600 (the paid hours divide this by
    the goodput, which cost_models prices: ``benchmarks/training_fidelity.py`` reports both), or
    tokens/s per GPU."""
    c = planned(run, f, spec)
    if c is None:
        return None
    tps = c.time.tokens_per_s
    if run.metric == "gpu_hours":
        return run.train_tokens / tps * _gpus(run) / 3600.0, c.config
    return tps / _gpus(run), c.config


def _global_batch(run: TrainingRun) -> int:
    """4M-token global batches (Llama papers), in sequences."""
    return (4 * 1024 * 1024) // run.shape.seq_len


def validate(runs: Sequence[TrainingRun], specs: Mapping[str, DeviceSpec], full: TrainingFit,
             progress: Callable[[], Any] | None = None) -> list[dict]:
    """Held-out prediction of every row: ``FOLDS``-fold cross-validation for the throughput rows
    (row ``i`` of the file is in fold ``i mod FOLDS``; each fold is predicted by a fit of the others),
    the full fit for the GPU-hours rows (never fitted)."""
    fitted = [r for r in runs if r.published_s is not None and r.config is not None]
    fold_fit = {}
    for k in range(FOLDS):
        fold_fit[k] = fit([x for i, x in enumerate(fitted) if i % FOLDS != k], specs, full.prior_by_device)
        if progress:
            progress()
    out = []
    for r in runs:
        spec = specs[r.device]
        if r in fitted:
            k = fitted.index(r) % FOLDS
            f = fold_fit[k]
            pred = predict_s(r, spec, f.efficiency(spec, r.framework, r.config.precision), f.jitter, f.step_overhead_s)
            out.append({"id": r.id, "category": r.category, "device": r.device, "framework": r.framework,
                        "published": r.published_s, "predicted": pred, "unit": "s/step",
                        "error": pred / r.published_s - 1, "held_out": f"{FOLDS}-fold (fold {k})",
                        "layout": _layout(r.config) + (f" ({r.layout_note})" if r.layout_note else "")})
        else:
            g = predict_planned(r, full, spec)
            out.append({"id": r.id, "category": r.category, "device": r.device, "framework": r.framework,
                        "published": r.value, "predicted": g[0] if g else None, "gpus": _gpus(r),
                        "parameters": r.shape.parameters(),
                        "unit": "GPU-hours" if r.metric == "gpu_hours" else "tokens/s/GPU",
                        "error": (g[0] / r.value - 1) if g else None,
                        "held_out": "test split (never fitted)",
                        "layout": _layout(g[1]) if g else "no layout fits"})
    return out


def _layout(c: ParallelConfig) -> str:
    return (f"dp{c.dp} tp{c.tp} pp{c.pp} mb{c.micro_batch}" + (f" v{c.interleave}" if c.interleave > 1 else "")
            + (f" ZeRO-{c.zero_stage}" if c.zero_stage else "") + f" {c.recompute}" + (" SP" if c.sequence_parallel else ""))


@cache
def training(path: str | None = None) -> TrainingFit:
    """The shipped training calibration (a neutral one, prior efficiencies and no jitter or overhead,
    when the file is missing: then the provenance says the prior is used)."""
    src = Path(path) if path else Path(str(resources.files("profilers").joinpath("data", DATA_JSON)))
    try:
        d = json.loads(src.read_text())["fit"]
        return TrainingFit(d["efficiency_by_device"], d["prior_by_device"], d["jitter"], d["step_overhead_s"], d["rows"],
                           d.get("framework_factor", {}))
    except FileNotFoundError:
        return TrainingFit({}, {}, 0.0, 0.0)
    except (OSError, ValueError, KeyError) as e:
        raise invalid("parallel.calibration.training", "path", f"a file written by `{COMMAND}`",
                      f"{src} ({type(e).__name__}: {e})") from None


def build(out: str | Path | None = None) -> dict:
    """Fit all throughput rows, validate every row held out, write the JSON."""
    import datetime

    from tqdm import tqdm

    specs = _specs()
    runs = load_runs()
    full = fit(runs, specs)
    bar = tqdm(total=FOLDS, desc="training calibration: cross-validation folds", leave=False)
    rows = validate(runs, specs, full, progress=lambda: bar.update())
    bar.close()
    d = {"fit": dataclasses.asdict(full), "validation": rows,
         "meta": {"command": COMMAND, "date": datetime.date.today().isoformat(), "rows": len(runs),
                  "row_sd": ROW_SD, "offset_sd": OFFSET_SD, "jitter_sd": JITTER_SD, "overhead_sd_s": OVERHEAD_SD_S}}
    path = Path(out) if out else Path(str(resources.files("profilers").joinpath("data", DATA_JSON)))
    path.write_text(json.dumps(d, indent=1, sort_keys=True) + "\n")
    training.cache_clear()
    return d


if __name__ == "__main__":
    build()
    print(f"wrote {DATA_JSON}")
