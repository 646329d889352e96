"""profilers._config: the one error format, the validation helpers, and the JSON round trip with
a type tag and a version (DESIGN.md, "Conventions")."""

from __future__ import annotations

import json
import math
import typing
from dataclasses import dataclass

import pytest

from profilers._config import (
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
