"""profilers.config: the one error format, the validation helpers, and the JSON round trip with
a type tag and a version (DESIGN.md, "Conventions")."""

from __future__ import annotations

import json
import math
import typing
from dataclasses import dataclass

import pytest

from profilers.config import (
    ConfigError,
    SigmastarError,
    check_choice,
    check_non_negative,
    check_positive,
    dumps,
    from_json_dict,
    invalid,
    loads,
    serializable,
    to_json_dict,
)

# ---- test classes (tags are prefixed so they cannot collide with the package's own) -----------


@serializable("test_config.point")
@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str = ""


@serializable("test_config.shape", version=3)
@dataclass(frozen=True)
class Shape:
    name: str
    corners: tuple[Point, ...]
    weights: dict[str, float]
    pair: tuple[int, str]
    tags: list[str]
    center: Point | None = None
    count: int | None = None


@serializable("test_config.opt_float_new")
@dataclass(frozen=True)
class OptFloatNew:
    """A PEP 604 ``float | None`` field (the style every module here uses)."""

    value: float | None = None


@serializable("test_config.opt_float_old")
@dataclass(frozen=True)
class OptFloatOld:
    value: typing.Optional[float] = None


@dataclass(frozen=True)
class NotRegistered:
    a: int


# ---- the error format -------------------------------------------------------------------------


def test_invalid_builds_the_one_format_without_raising():
    e = invalid("Owner", "field", "an integer >= 1", 0)
    assert isinstance(e, ConfigError)
    assert str(e) == "Owner.field must be an integer >= 1; got 0."


def test_invalid_reprs_the_value_so_strings_are_quoted():
    assert str(invalid("measure", "dtype", "one of fp32", "fp64")) == "measure.dtype must be one of fp32; got 'fp64'."
    assert str(invalid("A", "b", "present", None)) == "A.b must be present; got None."


def test_config_error_is_a_value_error_and_a_sigmastar_error():
    e = invalid("A", "b", "c", 1)
    assert isinstance(e, ValueError)
    assert isinstance(e, SigmastarError)
    assert issubclass(SigmastarError, Exception)


@pytest.mark.parametrize("value", [1, 0.5, 1e-300, 10**6])
def test_check_positive_accepts(value):
    check_positive("O", "f", value)  # no raise


@pytest.mark.parametrize("value", [0, -1, -0.0, math.inf, -math.inf, math.nan, True, "1", None, [1]])
def test_check_positive_rejects(value):
    with pytest.raises(ConfigError) as info:
        check_positive("O", "f", value)
    assert str(info.value) == f"O.f must be a finite number > 0; got {value!r}."


@pytest.mark.parametrize("value", [0, 0.0, 3, 2.5])
def test_check_non_negative_accepts(value):
    check_non_negative("O", "f", value)


@pytest.mark.parametrize("value", [-1, -1e-9, math.inf, math.nan, False, "0"])
def test_check_non_negative_rejects(value):
    with pytest.raises(ConfigError, match=r"^O\.f must be a finite number >= 0; got "):
        check_non_negative("O", "f", value)


def test_check_choice():
    check_choice("O", "mode", "a", ["a", "b"])
    with pytest.raises(ConfigError) as info:
        check_choice("O", "mode", "c", ("a", "b"))
    assert str(info.value) == "O.mode must be one of 'a', 'b'; got 'c'."


def test_check_choice_accepts_a_generator_of_allowed_values():
    check_choice("O", "n", 2, (i for i in range(3)))
    with pytest.raises(ConfigError, match=r"one of 0, 1, 2; got 5\."):
        check_choice("O", "n", 5, (i for i in range(3)))


# ---- the JSON round trip --------------------------------------------------------------------


def _shape() -> Shape:
    return Shape(
        name="tri",
        corners=(Point(0.0, 0.0, "a"), Point(1.0, 0.0), Point(0.5, 1.0)),
        weights={"a": 1.0, "b": 2.5},
        pair=(3, "x"),
        tags=["p", "q"],
        center=Point(0.5, 0.3),
        count=3,
    )


def test_to_json_dict_has_type_tag_and_version_first():
    d = to_json_dict(Point(1.0, 2.0))
    assert d == {"type": "test_config.point", "version": 1, "x": 1.0, "y": 2.0, "label": ""}
    assert list(d)[:2] == ["type", "version"]


def test_nested_round_trip_is_equal_and_restores_types():
    s = _shape()
    d = to_json_dict(s)
    assert d["version"] == 3
    assert d["corners"][0]["type"] == "test_config.point"
    back = from_json_dict(json.loads(json.dumps(d)))
    assert back == s
    assert isinstance(back.corners, tuple) and all(isinstance(c, Point) for c in back.corners)
    assert isinstance(back.pair, tuple) and back.pair == (3, "x")
    assert isinstance(back.tags, list)
    assert isinstance(back.center, Point)


def test_dumps_loads_round_trip_and_none_optionals():
    s = Shape(name="empty", corners=(), weights={}, pair=(0, ""), tags=[])
    text = dumps(s)
    assert json.loads(text)["center"] is None
    assert loads(text) == s


def test_missing_optional_fields_take_their_defaults():
    assert from_json_dict({"type": "test_config.point", "version": 1, "x": 1.0, "y": 2.0}) == Point(1.0, 2.0)


def test_version_mismatch_is_an_error_naming_class_and_versions():
    d = to_json_dict(_shape())
    d["version"] = 2
    with pytest.raises(ConfigError) as info:
        from_json_dict(d)
    assert str(info.value) == "Shape.version must be 3 (this release reads version 3); got 2."


def test_missing_version_is_an_error():
    with pytest.raises(ConfigError, match=r"^Point\.version must be 1 .*; got None\.$"):
        from_json_dict({"type": "test_config.point", "x": 1.0, "y": 2.0})


def test_unknown_tag_is_an_error_listing_the_known_tags():
    with pytest.raises(ConfigError) as info:
        from_json_dict({"type": "no-such-tag", "version": 1})
    msg = str(info.value)
    assert msg.startswith("json.type must be one of ")
    assert "test_config.point" in msg and "test_config.shape" in msg
    assert msg.endswith("; got 'no-such-tag'.")


@pytest.mark.parametrize("data, got", [({"x": 1}, "dict"), ([1, 2], "list"), ("profile", "str")])
def test_untagged_input_is_an_error(data, got):
    with pytest.raises(ConfigError, match=rf"^json\.type must be a dict with a 'type' tag; got '{got}'\.$"):
        from_json_dict(data)


def test_to_json_dict_of_an_unregistered_object_is_a_type_error():
    with pytest.raises(TypeError, match="NotRegistered is not registered with @serializable"):
        to_json_dict(NotRegistered(1))


def test_serializable_needs_a_dataclass():
    with pytest.raises(TypeError, match="needs a dataclass"):
        serializable("test_config.not_a_dataclass")(type("Plain", (), {}))


def test_a_tag_cannot_be_taken_by_a_second_class():
    @dataclass(frozen=True)
    class Other:
        a: int

    with pytest.raises(TypeError, match="already used"):
        serializable("test_config.point")(Other)


def test_reregistering_the_same_class_is_allowed():
    # a module reload re-decorates the same class: that must not fail
    assert serializable("test_config.point")(Point) is Point


# ---- non-finite floats: JSON has no literal for them -----------------------------------------


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinite_floats_are_written_as_strings_and_read_back(value):
    p = Point(value, 1.0)
    text = dumps(p)
    json.loads(text)  # strictly valid JSON (no Infinity literal)
    assert "Infinity" not in text
    assert json.loads(text)["x"] == str(value)
    back = loads(text)
    assert back.x == value and isinstance(back.x, float)


def test_nan_is_written_as_a_string_and_read_back_as_nan():
    text = dumps(Point(math.nan, 0.0))
    assert "NaN" not in text
    back = loads(text)
    assert isinstance(back.x, float) and math.isnan(back.x)


def test_non_finite_floats_in_containers_round_trip():
    s = Shape(name="w", corners=(Point(math.inf, -math.inf),), weights={"a": math.inf}, pair=(1, "y"), tags=[])
    back = loads(dumps(s))
    assert back.corners[0].x == math.inf and back.corners[0].y == -math.inf
    assert back.weights["a"] == math.inf


def test_typing_optional_float_inf_round_trips():
    back = loads(dumps(OptFloatOld(math.inf)))
    assert back.value == math.inf and isinstance(back.value, float)


def test_pep604_optional_float_inf_round_trips():
    back = loads(dumps(OptFloatNew(math.inf)))
    assert back.value == math.inf and isinstance(back.value, float)


def test_a_plain_string_field_keeps_the_text_inf():
    # only float-typed fields turn "inf" back into a number
    back = loads(dumps(Point(1.0, 2.0, label="inf")))
    assert back.label == "inf"


# ---- one validation layer: paths, build -------------------------------------------------------

import dataclasses  # noqa: E402
import datetime  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from pathlib import Path  # noqa: E402

from profilers.config import (  # noqa: E402
    MISSING,
    at,
    build,
    check_fields,
    check_int,
    check_list,
    check_table,
    described,
    relative_to,
    resolve_path,
    where,
)


@serializable("test_config.inner")
@dataclass(frozen=True)
class Inner:
    provider: str | None = None
    rate: float = 1.0
    levels: tuple[float, ...] = (0.0,)

    def __post_init__(self) -> None:
        check_positive("Inner", "rate", self.rate)

        def level(f: str, v: object) -> object:
            if not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise invalid("Inner", f, "a fraction in [0, 1)", v)
            return v

        check_list("Inner", "levels", self.levels, level)


@serializable("test_config.outer")
@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = Inner()
    trials: int | None = dataclasses.field(default=None, metadata={"path": "search.trials"})
    when: str = ""
    table: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.trials is not None:
            check_int("Outer", "trials", self.trials, 1)
        if self.inner.rate > 5:  # a check of the whole naming a part's field
            raise invalid("Inner", "rate", "at most 5 inside an Outer", self.inner.rate)



def test_outside_a_build_errors_read_owner_dot_field():
    assert where("Inner", "levels[2]") == "Inner.levels[2]"
    with pytest.raises(ConfigError) as info:
        Inner(levels=(0.0, 0.5, 1.5))
    assert str(info.value) == "Inner.levels[2] must be a fraction in [0, 1); got 1.5."


def test_inside_a_build_the_same_check_reads_the_file_path():
    with pytest.raises(ConfigError) as info:
        build(Inner, {"levels": [0.0, 0.5, 1.5]}, "job.inner")
    assert str(info.value) == "job.inner.levels[2] must be a fraction in [0, 1); got 1.5."
    # nested configs are built at path.field, and a field may live elsewhere (metadata or fields=)
    with pytest.raises(ConfigError) as info:
        build(Outer, {"name": "x", "inner": {"rate": -1}}, "job")
    assert str(info.value) == "job.inner.rate must be a finite number > 0; got -1."
    with pytest.raises(ConfigError) as info:
        build(Outer, {"name": "x", "trials": 0}, "job")
    assert str(info.value) == "job.search.trials must be an integer >= 1; got 0."
    with pytest.raises(ConfigError) as info:
        build(Outer, {"name": "x", "trials": 0}, "job", fields={"trials": "budget.n"})
    assert str(info.value) == "job.budget.n must be an integer >= 1; got 0."
    # the whole's check of a part reads at the part's path
    with pytest.raises(ConfigError) as info:
        build(Outer, {"name": "x", "inner": {"rate": 6}}, "job")
    assert str(info.value) == "job.inner.rate must be at most 5 inside an Outer; got 6."


def test_only_the_owner_being_built_is_repathed():
    with at("Inner", "job.inner"):
        assert str(invalid("Inner", "rate", "x", 1)) == "job.inner.rate must be x; got 1."
        assert str(invalid("hardware", "name", "x", 1)) == "hardware.name must be x; got 1."
        assert str(invalid("Inner[row 3]", "rate", "x", 1)) == "job.inner.rate must be x; got 1."
        with at("Other", "job.other", fields={"rows": ""}):
            assert where("Other", "rows") == "job.other"
            assert where("Inner", "rate") == "job.inner.rate"  # outer blocks still apply
    assert where("Inner", "rate") == "Inner.rate"


def test_build_checks_keys_presence_and_types():
    with pytest.raises(ConfigError) as info:
        build(Outer, {"name": "x", "inner": {"rates": 1}}, "job")
    assert str(info.value) == ("job.inner must be a table with keys among provider, rate, levels; got unknown key "
                               "'rates' (did you mean 'rate'?).")
    with pytest.raises(ConfigError) as info:
        build(Outer, {}, "job")
    assert str(info.value) == "job.name must be present; got nothing."
    with pytest.raises(ConfigError) as info:
        build(Outer, {"name": "x"}, "job", required={"trials": "a number of trials"})
    assert str(info.value) == "job.search.trials must be a number of trials; got nothing."
    with pytest.raises(ConfigError) as info:
        build(Outer, {"name": "x", "inner": {"provider": {"a": 1}}}, "job")
    assert str(info.value) == "job.inner.provider must be a string; got a table."
    with pytest.raises(ConfigError) as info:
        build(Outer, {"name": "x", "inner": 5}, "job")
    assert str(info.value) == "job.inner must be a table; got 5."
    with pytest.raises(ConfigError) as info:
        build(Outer, {"name": "x", "table": {"a": "b"}}, "job")
    assert str(info.value) == "job.table['a'] must be a number; got 'b'."
    with pytest.raises(ConfigError) as info:
        build(Outer, [], "job")
    assert str(info.value) == "job must be a table; got []."


def test_build_turns_toml_dates_into_iso_strings_and_defaults_its_path_to_the_class():
    o = build(Outer, {"name": "x", "when": datetime.date(2026, 10, 1), "inner": {"levels": [0.25]}})
    assert o.when == "2026-10-01" and o.inner == Inner(levels=[0.25]) and isinstance(o.inner, Inner)
    with pytest.raises(ConfigError) as info:
        build(Inner, {"rate": 0})
    assert str(info.value) == "Inner.rate must be a finite number > 0; got 0."


def test_check_fields_reads_the_type_hints():
    check_fields(Inner(provider="aws"))
    with pytest.raises(ConfigError) as info:
        check_fields(Inner(provider=3))
    assert str(info.value) == "Inner.provider must be a string; got 3."


def test_small_checks():
    assert check_int("O", "n", 3, 1) == 3
    with pytest.raises(ConfigError, match=r"^O\.n must be an integer in \[0, 9\]; got True\.$"):
        check_int("O", "n", True, 0, 9)
    assert check_list("O", "xs", [1, 2]) == (1, 2)
    with pytest.raises(ConfigError, match=r"^O\.xs\[2\] must be a value not listed before \(no duplicates\); got 1\.$"):
        check_list("O", "xs", [1, 2, 1])
    with pytest.raises(ConfigError, match=r"^O\.xs must be a non-empty list; got a table\.$"):
        check_list("O", "xs", {"a": 1})
    with pytest.raises(ConfigError, match=r"^O\.xs must be a non-empty list; got 0\.5\.$"):
        check_list("O", "xs", 0.5)
    assert repr(MISSING) == "nothing" and repr(described({})) == "a table"
    assert repr(described(datetime.date(2026, 1, 2))) == "date 2026-01-02"
    assert check_table("t", {"a": 1}, ("a", "b")) == {"a": 1}
    with pytest.raises(ConfigError, match=r"^t must be a table; got 5\.$"):
        check_table("t", 5, ("a",))


def test_relative_paths_resolve_against_the_job_folder(tmp_path):
    assert resolve_path("x.json") == Path("x.json")
    with relative_to(tmp_path):
        assert resolve_path("x.json") == tmp_path / "x.json"
        assert resolve_path("/abs/x.json") == Path("/abs/x.json")


def test_a_value_too_deep_to_repr_still_gives_a_message():
    v: list = []
    for _ in range(100_000):
        v = [v]
    assert str(invalid("O", "f", "x", v)) == "O.f must be x; got a value nested too deeply to show."
