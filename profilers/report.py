"""Rendering of profiles and projections: plain text for terminals, HTML for Jupyter.

Computing stays elsewhere; these functions only format figures they are given.
"""

from __future__ import annotations

import html
from typing import Iterable, Sequence

from .profile import Profile

__all__ = ["fmt_bytes", "fmt_seconds", "fmt_flops", "profile_rows", "profile_text", "profile_html",
           "projection_table", "text_table", "html_table"]


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def fmt_flops(f: float | None) -> str:
    if f is None:
        return "-"
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if f >= scale:
            return f"{f / scale:.3f} {unit}"
    return f"{f:.0f} FLOP"


def profile_rows(p: Profile) -> list[tuple[str, str]]:
    rows = [
        ("model", p.model),
        ("source", p.provenance),
        ("dtype / batch", f"{p.dtype} / {p.batch_size}" + (f" x {p.seq_len} tokens" if p.seq_len else "")),
        ("parameters", f"{p.parameters:,} ({fmt_bytes(p.parameter_bytes)})"),
        ("forward FLOPs", fmt_flops(p.forward_flops)),
        ("train-step FLOPs", fmt_flops(p.train_flops)),
    ]
    if p.latency:
        t = p.latency
        rows.append(("latency (median [p10, p90], runs)",
                     f"{fmt_seconds(t.median_s)} [{fmt_seconds(t.p10_s)}, {fmt_seconds(t.p90_s)}], {t.runs} runs, "
                     f"CI +-{t.ci_rel:.1%}" + ("" if t.stable else " (time cap hit before 2 % stability)")))
        rows.append(("throughput", f"{p.throughput_per_s:,.1f} samples/s"))
    if p.train_step:
        t = p.train_step
        rows.append(("train step (median [p10, p90], runs)",
                     f"{fmt_seconds(t.median_s)} [{fmt_seconds(t.p10_s)}, {fmt_seconds(t.p90_s)}], {t.runs} runs"))
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


def text_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def html_table(header: Sequence[str], rows: Iterable[Sequence[object]], caption: str = "") -> str:
    head = "".join(f"<th style='text-align:left'>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    cap = f"<caption style='text-align:left'><b>{html.escape(caption)}</b></caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def profile_text(p: Profile) -> str:
    rows = profile_rows(p)
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def profile_html(p: Profile) -> str:
    return html_table(("figure", "value"), profile_rows(p), caption=f"Profile: {p.model}")


PROJECTION_HEADER = ("device", "dtype", "latency", "samples/s", "train step", "peak mem (infer)",
                     "peak mem (train)", "fits", "bound (by op class)", "efficiency")


def projection_table(projections: Sequence) -> list[tuple[str, ...]]:
    rows = []
    for pr in projections:
        rows.append((
            pr.device, pr.dtype, fmt_seconds(pr.latency_s),
            f"{pr.throughput_per_s:,.4g}" if pr.throughput_per_s else "-",
            fmt_seconds(pr.train_step_s), fmt_bytes(pr.peak_memory_bytes), fmt_bytes(pr.train_peak_memory_bytes),
            "yes" if pr.fits_memory else "NO",
            ", ".join(f"{k}:{v}" for k, v in sorted(pr.bound.items())),
            ", ".join(f"{k} {v:.2f}" for k, v in pr.efficiency.items()),
        ))
    return rows
