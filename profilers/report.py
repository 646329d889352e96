"""Rendering of profiles and projections: plain text for terminals, HTML for Jupyter.

Computing stays elsewhere; these functions only choose the rows. The formatters and the table
renderer are :mod:`profilers.render`'s.
"""

from __future__ import annotations

from typing import Sequence

from .profile import Profile
from .render import fmt_bytes, fmt_flops, fmt_seconds, html_table, text_table

__all__ = ["profile_rows", "profile_text", "profile_html", "PROJECTION_HEADER", "projection_table"]


def _timing_text(t) -> str:
    text = (f"{fmt_seconds(t.median_s)} [{fmt_seconds(t.p10_s)}, {fmt_seconds(t.p90_s)}], {t.runs} runs, "
            f"CI +-{t.ci_rel:.1%}")
    if t.contended:
        text += (f" (CONTENDED: the process had {t.cpu_share:.0%} of the wall time as CPU time; another process "
                 "held the cores, so the interval is widened and the figure is not stable)")
    elif not t.stable:
        text += " (time cap hit before 2 % stability)"
    if t.threads is not None:
        text += f"; {t.threads} torch thread{'s' if t.threads != 1 else ''}"
    return text


def profile_rows(p: Profile) -> list[tuple[str, str]]:
    """(figure, value) pairs of a profile, formatted for display."""
    rows = [
        ("model", p.model),
        ("source", p.provenance),
        ("dtype / batch", f"{p.dtype} / {p.batch_size}" + (f" x {p.seq_len} tokens" if p.seq_len else "")),
        ("parameters", f"{p.parameters:,} ({fmt_bytes(p.parameter_bytes)})"),
        ("forward FLOPs", fmt_flops(p.forward_flops)),
        ("train-step FLOPs", fmt_flops(p.train_flops)),
    ]
    if p.latency:
        rows.append(("latency (median [p10, p90], runs)", _timing_text(p.latency)))
        rows.append(("throughput", f"{p.throughput_per_s:,.1f} samples/s"))
    if p.train_step:
        rows.append(("train step (median [p10, p90], runs)", _timing_text(p.train_step)))
    rows += [
        ("peak memory: inference", fmt_bytes(p.peak_memory_bytes)),
        ("peak memory: training step", fmt_bytes(p.train_peak_memory_bytes)),
    ]
    if p.activation_bytes is not None:
        rows += [("gradients", fmt_bytes(p.gradient_bytes)), ("optimizer state", fmt_bytes(p.optimizer_state_bytes)),
                 ("activations (saved for backward)", fmt_bytes(p.activation_bytes))]
    if p.serialized_bytes is not None:
        rows.append(("serialized state_dict", fmt_bytes(p.serialized_bytes)))
    if p.memory_method:
        rows.append(("memory method", p.memory_method))
    return rows


def profile_text(p: Profile) -> str:
    """The profile as ``figure  value`` lines (see :func:`profile_rows`)."""
    return text_table(("figure", "value"), profile_rows(p), header=False)


def profile_html(p: Profile) -> str:
    """The profile as an escaped HTML table, captioned with the model's name (Jupyter)."""
    return html_table(("figure", "value"), profile_rows(p), caption=f"Profile: {p.model}")


PROJECTION_HEADER = ("device", "dtype", "latency", "80 % band", "samples/s", "train step", "peak mem (infer)",
                     "peak mem (train)", "fits", "bound (by op class)", "efficiency")


def projection_table(projections: Sequence) -> list[tuple[str, ...]]:
    """One row of display strings per projection, under :data:`PROJECTION_HEADER`."""
    rows = []
    for pr in projections:
        rows.append((
            pr.device, pr.dtype, fmt_seconds(pr.latency_s),
            (f"{fmt_seconds(pr.latency_band_s[0])} - {fmt_seconds(pr.latency_band_s[1])}"
             if getattr(pr, "latency_band_s", None) else "-"),
            f"{pr.throughput_per_s:,.4g}" if pr.throughput_per_s else "-",
            fmt_seconds(pr.train_step_s), fmt_bytes(pr.peak_memory_bytes), fmt_bytes(pr.train_peak_memory_bytes),
            "yes" if pr.fits_memory else "NO",
            ", ".join(f"{k}:{v}" for k, v in sorted(pr.bound.items())),
            ", ".join(f"{k} {v:.2f}" for k, v in pr.efficiency.items()),
        ))
    return rows
