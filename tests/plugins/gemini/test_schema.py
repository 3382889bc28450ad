import copy

import pytest

from aopkit.testing.fakes.gemini import SCHEMA_FIELDS, _schema_problems
from aopkit_gemini import SchemaError, to_gemini_schema

STRING = {"type": "STRING"}


def accepted(schema):
    """The problems Gemini's schema parser would report (none for a good schema)."""
    return list(_schema_problems(schema, "parameters"))


def test_refs_are_inlined_and_the_refs_own_keywords_win():
    schema = {
        "type": "object",
        "$defs": {
            "Point": {
                "type": "object",
                "description": "a point",
                "properties": {"x": {"type": "number"}},
                "required": ["x"],
            }
        },
        "properties": {"at": {"$ref": "#/$defs/Point", "description": "where"}},
    }
    assert to_gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "at": {
                "type": "OBJECT",
                "properties": {"x": {"type": "NUMBER"}},
                "required": ["x"],
                "description": "where",
            }
        },
    }


def test_draft7_definitions_nested_refs_and_arrays_of_refs():
    schema = {
        "definitions": {
            "Tag": {"$ref": "#/definitions/Name"},
            "Name": {"type": "string", "minLength": 1},
        },
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"$ref": "#/definitions/Tag"}},
            "groups": {
                "type": "array",
                "items": {"type": "array", "items": {"$ref": "#/definitions/Tag"}},
            },
        },
    }
    out = to_gemini_schema(schema)
    tag = {"type": "STRING", "minLength": 1}
    assert out["properties"]["tags"] == {"type": "ARRAY", "items": tag}
    assert out["properties"]["groups"] == {
        "type": "ARRAY",
        "items": {"type": "ARRAY", "items": tag},
    }
    assert "definitions" not in out and accepted(out) == []


def test_a_ref_used_twice_without_recursion_is_expanded_both_times():
    schema = {
        "$defs": {"Addr": {"type": "object", "properties": {"city": {"type": "string"}}}},
        "type": "object",
        "properties": {"home": {"$ref": "#/$defs/Addr"}, "work": {"$ref": "#/$defs/Addr"}},
    }
    out = to_gemini_schema(schema)
    assert (
        out["properties"]["home"]
        == out["properties"]["work"]
        == {"type": "OBJECT", "properties": {"city": STRING}}
    )


def test_recursive_refs_are_expanded_once_then_cut_to_a_plain_object():
    schema = {
        "$defs": {
            "Node": {
                "type": "object",
                "description": "a tree node",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
            }
        },
        "$ref": "#/$defs/Node",
    }
    out = to_gemini_schema(schema)
    assert out["properties"]["name"] == STRING
    leaf = out["properties"]["children"]["items"]
    assert leaf["type"] == "OBJECT" and "properties" not in leaf
    assert "recursive" in leaf["description"] and "Node" in leaf["description"]
    assert accepted(out) == []


def test_an_optional_recursive_ref_stays_nullable_when_cut():
    schema = {
        "$defs": {
            "Step": {
                "type": "object",
                "properties": {
                    "next": {"anyOf": [{"$ref": "#/$defs/Step"}, {"type": "null"}]},
                },
            }
        },
        "$ref": "#/$defs/Step",
    }
    cut = to_gemini_schema(schema)["properties"]["next"]
    assert cut["type"] == "OBJECT" and cut["nullable"] is True and "properties" not in cut


def test_mutually_recursive_refs_terminate():
    schema = {
        "$defs": {
            "A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}},
            "B": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}},
        },
        "$ref": "#/$defs/A",
    }
    out = to_gemini_schema(schema)
    cut = out["properties"]["b"]["properties"]["a"]
    assert cut["type"] == "OBJECT" and "properties" not in cut


def test_a_self_reference_through_the_root_is_cut():
    schema = {"type": "object", "properties": {"next": {"$ref": "#"}, "v": {"type": "integer"}}}
    out = to_gemini_schema(schema)
    assert out["properties"]["next"]["properties"]["v"] == {"type": "INTEGER"}
    assert "properties" not in out["properties"]["next"]["properties"]["next"]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("#/$defs/Missing", "points at nothing"),
        ("https://example.invalid/schema.json", "only references inside the schema"),
        ("#/properties/a/type", "does not point at a schema object"),
    ],
)
def test_references_that_cannot_be_inlined_fail_clearly(ref, message):
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"$ref": ref}}}
    with pytest.raises(SchemaError, match=message):
        to_gemini_schema(schema)


def test_unsupported_keywords_are_removed_everywhere():
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "urn:x",
        "title": "Args",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "q": {
                "type": "string",
                "title": "Q",
                "examples": ["x"],
                "$comment": "c",
                "readOnly": True,
            },
            "ids": {
                "type": "array",
                "uniqueItems": True,
                "contains": {"type": "integer"},
                "items": {"type": "integer", "multipleOf": 2},
            },
            "meta": {
                "type": "object",
                "patternProperties": {"^x": {"type": "string"}},
                "propertyNames": {"maxLength": 3},
                "additionalProperties": {"type": "string"},
            },
            "either": {"not": {"type": "null"}, "if": {}, "then": {}, "type": "boolean"},
        },
    }
    out = to_gemini_schema(schema)
    assert accepted(out) == []
    assert out["properties"]["q"] == STRING
    assert out["properties"]["ids"] == {"type": "ARRAY", "items": {"type": "INTEGER"}}
    assert out["properties"]["meta"] == {"type": "OBJECT"}
    assert out["properties"]["either"] == {"type": "BOOLEAN"}


def test_const_becomes_an_enum_and_null_choices_make_it_nullable():
    schema = {
        "type": "object",
        "properties": {
            "kind": {"const": "circle"},
            "color": {"enum": ["red", "green", None]},
        },
    }
    props = to_gemini_schema(schema)["properties"]
    assert props["kind"] == {"type": "STRING", "enum": ["circle"]}
    assert props["color"] == {"type": "STRING", "enum": ["red", "green"], "nullable": True}


def test_non_string_choices_are_described_since_gemini_enums_hold_strings():
    out = to_gemini_schema({"enum": [1, 2, 3], "description": "level"})
    assert out == {"type": "INTEGER", "description": "level (one of 1, 2, 3)"}
    assert to_gemini_schema({"const": True}) == {"type": "BOOLEAN", "description": "one of true"}


def test_anyof_with_null_becomes_nullable_and_keeps_the_outer_description():
    schema = {
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}}},
        "anyOf": [{"$ref": "#/$defs/Point"}, {"type": "null"}],
        "description": "optional point",
        "default": None,
    }
    assert to_gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {"x": {"type": "NUMBER"}},
        "description": "optional point",
        "nullable": True,
    }


def test_real_unions_stay_anyof_and_oneof_becomes_anyof():
    out = to_gemini_schema(
        {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}], "title": "Value"}
    )
    assert out == {"nullable": True, "anyOf": [STRING, {"type": "INTEGER"}]}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": ["string", "null"]}, {"type": "STRING", "nullable": True}),
        (
            {"type": ["integer", "null"], "minimum": 0},
            {"type": "INTEGER", "minimum": 0, "nullable": True},
        ),
        (
            {"type": ["string", "integer"], "description": "id"},
            {"description": "id", "anyOf": [STRING, {"type": "INTEGER"}]},
        ),
        (
            {"type": ["array", "null"], "items": {"type": "string"}},
            {"type": "ARRAY", "items": STRING, "nullable": True},
        ),
    ],
)
def test_type_lists(schema, expected):
    assert to_gemini_schema(schema) == expected


def test_allof_parts_are_merged_pydantic_style():
    schema = {
        "$defs": {
            "Base": {
                "type": "object",
                "properties": {"id": {"type": "integer"}},
                "required": ["id"],
            }
        },
        "type": "object",
        "properties": {
            "item": {
                "allOf": [
                    {"$ref": "#/$defs/Base"},
                    {"properties": {"name": {"type": "string"}}, "required": ["name"]},
                ],
                "description": "the item",
            }
        },
    }
    item = to_gemini_schema(schema)["properties"]["item"]
    assert item == {
        "type": "OBJECT",
        "properties": {"id": {"type": "INTEGER"}, "name": STRING},
        "required": ["id", "name"],
        "description": "the item",
    }


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "integer", "exclusiveMinimum": 0}, {"type": "INTEGER", "minimum": 1}),
        ({"type": "integer", "exclusiveMaximum": 10}, {"type": "INTEGER", "maximum": 9}),
        ({"type": "number", "exclusiveMinimum": 0.5}, {"type": "NUMBER", "minimum": 0.5}),
        (
            {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
            {"type": "INTEGER", "minimum": 1},
        ),
        (
            {"type": "integer", "minimum": 3, "exclusiveMinimum": False},
            {"type": "INTEGER", "minimum": 3},
        ),
    ],
)
def test_exclusive_bounds_become_inclusive(schema, expected):
    assert to_gemini_schema(schema) == expected


def test_formats_gemini_knows_are_kept_and_others_described():
    schema = {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "mail": {"type": "string", "format": "email", "description": "contact"},
            "big": {"type": "integer", "format": "int64"},
            "ratio": {"type": "number", "format": "decimal"},
            "n": {"type": "integer", "default": 5},
        },
    }
    props = to_gemini_schema(schema)["properties"]
    assert props["when"] == {"type": "STRING", "format": "date-time"}
    assert props["mail"] == {"type": "STRING", "description": "contact (format: email)"}
    assert props["big"] == {"type": "INTEGER", "format": "int64"}
    assert props["ratio"] == {"type": "NUMBER", "description": "format: decimal"}
    assert props["n"] == {"type": "INTEGER", "description": "default: 5"}


def test_required_names_without_a_property_and_misplaced_keywords_are_dropped():
    schema = {
        "type": "object",
        "required": ["a", "ghost"],
        "properties": {
            "a": {"type": "string", "properties": {"x": {}}, "items": {}, "minimum": 1},
        },
    }
    assert to_gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {"a": STRING},
        "required": ["a"],
    }


def test_every_array_gets_items():
    schema = {
        "type": "object",
        "properties": {
            "any": {"type": "array"},
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
            "one": {"type": "array", "items": [{"type": "boolean"}]},
        },
    }
    props = to_gemini_schema(schema)["properties"]
    assert props["any"] == {"type": "ARRAY", "items": STRING}
    assert props["pair"] == {"type": "ARRAY", "items": {"anyOf": [STRING, {"type": "INTEGER"}]}}
    assert props["one"] == {"type": "ARRAY", "items": {"type": "BOOLEAN"}}


def test_types_are_inferred_when_missing():
    assert to_gemini_schema({"properties": {"a": {"type": "string"}}})["type"] == "OBJECT"
    assert to_gemini_schema({"items": {"type": "string"}})["type"] == "ARRAY"


def test_the_input_schema_is_not_changed():
    schema = {
        "$defs": {"N": {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}}},
        "type": "object",
        "properties": {
            "a": {"allOf": [{"$ref": "#/$defs/N"}]},
            "b": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }
    before = copy.deepcopy(schema)
    to_gemini_schema(schema)
    assert schema == before


def test_a_large_real_world_schema_has_only_gemini_keywords():
    # the shape pydantic v2 writes for a model with optional, nested, enum and list fields
    schema = {
        "$defs": {
            "Priority": {"enum": ["low", "high"], "title": "Priority", "type": "string"},
            "Sub": {
                "properties": {
                    "title": {"title": "Title", "type": "string"},
                    "subs": {
                        "items": {"$ref": "#/$defs/Sub"},
                        "title": "Subs",
                        "type": "array",
                        "default": [],
                    },
                },
                "required": ["title"],
                "title": "Sub",
                "type": "object",
                "additionalProperties": False,
            },
        },
        "properties": {
            "priority": {"$ref": "#/$defs/Priority", "default": "low"},
            "due": {
                "anyOf": [{"format": "date", "type": "string"}, {"type": "null"}],
                "default": None,
                "title": "Due",
            },
            "tasks": {"items": {"$ref": "#/$defs/Sub"}, "title": "Tasks", "type": "array"},
            "score": {"anyOf": [{"exclusiveMinimum": 0, "type": "number"}, {"type": "null"}]},
        },
        "required": ["tasks"],
        "title": "Plan",
        "type": "object",
    }
    out = to_gemini_schema(schema)
    assert accepted(out) == []
    assert out["properties"]["priority"] == {
        "type": "STRING",
        "enum": ["low", "high"],
        "description": 'default: "low"',
    }
    assert out["properties"]["due"] == {
        "type": "STRING",
        "description": "format: date",
        "nullable": True,
    }

    def keys(node):
        yield from node
        for sub in node.get("properties", {}).values():
            yield from keys(sub)
        if "items" in node:
            yield from keys(node["items"])
        for sub in node.get("anyOf", []):
            yield from keys(sub)

    assert set(keys(out)) <= SCHEMA_FIELDS
