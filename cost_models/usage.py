"""Usage: the physical quantities a scenario consumes (device-hours, GB, requests), no dollars.

Computed once per estimate from the figures and the scenario, then priced by the four
component functions. Keeping quantities apart from prices is what lets every price be varied
(sensitivity, Monte Carlo) without recomputing feasibility.

Serving: replicas = ceil(peak_rps x samples_per_request / (batch_size / latency_s)), always on
for the horizon, each on ``devices_per_replica`` devices (1, or tp x pp of an LLM deployment);
feasible only if latency_s <= SLO and the inference peak fits in one device.
Training (per run): device-hours = samples x epochs / batch_size x train_step_s / efficiency /
3600, where efficiency is the scenario's flat scaling efficiency when devices > 1, else 1; and 1
when the training figures are a planned parallel step (``ModelFigures.train_devices``: the scale
losses are in ``train_step_s`` already, per device batch_size, on exactly that many devices).
Gradient exchange (data parallel across nodes): per global step the node leaders all-reduce
the gradients, 2 x (nodes - 1) x parameter_bytes crossing node boundaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from profilers.config import invalid

from .figures import ModelFigures, device_spec
from .scenario import Scenario

__all__ = ["Usage", "TrainingBlock", "Infeasible", "compute_usage"]


class Infeasible(Exception):
    """Raised inside :func:`compute_usage` when the plan cannot run; carries the message."""


@dataclass(frozen=True)
class TrainingBlock:
    """One kind of training per run: the base model or one technique's extra training."""

    label: str  # "base" or a technique name
    samples: float  # samples per epoch
    epochs: float
    device_hours_per_run: float
    global_steps_per_run: float


@dataclass(frozen=True)
class Usage:
    serve_device: str
    train_device: str
    horizon_months: float
    horizon_hours: float
    replicas: int
    throughput_samples_per_s: float
    serving_device_hours: float
    requests: float
    training_runs: int
    training_devices: int
    training_nodes: int
    efficiency: float
    blocks: tuple[TrainingBlock, ...] = field(default_factory=tuple)
    gradient_gb_per_run: float = 0.0
    response_gb: float = 0.0
    artifact_gb: float = 0.0
    serve_power_watts: float = 0.0
    train_power_watts: float = 0.0
    devices_per_replica: int = 1
    goodput: float = 1.0  # productive fraction of the paid training time (failures, checkpoints, evaluation)
    goodput_note: str = ""

    @property
    def training_device_hours_per_run(self) -> float:
        return sum(b.device_hours_per_run for b in self.blocks)

    @property
    def training_device_hours(self) -> float:
        return self.training_runs * self.training_device_hours_per_run


def _display(name: str, spec) -> str:
    """The catalog name, except "host" stays "host" (priced per vCPU-hour)."""
    return "host" if name.lower() == "host" else spec.name


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def compute_usage(figures: ModelFigures, scenario: Scenario, train_figures: ModelFigures | None = None,
                  model_name: str = "the model") -> Usage:
    """Quantities for ``scenario`` with ``figures`` serving (and ``train_figures`` training,
    default the same figures). Raises :class:`Infeasible` (SLO, memory) or ConfigError (input)."""
    tf = train_figures or figures
    s, t, own = scenario.serving, scenario.training, scenario.ownership
    serve_spec = device_spec(figures.device)
    train_spec = device_spec(tf.device)

    # ---- serving ------------------------------------------------------------------------------
    peak = s.peak_rps
    replicas = 0
    if peak > 0:
        if s.latency_slo_s is not None and figures.latency_s > s.latency_slo_s:
            allowed = (f">= the latency of {model_name} on {figures.device} at batch {figures.batch_size} "
                       f"({figures.latency_s:.4g} s)")
            raise Infeasible(f"{invalid('ServingPlan', 'latency_slo_s', allowed, s.latency_slo_s)} To fix: relax "
                             "the SLO, serve a smaller batch, or use a faster device or a technique that cuts latency.")
        if figures.peak_memory_bytes > serve_spec.memory_bytes:
            allowed = f"<= the memory of one {serve_spec.name} ({_gb(serve_spec.memory_bytes)})"
            got = f"{_gb(figures.peak_memory_bytes)} needed by {model_name}"
            raise Infeasible(f"{invalid('ModelFigures', 'peak_memory_bytes', allowed, got)} To fix: serve on a "
                             "larger device, lower the batch size, or shrink the model (quantize_int8, prune, "
                             "tensor_parallel).")
        need = peak * s.samples_per_request
        replicas = max(1, math.ceil(need / figures.throughput_samples_per_s * (1 - 1e-12)))
    serving_device_hours = replicas * figures.devices_per_replica * s.horizon_hours
    requests = s.avg_requests_per_s * s.horizon_hours * 3600.0

    # ---- training -----------------------------------------------------------------------------
    blocks = []
    efficiency = t.scaling_efficiency if t.devices > 1 else 1.0
    if tf.train_devices is not None:  # a planned parallel step: its scale losses are in train_step_s
        if tf.train_devices != t.devices:
            raise invalid("TrainingPlan", "devices", f"{tf.train_devices} (the device count the training figures "
                          f"were planned for: {tf.provenance})", t.devices)
        efficiency = 1.0
    plan = [("base", t.samples_per_epoch_in_samples, t.epochs)]
    for tech in scenario.techniques:
        ep = scenario.technique_epochs(tech)
        if ep > 0:
            samples = scenario.data.labeled_samples.get(tech) or t.samples_per_epoch_in_samples
            plan.append((tech, samples, ep))
    for label, samples, epochs in plan:
        total = samples * epochs
        if total <= 0:
            continue
        if tf.train_step_s is None:
            raise invalid("ModelFigures", "train_step_s", "a measured or projected step time when the scenario "
                          f"trains ({label}: {total:g} samples)", None)
        hours = total / tf.batch_size * tf.train_step_s / efficiency / 3600.0
        blocks.append(TrainingBlock(label, samples, epochs, hours, total / (tf.batch_size * t.devices)))
    runs = t.runs(s.horizon_months) if blocks else 0
    if blocks:
        need = tf.train_peak_memory_bytes if tf.train_peak_memory_bytes is not None else tf.peak_memory_bytes
        if need > train_spec.memory_bytes:
            allowed = f"<= the memory of one {train_spec.name} ({_gb(train_spec.memory_bytes)})"
            got = f"{_gb(need)} needed to train {model_name}"
            raise Infeasible(f"{invalid('ModelFigures', 'train_peak_memory_bytes', allowed, got)} To fix: train "
                             "on a larger device, a smaller batch, or shard the model (zero_sharding, tensor_parallel).")
    good, good_note = 1.0, ""
    if blocks:
        from profilers.profile import DTYPE_BYTES

        from .scenario import goodput

        wall = sum(b.device_hours_per_run for b in blocks) / t.devices
        good, good_note = goodput(t, t.devices, wall, tf.parameter_bytes / DTYPE_BYTES.get(tf.dtype, 2))
    nodes = math.ceil(t.devices / max(1, train_spec.devices_per_node))
    steps = sum(b.global_steps_per_run for b in blocks)
    gradient_gb = steps * 2 * (nodes - 1) * tf.parameter_bytes / 1e9 if nodes > 1 else 0.0

    def power(spec) -> float:
        return own.power_watts if own.power_watts is not None else float(spec.tdp_watts)

    return Usage(
        serve_device=_display(figures.device, serve_spec), train_device=_display(tf.device, train_spec), horizon_months=s.horizon_months,
        horizon_hours=s.horizon_hours, replicas=replicas, throughput_samples_per_s=figures.throughput_samples_per_s,
        devices_per_replica=figures.devices_per_replica, goodput=good, goodput_note=good_note,
        serving_device_hours=serving_device_hours, requests=requests, training_runs=runs,
        training_devices=t.devices, training_nodes=nodes, efficiency=efficiency, blocks=tuple(blocks),
        gradient_gb_per_run=gradient_gb, response_gb=requests * s.response_bytes / 1e9,
        artifact_gb=figures.parameter_bytes / 1e9, serve_power_watts=power(serve_spec),
        train_power_watts=power(train_spec),
    )

