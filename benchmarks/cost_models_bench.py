"""cost_models: how long pricing takes, and the worked example of docs/cost_models.md as run today.

    HF_HUB_OFFLINE=1 python benchmarks/cost_models_bench.py [--out benchmarks/results/cost_models.md]

Times one ``CostModel.estimate``, one ``sensitivity`` and one ``uncertainty`` run on fixed figures
(the same setup each time: timings are ratios to nothing, read them as orders of magnitude on a
shared 2-core machine), then runs the worked example's code blocks from docs/cost_models.md (their
output is the doc's) and tabulates the four options. Writes its section (then run
assemble_results.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import re
import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _blocks() -> list[str]:
    text = (ROOT / "docs" / "cost_models.md").read_text()
    start = text.index("## Worked example")
    return re.findall(r"```python\n(.*?)```", text[start:], re.S)[:2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cost_models.md"))
    args = ap.parse_args()
    import numpy
    import scipy

    from cost_models import (CostModel, ModelFigures, Option, Scenario, ServingPlan, TrainingPlan, sensitivity,
                             uncertainty)

    f = ModelFigures("L4", "bf16", 32, 0.048, 0.116, 272178688, 3583435776, 218964480, "fixed figures")
    m = CostModel(Scenario(training=TrainingPlan(samples_per_epoch=1e6, epochs=3, retrain_every_months=6),
                           serving=ServingPlan(avg_requests_per_s=2000, peak_requests_per_s=5000, latency_slo_s=0.1,
                                               horizon_months=36, response_bytes=500)))
    t_est = timeit.timeit(lambda: m.estimate(f), number=2000) / 2000
    t_sens = timeit.timeit(lambda: sensitivity(Option("a", m, f)), number=20) / 20
    t0 = time.perf_counter()
    uncertainty([Option("a", m, f)], {"price:gpu_hour": (0.5, 1.5), "traffic_requests_per_s": (0.5, 2)}, n=1000)
    t_unc = time.perf_counter() - t0

    ns: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for code in _blocks():
            exec(compile(code, "docs/cost_models.md", "exec"), ns)  # the doc's own code, as a reader runs it
    rows = []
    for o in ns["options"]:
        b = o.model.estimate(o.figures)
        lo, mid, hi = b.band_usd
        rows.append(f"| {o.name} | {b.replicas} | ${mid:,.0f} | ${lo:,.0f} - ${hi:,.0f} |")
    quant = [ns["plain"].model.estimate(ns["plain"].figures), ns["quant"].model.estimate(ns["quant"].figures)]
    lines = [
        "## Cost models", "",
        f"Command: `HF_HUB_OFFLINE=1 python benchmarks/cost_models_bench.py` ({platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}; "
        f"{time.strftime('%Y-%m-%d')}). cost_models is arithmetic; no GPU needed. Prices: the shipped PriceBook.", "",
        "| figure | value |", "| --- | --- |",
        f"| one `CostModel.estimate` (training + serving scenario, fixed L4 figures) | {t_est * 1e6:.0f} us |",
        f"| `sensitivity` (every knob, +-20 %) | {t_sens * 1e3:.1f} ms |",
        f"| `uncertainty`, 1,000 draws x 2 knobs x 1 option | {t_unc:.2f} s |", "",
        "Worked example (docs/cost_models.md, its code blocks run as written): BERT-base analyzed on the meta "
        "device and projected (eager runtime, calibrated efficiency and overhead, 80 % band) for 2,000 req/s "
        "average / 5,000 peak, 100 ms SLO, 36 months, fine-tuned every 6 months:", "",
        "| option | replicas | total (36 months) | 80 % band |", "| --- | --- | --- | --- |", *rows, "",
        f"int8 what-if on the L4: {quant[0].replicas} replicas (bf16) -> {quant[1].replicas} (int8), "
        f"${quant[0].total_usd:,.0f} -> ${quant[1].total_usd:,.0f}.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
