"""Job files: a search (or a what-if) described in TOML, validated into a frozen :class:`Job`.

A job file names the workload, the search space, the scenario, price overrides, the quality
constraint, the method and its budget, the storage and the output folder::

    name = "digits-bulk-scan"
    workload = "digits"              # a built-in workload, "package.module:function" or "file.py:function"
    output = "runs/digits"           # default: runs/<name>

    [space]                          # optimizer.SearchSpace fields
    prune_amount = [0.0, 0.25, 0.5]
    quantize = ["none", "int8_dynamic"]
    devices = ["host", "T4", "H100-SXM"]

    [constraints]
    min_quality = 0.95

    [search]                         # method and budget
    method = "lazy"                  # lazy | exhaustive | tpe | random | nsga2

    [scenario.serving]               # cost_models plans: serving, training, data, people, ownership
    avg_requests_per_s = 50_000

    [prices]                         # overrides merged over the shipped price book
    file = "our_prices.toml"
    [[prices.price]]
    kind = "gpu_hour"
    item = "T4"
    usd_per_unit = 0.30
    source = "2026 contract"
    date = 2026-10-01

A what-if job (``kind = "whatif"``) prices transformer configs across devices instead of searching
over techniques; its ``[whatif]`` table is :class:`WhatIf`.

Paths naming inputs (a workload ``.py`` file, a price file, a model ``config.json``) are relative
to the job file; paths naming outputs (``output``, a journal ``storage``) are relative to where the
command runs. Every error names the field path, what is allowed and what was given, e.g.
``job.space.prune_amount[1] must be a fraction in [0, 1) (0.0 = no pruning); got 1.5.``

The same checks run for a job built in Python: each config (:class:`Job`, :class:`WhatIf`,
``SearchSpace``, ``Scenario`` and its plans, ``PriceRow``) checks itself once, and the parser
only maps the file's sections onto them (:func:`profilers.config.build`; docs/validation.md).

This module is the public face; the parts live in one module each: :mod:`optimizer.job_spec`
(:class:`Job`, workloads), :mod:`optimizer.job_parse` (the file format), :mod:`optimizer.job_run`
(running a search job) and :mod:`optimizer.whatif` (the what-if).
"""

from __future__ import annotations

from .job_parse import bundled_jobs, default_job_path, load_job, parse_job
from .job_run import (
    SearchRun,
    analyze_best,
    environment,
    finished_evaluations,
    price_rows_used,
    run_search,
)
from .job_spec import KINDS, MAX_SEED, Job
from .whatif import MAX_BATCH_SIZE, WhatIf, WhatIfResult, run_whatif

__all__ = ["KINDS", "MAX_BATCH_SIZE", "MAX_SEED", "Job", "SearchRun", "WhatIf", "WhatIfResult", "analyze_best", "bundled_jobs",
           "default_job_path", "environment", "finished_evaluations", "load_job", "parse_job", "price_rows_used",
           "run_search", "run_whatif"]
