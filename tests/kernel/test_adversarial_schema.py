"""Tools and schemas from hostile Python: classes and builtins as tools, annotations that are
not Python, defaults JSON cannot hold. Each is a clear error when the tool or schema is made,
or left out of the schema, never a raw Python error or a schema no provider can be sent."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import typing

import attrs
import pytest

from aopkit import ReActAgent, Tool, Toolkit
from aopkit.schema import SchemaError, json_schema
from aopkit.toolkit import ToolError


def bad_hint(x: "1+") -> int:  # noqa: F722
    """A hint that is not an expression."""
    return 1


def undefined_hint(x: Nowhere) -> int:  # noqa: F821
    """A hint naming nothing."""
    return 1


@dataclasses.dataclass
class BadField:
    x: "1+"  # noqa: F722


@dataclasses.dataclass
class ListField:
    x: [int]  # type: ignore[valid-type]


def uses_bad_field(b: BadField) -> int:
    """Takes a class whose annotation is not Python."""
    return 1


@pytest.mark.parametrize(
    "tool, where",
    [
        (int, "tool 'int': cannot read its signature"),
        (bad_hint, "tool 'bad_hint': cannot resolve its type hints"),
        (undefined_hint, "tool 'undefined_hint': cannot resolve its type hints"),
        (uses_bad_field, "tool 'uses_bad_field', argument 'b': cannot resolve the annotations"),
    ],
)
def test_a_tool_python_cannot_describe_is_a_tool_error_at_construction(kernel, tool, where):
    for make in (
        lambda: Tool(tool),
        lambda: Toolkit([tool]),
        lambda: ReActAgent("r", kernel.model("scripted:m"), tools=[tool], kernel=kernel),
    ):
        with pytest.raises(ToolError) as info:
            make()
        assert str(info.value).startswith(where), str(info.value)


@pytest.mark.parametrize("tp", [BadField, ListField, typing.List[[int]]])  # noqa: UP006
def test_a_class_whose_annotations_are_not_types_is_a_schema_error(tp):
    with pytest.raises(SchemaError):
        json_schema(tp)


class Colour(enum.Enum):
    RED = "red"


def test_a_literal_of_enum_members_shows_their_values():
    schema = json_schema(typing.Literal[Colour.RED])
    assert schema == {"type": "string", "enum": ["red"]}
    json.dumps(schema, allow_nan=False)


NOT_JSON = [
    math.nan,
    math.inf,
    frozenset({1, 2}),
    datetime.date(2026, 1, 1),
    b"raw",
    ("a", math.nan),
]


@pytest.mark.parametrize("default", NOT_JSON, ids=repr)
def test_a_default_json_cannot_hold_is_left_out_of_every_schema(default):
    def tool(x: typing.Any = default) -> str:
        """A tool with an odd default."""
        return "ok"

    @attrs.define
    class WithAttrs:
        x: typing.Any = default

    @dataclasses.dataclass
    class WithDataclass:
        x: typing.Any = default

    for schema in (
        Tool(tool).spec.parameters,
        json_schema(WithAttrs),
        json_schema(WithDataclass),
    ):
        json.dumps(schema, allow_nan=False)  # a schema a provider can be sent
        assert "default" not in schema["properties"]["x"]
        assert "x" not in schema["required"]  # still optional


def test_json_defaults_are_still_shown(kernel):
    def tool(a: int = 3, b: str = "x", c: list[int] | None = None, d: float = 0.5) -> str:
        """Plain defaults."""
        return "ok"

    props = Tool(tool).spec.parameters["properties"]
    assert [props[k].get("default") for k in "abcd"] == [3, "x", None, 0.5]
