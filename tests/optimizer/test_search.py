"""optimizer.search on the real digits workload (small spaces, so the whole file stays quick)."""

import math

import pytest

from optimizer import InfeasibleError, SearchResult, SearchSpace, search
from profilers.config import ConfigError, loads


# GPUs only: on this tiny model the host CPU is the cheapest server of all, and nothing pays back
# its engineering hours there. Bulk batches: at 16-64 digits a batch is a handful of kernels whose
# GPU time is launch overhead, which compression does not shorten
SPACE = SearchSpace(prune_amount=(0.0, 0.5), quantize=("none", "int8_dynamic"), finetune_steps=100,
                    devices=("T4", "H100-SXM"), batch_sizes=(1024, 4096))


@pytest.fixture(scope="module")
def exhaustive(wl, cost_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("exhaustive")
    return search(wl, SPACE, cost_model, min_quality=0.95, method="exhaustive", output_dir=out,
                  profile_time_cap_s=0.2), out


def test_exhaustive_evaluates_every_priced_variant_and_beats_the_baseline(exhaustive):
    res, out = exhaustive
    assert res.status == "optimal"
    assert res.quality_evaluations == sum(1 for t in res.trials if math.isfinite(t.cost_usd))
    # ground truth: the cheapest variant whose measured quality meets the target
    feasible = [t for t in res.trials if t.quality is not None and t.quality >= 0.95]
    assert res.best.cost_usd == min(t.cost_usd for t in feasible)
    assert res.best.quality >= 0.95 and res.best.quality_source == "measured"
    # the done-when figure: cheaper than the fp32 baseline, savings broken down by component
    assert res.baseline is not None and res.best.cost_usd < res.baseline.cost_usd
    sv = res.savings_usd
    assert set(sv) >= {"hardware", "train_deploy", "data", "human", "total"}
    assert sv["total"] == pytest.approx(sum(v for k, v in sv.items() if k != "total"))
    assert (out / "results.json").exists() and (out / "evaluations.jsonl").exists()


def test_lazy_matches_exhaustive_with_fewer_evaluations(wl, cost_model, exhaustive, tmp_path):
    ex, _ = exhaustive
    res = search(wl, SPACE, cost_model, min_quality=0.95, method="lazy", profile_time_cap_s=0.2)
    assert res.best.variant == ex.best.variant
    assert res.quality_evaluations <= ex.quality_evaluations
    assert res.certificate and res.certificate[0]["evaluated"]
    # every variant cheaper than the answer is accounted for by the certificate
    accounted = {k for c in res.certificate for k in [c["evaluated"], *c["ruled_out"], *c["proven_feasible"]]}
    for t in res.trials:
        if t.cost_usd < res.best.cost_usd:
            assert t.variant in accounted


def test_resume_reuses_finished_evaluations(wl, cost_model, exhaustive):
    _, out = exhaustive
    lines_before = (out / "evaluations.jsonl").read_text().count("\n")
    res = search(wl, SPACE, cost_model, min_quality=0.95, method="exhaustive", output_dir=out, profile_time_cap_s=0.2)
    assert (out / "evaluations.jsonl").read_text().count("\n") == lines_before  # nothing re-trained
    assert res.best.variant == exhaustive[0].best.variant


def test_tpe_persists_in_a_journal_and_resumes(wl, cost_model, tmp_path):
    res = search(wl, SPACE, cost_model, min_quality=0.95, method="tpe", n_trials=3, output_dir=tmp_path,
                 profile_time_cap_s=0.2)
    assert (tmp_path / "study.journal").exists()
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "study.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.n_trials == 3
    search(wl, SPACE, cost_model, min_quality=0.95, method="tpe", n_trials=5, output_dir=tmp_path,
           profile_time_cap_s=0.2)
    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.n_trials == 5  # 3 kept + 2 new, none lost
    assert res.best is None or res.best.quality >= 0.95


def test_infeasible_names_the_closest_candidates(wl, cost_model):
    with pytest.raises(InfeasibleError) as e:
        search(wl, SearchSpace(quantize=("none",), devices=("T4",), batch_sizes=(16,)), cost_model,
               min_quality=1.0, method="exhaustive", profile_time_cap_s=0.2)
    msg = str(e.value)
    assert "no strategy meets quality >= 1" in msg and "closest: baseline (as trained): quality" in msg
    assert "To fix:" in msg
    assert e.value.result.status == "infeasible" and e.value.result.trials


def test_a_variant_that_cannot_be_built_fails_alone(wl, cost_model):
    # int4 needs kernels this CPU lacks: that variant fails with its reason, the search goes on
    space = SearchSpace(quantize=("none", "int4_weight_only"), devices=("T4",), batch_sizes=(16,))
    res = search(wl, space, cost_model, min_quality=0.9, method="exhaustive", profile_time_cap_s=0.2)
    failed = [t for t in res.trials if t.state == "failed"]
    assert len(failed) == 1 and "unsupported" in failed[0].error
    assert res.best is not None and res.best.variant == "w1-p0-qnone"


def test_16_bit_digits_variants_are_priced_and_evaluated(wl, cost_model):
    # bf16/fp16 cast the conv digits model; pricing re-counts it at batch 16 (not the workload's 64)
    # on fp32 workload inputs, which profilers casts to the model's dtype. T4 has no bf16 peak, so the
    # bf16 variant is served on the H100.
    space = SearchSpace(quantize=("none", "bf16", "fp16"), devices=("T4", "H100-SXM"), batch_sizes=(16,))
    res = search(wl, space, cost_model, min_quality=0.9, method="exhaustive", profile_time_cap_s=0.2)
    by_key = {t.variant: t for t in res.trials}
    for key in ("w1-p0-qbf16", "w1-p0-qfp16"):
        t = by_key[key]
        assert t.state != "failed" and not t.error, t.error
        assert math.isfinite(t.cost_usd) and t.batch_size == 16
        assert t.quality is not None and t.quality >= 0.95
    assert by_key["w1-p0-qbf16"].device == "H100-SXM"


def test_each_variant_is_priced_with_the_overrides_of_its_own_techniques(wl):
    from optimizer.evaluate import Evaluator
    from optimizer.jobs import parse_job

    job = parse_job({
        "name": "overrides", "workload": "digits", "constraints": {"min_quality": 0.9},
        "space": {"distill_width": [1.0, 0.5], "prune_amount": [0.0, 0.5], "devices": ["T4"], "batch_sizes": [16]},
        "scenario": {"serving": {"avg_requests_per_s": 100}, "training": {"samples_per_epoch": 1347},
                     "people": {"hours": {"prune": 16}},
                     "data": {"labeled_samples": {"distill": 50_000}, "usd_per_label": 0.05}}})
    ev = Evaluator(wl, job.space, job.cost_model(), profile_time_cap_s=0.2)
    items = {}
    for v in job.space.variants():
        dep = ev.price(v)
        assert dep.feasible, dep.error
        items[v.key] = {it.name: it for it in dep.breakdown.items}
    base, pruned, distilled = items["w1-p0-qnone"], items["w1-p0.5-qnone"], items["w0.5-p0-qnone"]
    assert not any(n.startswith(("apply and tune", "labeling")) for n in base)  # overrides of unused techniques cost nothing
    tune = pruned["apply and tune prune"]
    assert tune.quantity == 16 and "Scenario.people.hours" in tune.provenance  # 16 h instead of techniques.toml's 40
    assert "labeling (distill)" not in pruned
    assert distilled["labeling (distill)"].cost_usd == pytest.approx(2_500)  # 50,000 labels x $0.05
    assert distilled["apply and tune distill"].quantity == 120  # no override: techniques.toml's assumption
    assert "labeling (distill)" in items["w0.5-p0.5-qnone"] and "apply and tune prune" in items["w0.5-p0.5-qnone"]


def test_result_exports(exhaustive, tmp_path):
    res, _ = exhaustive
    again = loads(res.to_json())
    assert isinstance(again, SearchResult) and again.best == res.best
    df = res.trials_dataframe()
    assert len(df) == len(res.trials) and {"cost_usd", "quality", "state"} <= set(df.columns)
    assert "<table" in res._repr_html_() and res.best.label in res.to_text()
    import matplotlib

    matplotlib.use("Agg")
    res.plot_pareto().figure.savefig(tmp_path / "pareto.png")
    res.plot_components().figure.savefig(tmp_path / "components.png")
    assert (tmp_path / "pareto.png").stat().st_size > 1000


def test_validation_messages(wl, cost_model):
    with pytest.raises(ConfigError, match=r"^search.method must be one of 'lazy', 'exhaustive'"):
        search(wl, SPACE, cost_model, min_quality=0.9, method="grid")
    with pytest.raises(ConfigError, match=r"^search.min_quality must be a finite number; got nan."):
        search(wl, SPACE, cost_model, min_quality=float("nan"))
    # each message names the element (the field path), whether built here or from a job file
    with pytest.raises(ConfigError, match=r"^SearchSpace.prune_amount\[0\] must be a fraction in \[0, 1\)"):
        SearchSpace(prune_amount=(1.0,))
    # digits inputs: 1 x 8 x 8 fp32 = 256 bytes a sample; an H100-SXM's 80 GB hold 312,500,000 samples
    with pytest.raises(ConfigError, match=r"^SearchSpace.batch_sizes\[1\] must be a batch whose inputs fit in the "
                                          r"largest device's memory \(H100-SXM: 80 GB; at 256 bytes of inputs a "
                                          r"sample, at most 312,500,000 samples\); got 1000000000\.$"):
        search(wl, SearchSpace(devices=("T4", "H100-SXM"), batch_sizes=(16, 10**9)), cost_model, min_quality=0.9)
    with pytest.raises(ConfigError, match=r"^SearchSpace.devices\[0\] must be a catalog device: one of"):
        SearchSpace(devices=("TPU-v9",))
    with pytest.raises(ConfigError, match=r"^SearchSpace.quantize\[0\] must be one of 'none', 'bf16'"):
        SearchSpace(quantize=("int3",))


def test_overlapping_cost_bands_are_reported_with_the_measurement_that_settles_them(exhaustive):
    res, _ = exhaustive
    lo, hi = res.best.cost_band_usd  # the device times are projections: an 80 % band from the calibration
    assert lo <= res.best.cost_usd <= hi
    # the saving over the baseline is smaller than the bands' width: the ranking is not certain
    assert res.rivals and res.ranking_note.startswith("ranking not certain: the best (")
    assert "Measuring the serving latency of these deployments on" in res.ranking_note
    for r in res.rivals:
        assert r["band_usd"][0] <= hi and r["cost_usd"] >= res.best.cost_usd
    assert any(r["label"] == res.baseline.label for r in res.rivals)
    back = loads(res.to_json())
    assert back.ranking_note == res.ranking_note and len(back.rivals) == len(res.rivals)


def test_runtime_option_prices_fused_kernels_and_rejects_unknown_runtimes(wl, cost_model):
    space = SearchSpace(quantize=("none",), devices=("T4",), batch_sizes=(1024,))
    eager = search(wl, space, cost_model, min_quality=0.9, method="exhaustive", profile_time_cap_s=0.2)
    fused = search(wl, space, cost_model, min_quality=0.9, method="exhaustive", profile_time_cap_s=0.2,
                   runtime="fused")
    # fused: element-wise kernels folded into their producers, a smaller per-kernel overhead
    assert fused.best.cost_usd <= eager.best.cost_usd
    assert any("fused runtime" in p for p in fused.best.provenance)
    with pytest.raises(ConfigError, match=r"^search.runtime must be one of 'eager', 'fused' \(how the served model"):
        search(wl, space, cost_model, min_quality=0.9, runtime="tensorrt")


def test_a_minimized_metric_is_searched_with_its_target_as_a_ceiling(wl, cost_model, exhaustive):
    # the digits error rate (1 - accuracy, lower is better) at most 0.05 is the accuracy >= 0.95 search
    import dataclasses

    acc = wl.evaluate
    err = dataclasses.replace(wl, evaluate=lambda m: 1.0 - acc(m), higher_is_better=False,
                              quality_metric="error rate", quality_range=(0.0, 1.0))
    ex, _ = exhaustive
    for method in ("exhaustive", "lazy"):
        res = search(err, SPACE, cost_model, min_quality=0.05, method=method, profile_time_cap_s=0.2)
        assert res.best.variant == ex.best.variant
        assert res.best.quality == pytest.approx(1.0 - ex.best.quality)  # reported in its own sign
        assert res.min_quality == 0.05 and res.higher_is_better is False and res.target_op == "<="
        assert all(t.quality is None or t.quality >= 0 for t in res.trials)
        assert ("quality target", "<= 0.05") in res.summary_rows()
