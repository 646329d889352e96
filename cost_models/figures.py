"""ModelFigures: the few numbers the cost model needs about a model, as plain data.

cost_models never imports torch. It reads a measured ``Profile`` or a ``Projection`` (made in
``profilers``) by duck typing: any object with the attributes below works, and
:func:`figures_from` copies them into a :class:`ModelFigures`. Tests and users can also build
one by hand::

    ModelFigures(device="A10G", dtype="fp16", batch_size=8, latency_s=0.020, train_step_s=0.060,
                 peak_memory_bytes=3_000_000_000, train_peak_memory_bytes=9_000_000_000,
                 parameter_bytes=500_000_000, provenance="projected for A10G from ...")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from profilers import hardware
from profilers.config import ConfigError, check_positive, invalid, serializable

__all__ = ["FIELDS", "BAND_FIELDS", "ModelFigures", "figures_from", "device_spec", "devices_that_fit", "require_fit"]

#: the attribute names cost_models reads, and nothing else
FIELDS = ("device", "dtype", "batch_size", "latency_s", "train_step_s", "peak_memory_bytes",
          "train_peak_memory_bytes", "parameter_bytes", "provenance")
#: read when present: the projected times' error bands (low, high), from the calibration
BAND_FIELDS = ("latency_band_s", "train_step_band_s")
#: read when present: devices one serving replica occupies (a tensor-/pipeline-parallel LLM deployment),
#: and the training device count a parallel step time was planned for
OPTIONAL_FIELDS = (*BAND_FIELDS, "devices_per_replica", "train_devices")


_OPTIONAL = ("train_step_s", "train_peak_memory_bytes")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@serializable("cost_models.model_figures")
@dataclass(frozen=True)
class ModelFigures:
    """Measured or projected figures of one model on one device (see the module docstring).

    ``latency_s`` is one forward call of ``batch_size`` samples; ``train_step_s`` one training
    step of ``batch_size`` samples on one device (None if nobody measured or projected it).
    """

    device: str
    dtype: str
    batch_size: int
    latency_s: float
    train_step_s: float | None
    peak_memory_bytes: int
    train_peak_memory_bytes: int | None
    parameter_bytes: int
    provenance: str
    #: (low, high) seconds: the band the true time lies in (80 %, from the calibration's validation
    #: errors); None for a measurement or an uncalibrated projection
    latency_band_s: tuple[float, float] | None = None
    train_step_band_s: tuple[float, float] | None = None
    #: devices one serving replica occupies (tp x pp of an LLM deployment); ``peak_memory_bytes`` is
    #: then per device, and ``batch_size / latency_s`` the replica's throughput
    devices_per_replica: int = 1
    #: None: ``train_step_s`` is one device's step, and a multi-device run pays the scenario's flat
    #: ``scaling_efficiency``. An integer n: ``train_step_s`` is the step of ``batch_size`` samples
    #: per device on n devices laid out by :func:`profilers.parallel.plan` (collectives, bubbles,
    #: jitter and framework overhead included), so no flat efficiency is applied and the scenario
    #: must train on n devices
    train_devices: int | None = None

    def __post_init__(self) -> None:
        o = "ModelFigures"
        if not _is_int(self.devices_per_replica) or self.devices_per_replica < 1:
            raise invalid(o, "devices_per_replica", "an integer >= 1", self.devices_per_replica)
        if self.train_devices is not None and (not _is_int(self.train_devices) or self.train_devices < 1):
            raise invalid(o, "train_devices", "None or an integer >= 1", self.train_devices)
        for f in BAND_FIELDS:
            v = getattr(self, f)
            if v is not None:
                if not (isinstance(v, (tuple, list)) and len(v) == 2 and all(
                        isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in v) and v[0] <= v[1]):
                    raise invalid(o, f, "None or (low, high) seconds with 0 < low <= high", v)
                object.__setattr__(self, f, (float(v[0]), float(v[1])))
        for f in ("device", "dtype", "provenance"):
            v = getattr(self, f)
            if not isinstance(v, str) or not v.strip():
                raise invalid(o, f, "a non-empty string", v)
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise invalid(o, "batch_size", "an integer >= 1", self.batch_size)
        check_positive(o, "latency_s", self.latency_s)
        if self.train_step_s is not None:
            check_positive(o, "train_step_s", self.train_step_s)
        for f in ("peak_memory_bytes", "parameter_bytes"):
            v = getattr(self, f)
            if not _is_int(v) or v < 0:
                raise invalid(o, f, "an integer >= 0", v)
        v = self.train_peak_memory_bytes
        if v is not None and (not _is_int(v) or v < 0):
            raise invalid(o, "train_peak_memory_bytes", "an integer >= 0 or None", v)

    @property
    def throughput_samples_per_s(self) -> float:
        """Samples per second one device sustains: batch_size / latency_s."""
        return self.batch_size / self.latency_s


def figures_from(obj: Any) -> ModelFigures:
    """A :class:`ModelFigures` from any object with the :data:`FIELDS` attributes (or a dict).

    Reads nothing else, so a ``Profile``, a ``Projection`` or a user's own record all work.
    Byte counts given as floats with integral values are accepted.
    """
    if isinstance(obj, ModelFigures):
        return obj
    get = obj.get if isinstance(obj, dict) else (lambda k, d=None: getattr(obj, k, d))
    values = {}
    missing = object()
    for name in FIELDS:
        v = get(name, missing)
        if v is missing:
            raise invalid("ModelFigures", name, f"an attribute of the {type(obj).__name__} given", "missing")
        if v is None and name not in _OPTIONAL:
            raise invalid("ModelFigures", name, f"a measured or projected value (the {type(obj).__name__} has none)",
                          None)
        if name.endswith("_bytes") and isinstance(v, float) and math.isfinite(v) and v == int(v):
            v = int(v)
        values[name] = v
    for name in BAND_FIELDS:
        values[name] = get(name, None)
    values["devices_per_replica"] = get("devices_per_replica", 1)
    values["train_devices"] = get("train_devices", None)
    return ModelFigures(**values)


def device_spec(name: str) -> hardware.DeviceSpec:
    """``hardware.get`` with the error phrased for the figures' owner."""
    if isinstance(name, str) and name.lower() == "meta":
        raise invalid("ModelFigures", "device", "a real device (project an analyzed profile onto one first: "
                      "profilers.project(profile, device))", name)
    try:
        return hardware.get(name)
    except ConfigError:
        raise invalid("ModelFigures", "device", "one of " + ", ".join(hardware.names()) + ", 'host'", name) from None
    except ImportError:  # "host" needs profilers.host; a catalog without it cannot price the host
        raise invalid("ModelFigures", "device", "a catalog device (profilers.host is unavailable)", name) from None


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def devices_that_fit(figures: ModelFigures, devices: Iterable[str] | None = None, *, training: bool = False) -> list[str]:
    """Catalog devices whose memory holds the model's peak (inference, or training if asked)."""
    need = _need(figures, training)
    names = list(devices) if devices is not None else hardware.names()
    return [n for n in names if device_spec(n).memory_bytes >= need]


def _need(figures: ModelFigures, training: bool) -> int:
    if training and figures.train_peak_memory_bytes is not None:
        return figures.train_peak_memory_bytes
    return figures.peak_memory_bytes


def require_fit(figures: ModelFigures, devices: Iterable[str] | None = None, *, training: bool = False,
                model_name: str = "the model") -> list[str]:
    """The devices that fit, or a ConfigError naming the model, the largest device and the gap."""
    fit = devices_that_fit(figures, devices, training=training)
    if fit:
        return fit
    names = list(devices) if devices is not None else hardware.names()
    largest = max(names, key=lambda n: device_spec(n).memory_bytes) if names else "none"
    cap = device_spec(largest).memory_bytes if names else 0
    field = "train_peak_memory_bytes" if training and figures.train_peak_memory_bytes is not None else "peak_memory_bytes"
    err = invalid("ModelFigures", field,
                  f"<= the memory of at least one device (largest: {largest}, {_gb(cap)})",
                  f"{_gb(_need(figures, training))} needed by {model_name}")
    return _raise(err, "shard the model across devices (tensor_parallel) or shrink it (quantize_int8, prune).")


def _raise(err: ConfigError, fix: str):
    raise ConfigError(f"{err} To fix: {fix}")
