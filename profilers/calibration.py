"""Calibration of GPU projections against published measured figures: one source of efficiency.

A projection (:func:`profilers.project`) prices each kernel a model launches at its roofline time
``t`` (its op at its own dtype: ``max(flops / peak, bytes / bandwidth)``) and runs it at

    t_kernel = max(t / e[device, op class, runtime], o[runtime])        (seconds)

``e`` is the fraction of the roofline the real kernels reach, ``o`` the per-kernel launch and
framework overhead (no kernel, however small, finishes faster). Both come from here:

* **rows**: every published measured figure in ``profilers/data/published_measurements.csv`` that the
  projection can express: single-GPU inference latency / throughput at a stated batch and
  single-GPU training throughput, with the op records of the model at that row's batch and sequence
  length (``analyze()`` on the meta device, every op cast to the row's precision, as TensorRT and
  AMP run the network); and LLM serving rows (time to first token, time per output token, output
  tokens/s at a stated batch, tensor-parallel rows included), whose kernels come from
  :mod:`profilers.llm` (prefill, decode steps, all-reduces) for the row's format and deployment. Devices outside the catalog (A10, A30, L40S, V100) are read from
  ``calibration_devices.toml`` for these rows only.
* **fit**: log-space least squares (``scipy.optimize.least_squares``) of the rows' times (each row
  weighted as a log error of standard deviation :data:`ROW_SD`) over ``log e = global[op class,
  runtime] + generation[gen, class, runtime] + device[device, class, runtime]`` and
  ``log o = overhead[runtime] + device[device, runtime]``. Generation and device offsets are shrunk
  towards 0 (prior standard deviations :data:`OFFSET_SD` and :data:`OVERHEAD_SD` in log units), the
  overheads towards the sourced figures of ``runtime_overheads.toml`` (:data:`OVERHEAD_SD`), so a
  device with no rows takes its generation's efficiency and the runtime's overhead, a generation
  with none the all-device fit, and says so.
* **validation**: every row is predicted by a fit that did not see it (leave-one-out), and by a fit
  that saw no row of its device (leave-one-device-out). Their ratios published / predicted give the
  80 % band a projection carries: :meth:`Calibration.band` (10th and 90th percentiles), the
  leave-one-out band for a device with rows, the leave-one-device-out band for one without.

The fitted figures are kept in ``profilers/data/calibration.json`` with the rows and op records
they were fitted on; ``python -m profilers.calibration`` rebuilds it (re-analyzing the models:
needs transformers, about a minute) and the test suite checks that refitting the shipped rows gives
the shipped figures.
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .config import invalid
from .hardware import DeviceSpec
from .profile import DTYPE_BYTES, OpRecord
from .projection import CLASSES, RUNTIMES, kernel_table, kernel_time

__all__ = ["Calibration", "Lookup", "load", "fit", "Fit", "RUNTIMES", "CLASSES", "OFFSET_SD",
           "OVERHEAD_SD"]

#: prior standard deviation (log units) of a generation's or device's efficiency offset: a factor
#: e^0.7 ~ 2 either way before the rows speak
OFFSET_SD = 0.7
#: prior standard deviation (log units) of the fitted overhead around the sourced figures (x/ 3)
OVERHEAD_SD = math.log(3.0)
#: prior standard deviation of the global log-efficiency around log 0.5 (weak: it only keeps a
#: class without rows defined)
GLOBAL_SD = 2.0
#: standard deviation (log units) assumed for a published row around the model: the scale that weighs
#: the rows against the priors above (about the model's typical out-of-sample error)
ROW_SD = 0.25
#: the 80 % band: percentiles of published / predicted over the validation rows
BAND_PERCENTILES = (10, 90)


# --------------------------------------------------------------------------------------------
# the fit
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Fit:
    """Fitted log-efficiencies and overheads. ``global_`` keys ``"runtime/class"``; ``generation``
    ``"gen/runtime/class"``; ``device`` ``"device/runtime/class"`` (offsets in log units);
    ``overhead_s`` per runtime."""

    global_: dict[str, float]
    generation: dict[str, float]
    device: dict[str, float]
    overhead_s: dict[str, float]
    #: per-device offsets of the log overhead, "device/runtime" (the host and driver stack differ)
    overhead_device: dict[str, float] = dataclasses.field(default_factory=dict)

    def overhead(self, device: str, runtime: str) -> float:
        return self.overhead_s[runtime] * math.exp(self.overhead_device.get(f"{device}/{runtime}", 0.0))

    def efficiency(self, device: str, generation: str, runtime: str) -> dict[str, float]:
        out = {}
        for c in CLASSES:
            g = self.global_.get(f"{runtime}/{c}", math.log(0.5))
            g += self.generation.get(f"{generation}/{runtime}/{c}", 0.0)
            g += self.device.get(f"{device}/{runtime}/{c}", 0.0)
            out[c] = min(1.0, math.exp(g))
        return out

    def to_json(self) -> dict:
        return {"global": self.global_, "generation": self.generation, "device": self.device,
                "overhead_s": self.overhead_s, "overhead_device": self.overhead_device}

    @classmethod
    def from_json(cls, d: Mapping) -> "Fit":
        return cls(dict(d["global"]), dict(d["generation"]), dict(d["device"]), dict(d["overhead_s"]),
                   dict(d.get("overhead_device", {})))


def fit(rows: Sequence[Mapping], kernels: Sequence[Sequence[tuple[str, int, float, float]]],
        overhead_prior_s: Mapping[str, float]) -> Fit:
    """Fit efficiencies and overheads to ``rows`` (each with ``device``, ``generation``, ``runtime``
    and ``t_published_s``), whose kernels (:func:`kernel_table` on the row's device) are ``kernels``."""
    from scipy.optimize import least_squares

    if not rows:
        raise invalid("calibration.fit", "rows", "at least one row", 0)
    names: list[str] = [f"overhead/{rt}" for rt in RUNTIMES]
    index = {n: i for i, n in enumerate(names)}

    def slot(name: str) -> int:
        if name not in index:
            index[name] = len(names)
            names.append(name)
        return index[name]

    # one entry per kernel signature of every row: its row, calls, roofline time, and the three
    # parameters its log-efficiency sums
    row_i, calls, troof, p_g, p_gen, p_dev, p_o, p_od = [], [], [], [], [], [], [], []
    for i, (r, ks) in enumerate(zip(rows, kernels)):
        rt = r["runtime"]
        for c, n, tc, tm in ks:
            row_i.append(i)
            calls.append(n)
            troof.append(max(tc, tm))
            p_g.append(slot(f"global/{rt}/{c}"))
            p_gen.append(slot(f"generation/{r['generation']}/{rt}/{c}"))
            p_dev.append(slot(f"device/{r['device']}/{rt}/{c}"))
            p_o.append(index[f"overhead/{rt}"])
            p_od.append(slot(f"odevice/{r['device']}/{rt}"))
    row_i, calls, troof = np.array(row_i), np.array(calls, float), np.array(troof)
    p_g, p_gen, p_dev, p_o, p_od = map(np.array, (p_g, p_gen, p_dev, p_o, p_od))
    t_pub = np.array([r["t_published_s"] for r in rows])
    prior = np.zeros(len(names))
    sd = np.zeros(len(names))
    for n, i in index.items():
        kind = n.split("/")[0]
        if kind == "overhead":
            prior[i], sd[i] = math.log(overhead_prior_s[n.split("/")[1]]), OVERHEAD_SD
        elif kind == "global":
            prior[i], sd[i] = math.log(0.5), GLOBAL_SD
        elif kind == "odevice":
            prior[i], sd[i] = 0.0, OVERHEAD_SD
        else:
            prior[i], sd[i] = 0.0, OFFSET_SD

    def residuals(x: np.ndarray) -> np.ndarray:
        loge = np.minimum(0.0, x[p_g] + x[p_gen] + x[p_dev])
        per = calls * np.maximum(troof * np.exp(-loge), np.exp(x[p_o] + x[p_od]))
        pred = np.bincount(row_i, weights=per, minlength=len(rows))
        return np.concatenate([np.log(pred / t_pub) / ROW_SD, (x - prior) / sd])

    sol = least_squares(residuals, prior.copy(), method="trf", x_scale=1.0, max_nfev=2000)
    x = sol.x
    out: dict[str, dict[str, float]] = {"global": {}, "generation": {}, "device": {}, "overhead": {}, "odevice": {}}
    for n, i in index.items():
        kind, key = n.split("/", 1)
        out[kind][key] = float(x[i])
    return Fit(out["global"], out["generation"], out["device"],
               {k: math.exp(v) for k, v in out["overhead"].items()}, out["odevice"])


# --------------------------------------------------------------------------------------------
# the shipped calibration
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Lookup:
    """What a projection onto one device in one runtime reads from the calibration."""

    efficiency: dict[str, float]  # op class -> fraction of the roofline
    overhead_s: float  # per kernel
    band: tuple[float, float]  # published / predicted, 10th and 90th percentile of the validation rows
    rows: tuple[int, ...]  # ids (CSV line numbers) of the rows fitted on this device, or on its generation
    source: str  # one sentence for the provenance


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The shipped calibration (``profilers/data/calibration.json``)."""

    rows: tuple[dict, ...]
    fit: Fit
    bands: dict[str, dict[str, list[float]]]  # "device with rows" / "device without rows" -> runtime -> [lo, hi]
    overhead_prior: dict[str, dict]
    meta: dict

    def lookup(self, device: DeviceSpec, runtime: str) -> Lookup:
        if runtime not in RUNTIMES:
            raise invalid("project", "runtime", "one of " + ", ".join(map(repr, RUNTIMES)), runtime)
        if device.kind == "cpu":  # no published CPU rows: a GPU's fit says nothing about a CPU's kernels
            from .projection import DEFAULT_EFFICIENCY

            return Lookup(dict.fromkeys(CLASSES, DEFAULT_EFFICIENCY), 0.0, (1.0, 1.0), (),
                          f"no calibration rows for CPUs: the stated default efficiency {DEFAULT_EFFICIENCY} "
                          "(Narayanan et al. 2021), no per-kernel overhead, no error band")
        same_rt = [r for r in self.rows if r["runtime"] == runtime]
        own = tuple(r["id"] for r in same_rt if r["device"] == device.name)
        gen = tuple(r["id"] for r in same_rt if r["generation"] == device.generation and device.generation)
        eff = self.fit.efficiency(device.name, device.generation, runtime)
        o = self.fit.overhead(device.name, runtime)
        prior = self.overhead_prior[runtime]
        o_txt = (f"per-kernel overhead {o * 1e6:.3g} us ({runtime}; fitted, prior {prior['value_us']:g} us from "
                 f"{prior['sources']})")
        if own:
            band = self.bands["device with rows"][runtime]
            src = (f"calibrated on {len(own)} published {runtime} row(s) of {device.name} (rows {_ids(own)} of "
                   "published_measurements.csv; 80 % band from leave-one-out errors)")
            rows = own
        elif gen:
            band = self.bands["device without rows"][runtime]
            src = (f"no published {runtime} rows for {device.name}: the {device.generation} generation's fit (rows "
                   f"{_ids(gen)} of published_measurements.csv; 80 % band from leave-one-device-out errors)")
            rows = gen
        else:
            band = self.bands["device without rows"][runtime]
            rows = tuple(r["id"] for r in same_rt)
            src = (f"no published {runtime} rows for {device.name} or its generation "
                   f"({device.generation or 'unknown'}): the all-device fit (rows {_ids(rows)} of "
                   "published_measurements.csv; 80 % band from leave-one-device-out errors)")
        return Lookup(eff, o, (band[0], band[1]), rows, src + "; " + o_txt)


def abs_error_stats(errors: Sequence[float | None]) -> tuple[float, float] | None:
    """(median, 90th percentile) of |error| over the given relative errors (None entries skipped;
    the p90 is the ceil(0.9 n)-th smallest), or None when there are none."""
    a = sorted(abs(e) for e in errors if e is not None)
    if not a:
        return None
    return float(np.median(a)), a[min(len(a) - 1, math.ceil(0.9 * len(a)) - 1)]


def _ids(ids: Sequence[int]) -> str:
    ids = sorted(ids)
    return ", ".join(map(str, ids)) if len(ids) <= 8 else ", ".join(map(str, ids[:8])) + f", ... ({len(ids)} in all)"


DATA = "calibration.json"


@cache
def load(path: str | None = None) -> Calibration:
    """The calibration shipped in ``profilers/data/calibration.json`` (or the file at ``path``)."""
    src = Path(path) if path else Path(str(resources.files("profilers").joinpath("data", DATA)))
    try:
        d = json.loads(src.read_text())
        return Calibration(tuple(d["rows"]), Fit.from_json(d["fit"]), d["bands"], d["overhead_prior"], d["meta"])
    except (OSError, ValueError, KeyError) as e:
        raise invalid("calibration.load", "path", "a calibration file written by `python -m profilers.calibration`",
                      f"{src} ({type(e).__name__}: {e})") from None


def row_ops(d: Mapping[str, Any], row: Mapping) -> tuple[str, tuple[OpRecord, ...]]:
    """The dtype the row's model was analyzed in and the op records the row was fitted on (none for
    an LLM row: profilers.llm prices it from the model's shape)."""
    if "llm" in row:
        return "", ()
    o = d["ops"][row["ops"]]
    return o["dtype"], tuple(OpRecord(*r) for r in o["records"])


def row_kernels(row: Mapping, ops: tuple[str, Sequence[OpRecord]], specs: Mapping[str, DeviceSpec]):
    """The row's kernels as :func:`profilers.project` prices them: every op cast to the row's precision
    (bytes scaled by the dtype's byte ratio), in the row's runtime, on the row's device."""
    if "llm" in row:
        return llm_kernels(row, specs)
    dtype, records = ops
    scale = DTYPE_BYTES[row["cast"]] / DTYPE_BYTES[dtype]
    return kernel_table(records, specs[row["device"]], row["runtime"], row["cast"], bytes_scale=scale, default=dtype)


def overhead_prior(path: str | Path | None = None) -> dict[str, dict]:
    """Per runtime: the median of the sourced per-kernel GPU overheads (``runtime_overheads.toml``)."""
    import statistics
    import tomllib

    src = Path(path) if path else Path(str(resources.files("profilers").joinpath("data", "runtime_overheads.toml")))
    rows = tomllib.loads(src.read_text()).get("overhead", [])
    out = {}
    for rt in RUNTIMES:
        # GPU figures whose primary source was read (a figure known only from secondary summaries is kept
        # in the file for reference, not used)
        vals = [r for r in rows if r.get("runtime") == rt and r.get("device_kind") == "gpu"
                and r.get("primary_read", True)]
        if not vals:
            raise invalid(f"runtime overheads {src.name}", "overhead", f"at least one sourced figure for {rt!r}", 0)
        out[rt] = {"value_us": statistics.median(float(r["value_us"]) for r in vals),
                   "sources": "; ".join(f"{r['source']} ({r['date']}): {r['value_us']:g} us" for r in vals)}
    return out


def refit(d: Mapping[str, Any], specs: Mapping[str, DeviceSpec], *, exclude: Any = None) -> Fit:
    """Fit the rows of a calibration file (``exclude(row)`` True: left out)."""
    rows = [r for r in d["rows"] if not (exclude and exclude(r))]
    ks = [row_kernels(r, row_ops(d, r), specs) for r in rows]
    prior = {rt: v["value_us"] * 1e-6 for rt, v in d["overhead_prior"].items()}
    return fit(rows, ks, prior)


def predict(f: Fit, row: Mapping, kernels) -> float:
    return kernel_time(kernels, f.efficiency(row["device"], row["generation"], row["runtime"]),
                       f.overhead(row["device"], row["runtime"]))


# --------------------------------------------------------------------------------------------
# building the file from the published rows (python -m profilers.calibration)
# --------------------------------------------------------------------------------------------

_BERT_LARGE = {"model_type": "bert", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
               "intermediate_size": 4096, "vocab_size": 30522, "max_position_embeddings": 512}
#: published model name -> (category, what analyze() takes). Config: the model's published
#: architecture (BERT-Large: Devlin et al. 2019). LLM rows are priced by profilers.llm instead.
MODELS = {
    "ResNet-50 v1.5": ("cnn", "resnet50"),
    "BERT-Large": ("encoder", _BERT_LARGE),
    "BERT-Large (SQuAD v1.1 fine-tuned)": ("encoder", _BERT_LARGE),
    "BERT-Base": ("encoder", "bert-base-uncased"),
}
#: LLM metrics: priced by profilers.llm (prefill, decode steps, tensor parallelism)
LLM_METRICS = {"time_to_first_token_ms": "llm prefill", "ms_per_output_token": "llm decode",
               "tokens_per_s": "llm throughput"}
#: a published row's precision -> the profilers.llm weight format when the row does not name one
LLM_WEIGHTS = {"fp16": "fp16", "bf16": "bf16", "fp8": "fp8", "int8": "int8_weight_only",
               "int4": "int4_weight_only", "fp32": "fp32"}


def llm_model(name: str) -> str | None:
    """The profilers.llm config a published model name denotes (None: not one it knows)."""
    n = name.lower().replace(" ", "-")
    for key, pat in (("llama-2-70b", "llama-2-70b"), ("llama-2-13b", "llama-2-13b"), ("llama-2-7b", "llama-2-7b"),
                     ("llama-3.1-70b", "llama-3.1-70b"), ("llama-3.1-70b", "llama-3.3-70b"),
                     ("llama-3-70b", "llama-3-70b"), ("llama-3.1-8b", "llama-3.1-8b"), ("llama-3-8b", "llama-3-8b"),
                     ("mistral-7b", "mistral-7b"), ("gpt-j-6b", "gpt-j-6b")):
        if n.startswith(pat):
            return key
    return None


#: the metrics one projected forward pass expresses (LLM metrics go through profilers.llm)
METRICS = ("latency_ms", "throughput_per_s")
#: a row's precision -> the dtype every op is cast to (AMP runs the matmuls and convolutions in fp16)
CAST = {"amp": "fp16"}


def calibration_specs() -> dict[str, DeviceSpec]:
    """The catalog devices and the calibration-only ones (``calibration_devices.toml``), by name."""
    from . import hardware

    out = dict(hardware.catalog())
    for s in hardware.read(str(resources.files("profilers").joinpath("data", "calibration_devices.toml"))):
        out.setdefault(s.name, s)
    return out


def row_device(device: str, variant: str, specs: Mapping[str, DeviceSpec]) -> str | None:
    """The device a row ran on, when the row's variant determines it (memory bandwidth differs
    between A100 40/80 GB and H100 SXM/PCIe, so an unstated variant is not guessed)."""
    v = variant.upper()
    if device == "A100":
        return "A100-40GB" if "40" in v else "A100-80GB" if "80" in v else None
    if device == "H100":
        return "H100-PCIe" if "PCIE" in v else "H100-SXM" if ("SXM" in v or "HBM3" in v) else None
    if device in specs:
        return device
    found = [n for n in specs if n.split("-")[0].split(" ")[0] == device]
    return found[0] if len(found) == 1 else None


def _llm_expressible(row: Any, specs: Mapping[str, DeviceSpec]) -> tuple[str, str] | str:
    from . import llm

    key = llm_model(row.model)
    if key is None:
        return "model not in profilers.llm's configs"
    if row.metric not in LLM_METRICS:
        return f"{row.metric}: not an LLM serving metric"
    dev = row_device(row.device, row.device_variant, specs)
    if dev is None:
        return f"device {row.device} {row.device_variant or '(variant not stated)'} not determined"
    if not row.seq_len or (row.metric != "time_to_first_token_ms" and not row.output_len):
        return "input or output length not stated"
    if row.metric != "ms_per_output_token" and not row.batch_size:
        return "no batch size stated"
    try:
        _llm_setup(row, key, dev, specs)
    except Exception as e:  # noqa: BLE001 - a setup profilers.llm rejects (format, tp): the reason is kept
        return f"profilers.llm cannot express it ({str(e).split(';')[0][:80]})"
    return LLM_METRICS[row.metric], dev


def _llm_setup(row: Any, key: str, dev: str, specs: Mapping[str, DeviceSpec]) -> dict:
    """The profilers.llm deployment a published LLM row describes (checked by profilers.llm)."""
    from . import llm

    weights = (getattr(row, "weights", "") or LLM_WEIGHTS.get(row.precision, "")) or "fp16"
    gpus = int(row.gpus or 1)
    spec = specs[dev]
    tp = min(gpus, spec.devices_per_node)
    if gpus % tp:
        raise ValueError(f"{gpus} GPUs do not split into nodes of {spec.devices_per_node}")
    setup = {"model": key, "weights": weights, "kv": getattr(row, "kv_dtype", "") or None, "tp": tp,
             "pp": gpus // tp, "batch": int(row.batch_size or 1), "input": int(row.seq_len),
             "output": int(row.output_len or 1)}
    llm.decode_kernels(key, spec, weights=setup["weights"], kv=setup["kv"], tp=tp, pp=setup["pp"],
                       batch=setup["batch"], context=setup["input"] + setup["output"])
    return setup


def llm_kernels(row: Mapping, specs: Mapping[str, DeviceSpec]) -> list:
    """An LLM row's kernels as profilers.llm prices them: TTFT the prefill; TPOT one decode step at
    the mean context; tokens/s the prefill plus ``output`` decode steps of the row's batch."""
    from . import llm

    s, spec = row["llm"], specs[row["device"]]
    kw = dict(weights=s["weights"], kv=s["kv"], tp=s["tp"], pp=s["pp"], batch=s["batch"])
    if row["metric"] == "time_to_first_token_ms":
        return llm.prefill_kernels(s["model"], spec, tokens=s["input"], **kw)
    step = llm.decode_kernels(s["model"], spec, context=s["input"] + max(1, s["output"] // 2), **kw)
    if row["metric"] == "ms_per_output_token":
        return step
    pre = llm.prefill_kernels(s["model"], spec, tokens=s["input"], **kw)
    return pre + [(c, n * s["output"], tc, tm) for c, n, tc, tm in step]


def expressible(row: Any, specs: Mapping[str, DeviceSpec]) -> tuple[str, str] | str:
    """(category, device) of a published row, or why the projection cannot express it yet."""
    if row.task == "inference" and (row.metric in LLM_METRICS or llm_model(row.model)):
        return _llm_expressible(row, specs)
    if row.metric not in METRICS:
        return f"{row.metric}: not a metric of one forward pass"
    if row.gpus not in ("", "1"):
        return "more than one GPU"
    if not row.batch_size:
        return "no batch size stated"
    if row.model not in MODELS:
        return "model not in the calibration's table"
    dev = row_device(row.device, row.device_variant, specs)
    if dev is None:
        return f"device {row.device} {row.device_variant or '(variant not stated)'} not determined"
    cat = MODELS[row.model][0]
    if cat != "cnn" and not row.seq_len:
        return "no sequence length stated"
    if row.task == "training" and row.metric != "throughput_per_s":
        return "training row without a throughput"
    cast = CAST.get(row.precision, row.precision)
    if not specs[dev].supports(cast):
        return f"{dev} lists no {cast} peak"
    return ("training " + cat if row.task == "training" else cat), dev


def _analyze(model: Any, batch: int, seq: int | None, train: bool):
    from .analysis import analyze

    if model == "resnet50":
        import torch
        import transformers as T

        return analyze(lambda: T.ResNetForImageClassification(T.ResNetConfig(num_labels=1000)), batch_size=batch,
                       inputs=lambda b: torch.zeros(b, 3, 224, 224), train=train, dtype="fp32", name="ResNet-50")
    return analyze(model, batch_size=batch, seq_len=seq, train=train, dtype="bf16")


def _band(ratios: Sequence[float]) -> list[float]:
    lo, hi = np.percentile(np.asarray(ratios), BAND_PERCENTILES)
    return [float(lo), float(hi)]


def validate(d: Mapping[str, Any], specs: Mapping[str, DeviceSpec], progress: Any = None) -> dict:
    """Leave-one-out and leave-one-device-out predictions of every row and the bands they give."""
    rows = d["rows"]
    ks = {r["id"]: row_kernels(r, row_ops(d, r), specs) for r in rows}
    loo, lodo = {}, {}
    for r in rows:
        f = refit(d, specs, exclude=lambda o, r=r: o["id"] == r["id"])
        loo[r["id"]] = predict(f, r, ks[r["id"]])
        if progress:
            progress()
    for dev in sorted({r["device"] for r in rows}):
        f = refit(d, specs, exclude=lambda o, dev=dev: o["device"] == dev)
        for r in rows:
            if r["device"] == dev:
                lodo[r["id"]] = predict(f, r, ks[r["id"]])
        if progress:
            progress()
    bands: dict[str, dict[str, list[float]]] = {"device with rows": {}, "device without rows": {}}
    for key, pred in (("device with rows", loo), ("device without rows", lodo)):
        for rt in RUNTIMES:
            ratios = [r["t_published_s"] / pred[r["id"]] for r in rows if r["runtime"] == rt]
            if len(ratios) < 5:  # too few of this runtime for percentiles: every row's
                ratios = [r["t_published_s"] / pred[r["id"]] for r in rows]
            bands[key][rt] = _band(ratios)
    return {"loo_s": {str(k): v for k, v in loo.items()}, "lodo_s": {str(k): v for k, v in lodo.items()},
            "bands": bands}


def build(out: str | Path | None = None) -> dict:
    """Analyze the model of every expressible published row, fit, validate, write the file."""
    import datetime

    import torch
    from tqdm import tqdm

    from . import published

    specs = calibration_specs()
    df = published.load_published()
    rows, ops, skipped = [], {}, {}
    for i, row in df.iterrows():
        what = expressible(row, specs)
        if isinstance(what, str):
            skipped[what] = skipped.get(what, 0) + 1
            continue
        cat, dev = what
        base = {"id": int(i) + 2, "device": dev, "generation": specs[dev].generation, "runtime": row.runtime,
                "category": cat, "task": row.task, "model": row.model, "precision": row.precision,
                "metric": row.metric, "source": row.source}
        if cat.startswith("llm"):
            setup = _llm_setup(row, llm_model(row.model), dev, specs)
            per_gpu = "per GPU" in row.unit
            n = setup["batch"] * setup["output"]
            if row.metric == "tokens_per_s":  # the time of the batch's n output tokens on the deployment
                t = n / (row.value_si * setup["tp"] * setup["pp"]) if per_gpu else n / row.value_si
            else:
                t = row.value_si
            rows.append({**base, "llm": setup, "batch": setup["batch"], "seq": setup["input"], "t_published_s": t})
            continue
        batch, seq = int(row.batch_size), int(row.seq_len) if row.seq_len else None
        train = row.task == "training"
        key = f"{row.model}|b{batch}|s{seq or ''}|{'train' if train else 'infer'}"
        if key not in ops:
            p = _analyze(MODELS[row.model][1], batch, seq, train)
            ops[key] = {"dtype": p.dtype,
                        "records": [list(dataclasses.astuple(o)) for o in (p.train_ops if train else p.ops)]}
        rows.append({**base, "cast": CAST.get(row.precision, row.precision), "batch": batch, "seq": seq, "ops": key,
                     "t_published_s": batch / row.value_si if row.metric == "throughput_per_s" else row.value_si})
    d: dict[str, Any] = {"rows": rows, "ops": ops, "overhead_prior": overhead_prior()}
    d["fit"] = refit(d, specs).to_json()
    bar = tqdm(total=len(rows) + len({r["device"] for r in rows}), desc="validating", leave=False)
    v = validate(d, specs, progress=lambda: bar.update())
    bar.close()
    d["bands"] = v.pop("bands")
    d["validation"] = v
    import transformers

    d["meta"] = {"command": "python -m profilers.calibration", "date": datetime.date.today().isoformat(),
                 "torch": torch.__version__, "transformers": transformers.__version__,
                 "published_rows": len(df), "rows": len(rows), "skipped": skipped}
    text = json.dumps(d, indent=1, sort_keys=True)
    dest = Path(out) if out else Path(__file__).parent / "data" / DATA
    dest.write_text(text + "\n")
    load.cache_clear()
    return d


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Rebuild profilers/data/calibration.json from the published rows.")
    ap.add_argument("--out", default=None, help="write here instead of profilers/data/calibration.json")
    a = ap.parse_args()
    res = build(a.out)
    print(f"{res['meta']['rows']} rows fitted; overheads " + ", ".join(
        f"{k} {v * 1e6:.3g} us" for k, v in res["fit"]["overhead_s"].items()))
