"""The search's keyword options, each checked by one rule, in one place.

:func:`optimizer.search` checks its keywords with owner ``"search"`` and :class:`optimizer.jobs.Job`
checks its search fields with owner ``"Job"`` (``job.search.<option>`` from a job file), through
the same :func:`check_search_options`. Which *method* takes which option is declared on the
methods (:data:`optimizer.methods.OPTIONS`, ``SearchMethod.options``); this module says what a
value may be.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from profilers.config import check_list, described, invalid, is_number

__all__ = ["MAX_SEED", "DIALECTS", "check_search_options", "check_fidelities"]

#: seeds are 32-bit (NumPy's and Optuna's samplers take seeds in [0, 2**32 - 1])
MAX_SEED = 2**32 - 1
#: database dialects an Optuna RDB storage URL may name (those SQLAlchemy ships)
DIALECTS = ("sqlite", "postgresql", "mysql", "mssql", "oracle")



def _positive(owner: str, f: str, v: Any) -> float:
    if not is_number(v) or v <= 0:
        raise invalid(owner, f, "a number > 0", described(v))
    return v


def _int_at_least_1(owner: str, f: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise invalid(owner, f, "an integer >= 1", described(v))
    return v


def _int_at_least_0(owner: str, f: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise invalid(owner, f, "an integer >= 0 (later runs that retry a failed evaluation)", described(v))
    return v


def _bool(why: str = "") -> Callable[[str, str, Any], bool]:
    def check(owner: str, f: str, v: Any) -> bool:
        if not isinstance(v, bool):
            raise invalid(owner, f, "true or false" + (f" ({why})" if why else ""), described(v))
        return v

    return check


def check_fidelities(owner: str, f: str, v: Any) -> tuple[float, ...]:
    """Multi-fidelity rungs: an increasing list of fractions in (0, 1] (the full run, 1.0, is the
    last rung whether listed or not)."""
    def fraction(fi: str, x: Any) -> float:
        if not is_number(x) or not 0 < x <= 1:
            raise invalid(owner, fi, "a fraction in (0, 1]", described(x))
        return float(x)

    vals = check_list(owner, f, v, fraction)
    if any(b <= a for a, b in zip(vals, vals[1:])):
        raise invalid(owner, f, "an increasing list of fractions in (0, 1] (e.g. [0.25, 1.0])", list(v))
    return vals


def _pruner(owner: str, f: str, v: Any) -> Any:
    from .optuna_search import PRUNERS

    if isinstance(v, str) and v in PRUNERS:
        return v
    if not isinstance(v, str):
        import optuna

        if isinstance(v, optuna.pruners.BasePruner):
            return v
    python = " or an optuna BasePruner" if owner == "search" else ""  # a job file names one
    raise invalid(owner, f, "one of " + ", ".join(map(repr, PRUNERS)) + python, described(v))


def _prune_margin(owner: str, f: str, v: Any) -> float:
    if not is_number(v) or v < 0:
        raise invalid(owner, f, "a number >= 0", described(v))
    return v


def _seed(owner: str, f: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_SEED:
        raise invalid(owner, f, "an integer in [0, 2**32 - 1]", described(v))
    return v


def _storage(owner: str, f: str, v: Any) -> Any:
    """A journal file path, a database URL whose dialect SQLAlchemy can load (RDB storage), or (in
    Python) an Optuna storage object."""
    if not isinstance(v, str):
        import optuna

        if isinstance(v, optuna.storages.BaseStorage):
            return v
    if not isinstance(v, str) or not v.strip():
        raise invalid(owner, f, "a non-empty string", described(v))
    if "://" not in v:
        return v  # a journal file
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    allowed = ("a journal file path or a database URL of a dialect SQLAlchemy can load (" + ", ".join(DIALECTS)
               + ", e.g. 'sqlite:///study.db', 'postgresql://user@host/db')")
    try:
        make_url(v).get_dialect()
    except (NoSuchModuleError, ArgumentError, ValueError) as e:
        raise invalid(owner, f, f"{allowed} ({type(e).__name__}: {e})", v) from None
    return v


def _runtime(owner: str, f: str, v: Any) -> str:
    from profilers.projection import RUNTIMES

    if v not in RUNTIMES:
        raise invalid(owner, f, "one of " + ", ".join(map(repr, RUNTIMES)) + " (how the served model's kernels run "
                      "on a GPU: PyTorch eager, or fused as TensorRT / torch.compile deploy it)", described(v))
    return v


def _layer_choices(owner: str, f: str, v: Any) -> tuple:
    from .layerwise_search import check_layer_choices

    return check_layer_choices(v, owner, f)


def _on_error(owner: str, f: str, v: Any) -> str:
    from .evaluate import ON_ERROR

    if v not in ON_ERROR:
        raise invalid(owner, f, "'raise' (stop the search when evaluate() raises, with its traceback) or 'skip' "
                      "(record the variant as failed and go on)", described(v))
    return v


#: option -> check(owner, field, value) -> the value to keep
RULES: dict[str, Callable[[str, str, Any], Any]] = {
    "n_trials": _int_at_least_1,
    "timeout_s": _positive,
    "max_evaluations": _int_at_least_1,
    "budget_usd": _positive,
    "usd_per_hour": _positive,
    "fidelities": check_fidelities,
    "pruner": _pruner,
    "prune_margin": _prune_margin,
    "skip_dearer": _bool(),
    "seed": _seed,
    "profile_time_cap_s": _positive,
    "storage": _storage,
    "layer_choices": _layer_choices,
    "max_bytes": _positive,
    "pool": _bool("serve on the cheapest mix of the space's device types"),
    "runtime": _runtime,
    "retries": _int_at_least_0,
    "on_error": _on_error,
}


def check_search_options(owner: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Each given option (None = not given) checked by its rule; returns the values to keep."""
    return {k: RULES[k](owner, k, v) for k, v in values.items() if v is not None}
