"""Projection fidelity: predicted vs published measured figures, with leave-one-out calibration.

    HF_HUB_OFFLINE=1 python benchmarks/fidelity.py [--out benchmarks/results/fidelity.md]

For every row of ``profilers/data/published_measurements.csv`` that the projection can express
(single-GPU inference latency or throughput at a stated batch, and LLM time to first token, on a
catalog device whose variant the row names), the model is analyzed on the meta device at the row's
batch and sequence length and projected onto the device with every op cast to the row's precision
(TensorRT runs the whole network in it), at efficiency 1: the roofline time ``t_roof``. Then:

* **default**: the projection as sigmastar prices today, ``t_roof / 0.5`` (the stated default
  efficiency);
* **leave-one-out**: ``t_roof / e``, with ``e`` the median efficiency ``t_roof / t_published`` of the
  *other* rows of the same (device, category, runtime); with none there, of the same (category,
  runtime) on any device; else of the same runtime. The row itself never informs its prediction.

Error = predicted / published - 1 on the time of one batch (a throughput row's time is
batch / throughput). Rows the projection cannot express yet are counted with the reason (LLM
decode and throughput need the token-generation model; devices outside the catalog; rows without
a batch size). Writes its section of benchmarks/RESULTS.md (then run assemble_results.py).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profilers import analyze, hardware, project  # noqa: E402
from profilers.projection import DEFAULT_EFFICIENCY  # noqa: E402
from profilers.published import load_published  # noqa: E402

BERT_LARGE = {"model_type": "bert", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
              "intermediate_size": 4096, "vocab_size": 30522, "max_position_embeddings": 512}
GPTJ = {"model_type": "gptj", "n_embd": 4096, "n_layer": 28, "n_head": 16, "rotary_dim": 64, "vocab_size": 50400,
        "n_positions": 2048}
LLAMA2_13B = {"model_type": "llama", "hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 40,
              "num_key_value_heads": 40, "intermediate_size": 13824, "vocab_size": 32000,
              "max_position_embeddings": 4096}
#: published model name -> (category, what analyze() takes). Configs: the models' published
#: architectures (BERT-Large: Devlin et al. 2019; GPT-J: EleutherAI; Llama-2-13B: Touvron et al. 2023)
MODELS = {
    "ResNet-50 v1.5": ("cnn", "resnet50"),
    "BERT-Large": ("encoder", BERT_LARGE),
    "BERT-Large (SQuAD v1.1 fine-tuned)": ("encoder", BERT_LARGE),
    "BERT-Base": ("encoder", "bert-base-uncased"),
    "GPT-J 6B": ("llm prefill", GPTJ),
    "Llama-2-7B": ("llm prefill", "llama-2-7b"),
    "Llama-2-13B": ("llm prefill", LLAMA2_13B),
}
METRICS = ("latency_ms", "throughput_per_s", "time_to_first_token_ms")


def catalog_device(device: str, variant: str) -> str | None:
    """The catalog device a row ran on, when the row's variant determines it (memory bandwidth
    differs between A100 40/80 GB and H100 SXM/PCIe, so an unstated variant is not guessed)."""
    v = variant.upper()
    if device in ("T4", "L4"):
        return device
    if device == "A100":
        return "A100-40GB" if "40" in v else "A100-80GB" if "80" in v else None
    if device == "H100":
        return "H100-PCIe" if "PCIE" in v else "H100-SXM" if ("SXM" in v or "HBM3" in v) else None
    return None


def _resnet50():
    import transformers as T

    return T.ResNetForImageClassification(T.ResNetConfig(num_labels=1000))


_CACHE: dict = {}


def roofline_time(model, category: str, batch: int, seq: int | None, device: str, precision: str) -> float:
    key = (repr(model), batch, seq)
    if key not in _CACHE:
        if model == "resnet50":
            import torch

            _CACHE[key] = analyze(_resnet50, batch_size=batch, inputs=lambda b: torch.zeros(b, 3, 224, 224),
                                  train=False, dtype="fp32", name="ResNet-50")
        else:
            _CACHE[key] = analyze(model, batch_size=batch, seq_len=seq, train=False, dtype="bf16")
    dtype = {"amp": "fp16"}.get(precision, precision)
    return project(_CACHE[key], device, dtype, efficiency=1.0).latency_s


def expressible(row) -> tuple[str, str] | str:
    """(category, catalog device) or why the row cannot be projected yet."""
    if row.task != "inference":
        return "training row (the fidelity table covers inference)"
    if row.metric not in METRICS:
        return f"{row.metric}: token generation needs the decode model"
    if row.gpus not in ("", "1"):
        return "more than one GPU"
    if not row.batch_size:
        return "no batch size stated"
    if row.model not in MODELS:
        return "model not in the benchmark's table"
    dev = catalog_device(row.device, row.device_variant)
    if dev is None:
        return f"device {row.device} {row.device_variant or '(variant not stated)'} not determined in the catalog"
    cat = MODELS[row.model][0]
    if cat != "cnn" and not row.seq_len:
        return "no sequence length stated"
    if not hardware.get(dev).supports({"amp": "fp16"}.get(row.precision, row.precision)):
        return f"{dev} lists no {row.precision} peak"
    return cat, dev


def loo_efficiency(rows: list[dict], i: int) -> tuple[float, str]:
    r = rows[i]
    for level, same in (("device+category+runtime", lambda o: (o["device"], o["category"], o["runtime"])
                         == (r["device"], r["category"], r["runtime"])),
                        ("category+runtime", lambda o: (o["category"], o["runtime"]) == (r["category"], r["runtime"])),
                        ("runtime", lambda o: o["runtime"] == r["runtime"])):
        effs = [o["eff"] for j, o in enumerate(rows) if j != i and same(o)]
        if effs:
            return statistics.median(effs), level
    return DEFAULT_EFFICIENCY, "default"


def _pct(x: float) -> str:
    return f"{x:+.0%}"


def _stats(errs: list[float]) -> str:
    a = sorted(abs(e) for e in errs)
    if not a:
        return "- | -"
    p90 = a[min(len(a) - 1, math.ceil(0.9 * len(a)) - 1)]
    return f"{statistics.median(a):.0%} | {p90:.0%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fidelity.md"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    df = load_published()
    rows, skipped = [], {}
    for _, row in df.iterrows():
        what = expressible(row)
        if isinstance(what, str):
            skipped[what] = skipped.get(what, 0) + 1
            continue
        cat, dev = what
        batch, seq = int(row.batch_size), int(row.seq_len) if row.seq_len else None
        t_pub = batch / row.value_si if row.metric == "throughput_per_s" else row.value_si
        t_roof = roofline_time(MODELS[row.model][1], cat, batch, seq, dev, row.precision)
        rows.append(dict(device=dev, category=cat, runtime=row.runtime, model=row.model, precision=row.precision,
                         batch=batch, seq=seq, metric=row.metric, t_pub=t_pub, t_roof=t_roof, eff=t_roof / t_pub,
                         source=row.source.split(" ")[-1]))
    for i, r in enumerate(rows):
        e, level = loo_efficiency(rows, i)
        r["err_default"] = r["t_roof"] / DEFAULT_EFFICIENCY / r["t_pub"] - 1
        r["err_loo"] = r["t_roof"] / e / r["t_pub"] - 1
        r["level"] = level
    import torch
    import transformers

    lines = ["## Projection fidelity (predicted vs published measurements)", "",
             "Command: `HF_HUB_OFFLINE=1 python benchmarks/fidelity.py`  ",
             f"torch {torch.__version__}, transformers {transformers.__version__}; "
             f"{time.strftime('%Y-%m-%d')}; ran in {time.perf_counter() - t0:.0f} s.", "",
             f"{len(rows)} of {len(df)} published rows (profilers/data/published_measurements.csv) can be projected "
             "today. Per row, the model is analyzed at the row's batch and sequence length and every op cast to the "
             "row's precision; t_roof is the roofline time at efficiency 1. *default* = t_roof / 0.5 (what the "
             "search prices today); *LOO* = t_roof / the median efficiency t_roof / t_published of the other rows "
             "of the same (device, category, runtime), else (category, runtime), else runtime: leave-one-out, "
             "the row never informs its own prediction. Error = predicted / published - 1 on one batch's time.", "",
             "| category | runtime | rows | default: median abs err | default: p90 | LOO: median abs err | LOO: p90 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    groups = sorted({(r["category"], r["runtime"]) for r in rows})
    for cat, rt in groups + [("all", "all")]:
        g = [r for r in rows if cat == "all" or (r["category"], r["runtime"]) == (cat, rt)]
        lines.append(f"| {cat} | {rt} | {len(g)} | {_stats([r['err_default'] for r in g])} | "
                     f"{_stats([r['err_loo'] for r in g])} |")
    lines += ["", "Targets (issue 12): LOO median |error| <= 10 %, 90th percentile <= 25 %.", "",
              "Rows not projected yet: " + "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) + ".", "",
              "| device | model | precision | batch | seq | runtime | published (ms per batch) | t_roof (ms) | "
              "implied efficiency | default err | LOO err | LOO from | source |",
              "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for r in sorted(rows, key=lambda r: (r["category"], r["device"], r["model"], r["precision"], r["batch"],
                                          r["seq"] or 0)):
        lines.append(f"| {r['device']} | {r['model']} | {r['precision']} | {r['batch']} | {r['seq'] or ''} | "
                     f"{r['runtime']} | {r['t_pub'] * 1e3:.4g} | {r['t_roof'] * 1e3:.4g} | {r['eff']:.3f} | "
                     f"{_pct(r['err_default'])} | {_pct(r['err_loo'])} | {r['level']} | {r['source']} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text[:3000])


if __name__ == "__main__":
    main()
