"""optimizer.search: budgets (evaluations, seconds, dollars), multi-fidelity pruning, skipping
variants that cannot beat the incumbent, and trials cut short by Ctrl-C (real digits training, a
two-variant space so the file stays quick)."""

import json
import math
import os

import pytest

from optimizer import InfeasibleError, SearchSpace, search
from optimizer.budget import SearchBudget
from optimizer.evaluate import Evaluator
from optimizer.optuna_search import counted
from profilers.config import ConfigError

# prune 80 % (cheaper to serve, quality ~0.86 after its full 40 steps) and the baseline (~0.98)
SPACE = SearchSpace(prune_amount=(0.0, 0.8), quantize=("none",), finetune_steps=40, devices=("T4",),
                    batch_sizes=(4096,))  # bulk batches: compute, not launch overhead (test_search.py)


def _journal(out):
    return [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]


def test_a_low_fidelity_rung_prunes_a_hopeless_variant(wl, cost_model, tmp_path):
    res = search(wl, SPACE, cost_model, min_quality=0.95, method="random", n_trials=6, seed=0,
                 fidelities=[0.25], pruner="threshold", prune_margin=0.02, output_dir=tmp_path,
                 profile_time_cap_s=0.2, raise_infeasible=False)
    rows = _journal(tmp_path)
    p8 = next(t for t in res.trials if t.variant == "w1-p0.8-qnone")
    assert p8.state == "pruned" and "after 25% of its training" in p8.error and p8.quality is None
    # its rung ran (10 of 40 fine-tuning steps) and its full evaluation never did
    assert [r["fidelity"] for r in rows if r["variant"] == "w1-p0.8-qnone"] == [0.25]
    assert 0.95 - next(r["quality"] for r in rows if r["variant"] == "w1-p0.8-qnone") > 0.02  # 0.22 measured
    assert res.best is not None and res.best.variant == "w1-p0-qnone"  # the baseline trains nothing: no rung


def test_a_rung_within_the_margin_goes_on_to_the_full_evaluation(wl, cost_model, tmp_path):
    res = search(wl, SPACE, cost_model, min_quality=0.5, method="random", n_trials=6, seed=0,
                 fidelities=[0.25, 1.0], prune_margin=0.5, output_dir=tmp_path, profile_time_cap_s=0.2,
                 skip_dearer=False)
    rows = _journal(tmp_path)
    assert [r["fidelity"] for r in rows if r["variant"] == "w1-p0.8-qnone"] == [0.25, 1.0]
    assert res.best.variant == "w1-p0.8-qnone" and res.best.quality >= 0.5


def test_a_variant_dearer_than_the_incumbent_is_not_trained(wl, cost_model, tmp_path):
    res = search(wl, SPACE, cost_model, min_quality=0.5, method="random", n_trials=6, seed=0,
                 output_dir=tmp_path, profile_time_cap_s=0.2)
    base = next(t for t in res.trials if t.variant == "w1-p0-qnone")
    cheap = next(t for t in res.trials if t.variant == "w1-p0.8-qnone")
    assert cheap.cost_usd < base.cost_usd and res.best.variant == "w1-p0.8-qnone"
    if base.state == "pruned":  # sampled after the cheap feasible one: skipped untrained
        assert "cannot beat the best feasible so far" in base.error
    # the baseline's quality is still measured once, for the savings table
    assert res.baseline is not None and res.baseline.quality is not None


def test_budget_usd_stops_before_an_evaluation_and_says_why(wl, cost_model, tmp_path):
    with pytest.raises(InfeasibleError) as e:
        search(wl, SPACE, cost_model, min_quality=0.5, method="lazy", budget_usd=1e-9, usd_per_hour=1.0,
               output_dir=tmp_path, profile_time_cap_s=0.2)
    res = e.value.result
    assert res.status == "best found" and res.quality_evaluations == 0
    assert "compute budget ($1e-09) would be overrun" in str(e.value) and "To fix: raise the budget" in str(e.value)
    assert res.spend["usd_per_hour"] == 1.0 and res.spend["spent_usd"] > res.spend["budget_usd"]
    assert not (tmp_path / "evaluations.jsonl").exists() or not _journal(tmp_path)


def test_budget_usd_prices_this_machine_by_default(wl, cost_model):
    # rate = logical CPUs x the price book's vCPU-hour price (0.0408 $/vCPU-h in the bundled book)
    b = SearchBudget.for_search(cost_model, timeout_s=None, max_evaluations=None, budget_usd=5.0, usd_per_hour=None)
    row = cost_model.prices.get("vcpu_hour", "vcpu", cost_model.scenario.ownership.rent_tier, None)
    assert b.usd_per_hour == pytest.approx(os.cpu_count() * row.usd_per_unit)
    assert "vCPU (this machine)" in b.rate_source
    # one more evaluation at the mean so far must fit: 3,600 s at $2/h is $2
    now = [0.0]
    b2 = SearchBudget(budget_usd=3.0, usd_per_hour=2.0, rate_source="given", clock=lambda: now[0])
    now[0] = 3600.0
    assert b2.exhausted(1, 3600.0) is not None  # $2 spent + $2 predicted > $3
    assert b2.exhausted(1, 1800.0) is None  # $2 + $1 fits


def test_exhaustive_and_lazy_honour_max_evaluations_and_timeout(wl, cost_model):
    res = search(wl, SPACE, cost_model, min_quality=0.5, method="exhaustive", max_evaluations=1,
                 profile_time_cap_s=0.2, raise_infeasible=False)
    assert res.status == "best found" and "evaluation budget (1)" in res.message
    assert sum(1 for t in res.trials if t.quality is not None) == 1
    res = search(wl, SPACE, cost_model, min_quality=0.5, method="lazy", timeout_s=1e-6, profile_time_cap_s=0.2,
                 raise_infeasible=False)
    assert res.status == "best found" and "time budget" in res.message and res.quality_evaluations == 0


def test_an_interrupted_trial_does_not_use_up_a_trial(wl, cost_model, tmp_path, monkeypatch):
    real = Evaluator.quality
    calls = {"n": 0}

    def flaky(self, v, fidelity=1.0):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real(self, v, fidelity)

    monkeypatch.setattr(Evaluator, "quality", flaky)
    with pytest.raises(KeyboardInterrupt):
        search(wl, SPACE, cost_model, min_quality=0.5, method="tpe", n_trials=2, output_dir=tmp_path,
               profile_time_cap_s=0.2, skip_dearer=False)
    monkeypatch.setattr(Evaluator, "quality", real)
    search(wl, SPACE, cost_model, min_quality=0.5, method="tpe", n_trials=2, output_dir=tmp_path,
           profile_time_cap_s=0.2, skip_dearer=False)
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "study.journal")))
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    assert len(study.trials) == 3 and counted(study) == 2
    assert study.trials[0].user_attrs["unfinished"] == "interrupted (Ctrl-C)"


@pytest.mark.parametrize("kw, message", [
    (dict(method="lazy", fidelities=[0.5]),
     r"^search.fidelities must be absent with method 'lazy' \(multi-fidelity pruning is for 'tpe' and 'random'\)"),
    (dict(method="lazy", n_trials=1),
     r"^search.n_trials must be absent with method 'lazy' \(a trial budget is for 'tpe', 'random' and 'nsga2'"),
    (dict(method="tpe", fidelities=[0.5, 0.25]), r"^search.fidelities must be an increasing list of fractions in "
                                                 r"\(0, 1\] \(e.g. \[0.25, 1.0\]\); got \[0.5, 0.25\]."),
    (dict(method="tpe", fidelities=[0.0]), r"^search.fidelities\[0\] must be a fraction in \(0, 1\]; got 0.0."),
    (dict(method="tpe", fidelities=[0.5], pruner="asha"), r"^search.pruner must be one of 'threshold', 'median'"),
    (dict(method="tpe", fidelities=[0.5], prune_margin=-1), r"^search.prune_margin must be a number >= 0"),
    (dict(budget_usd=-1), r"^search.budget_usd must be a number > 0; got -1."),
    (dict(timeout_s=0), r"^search.timeout_s must be a number > 0; got 0."),
    (dict(max_evaluations=0), r"^search.max_evaluations must be an integer >= 1; got 0."),
    (dict(budget_usd=1.0, usd_per_hour=0.0), r"^search.usd_per_hour must be a number > 0; got 0.0."),
])
def test_validation_messages(wl, cost_model, kw, message):
    with pytest.raises(ConfigError, match=message):
        search(wl, SPACE, cost_model, min_quality=0.9, **{"method": "tpe", **kw})


def test_budget_describes_an_unpriced_search():
    b = SearchBudget(timeout_s=10.0)
    d = b.describe()
    assert d["timeout_s"] == 10.0 and "spent_usd" not in d and math.isfinite(d["elapsed_s"])
