"""JSON Schema → the OpenAPI 3.0 subset that Gemini's ``Schema`` object accepts.

Gemini reads a schema as a protobuf message: one keyword it does not know (``$ref``,
``additionalProperties``, ``const``, ``exclusiveMinimum``, ...) rejects the whole request. So the
schema is rebuilt from the keywords Gemini knows; references are inlined, unions and nullability
rewritten, and what cannot be expressed is dropped, with a note in the description when the model
should still know it (a format, a default, non-string choices).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aopkit import AopkitError

TYPES = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
}
FORMATS = {
    "STRING": frozenset({"enum", "date-time"}),
    "NUMBER": frozenset({"float", "double"}),
    "INTEGER": frozenset({"int32", "int64"}),
}
COPIED = {
    "STRING": ("minLength", "maxLength", "pattern"),
    "NUMBER": ("minimum", "maximum"),
    "INTEGER": ("minimum", "maximum"),
    "ARRAY": ("minItems", "maxItems"),
    "OBJECT": ("minProperties", "maxProperties"),
}
UNIONS = ("anyOf", "oneOf")
VALUE_TYPES = ((bool, "BOOLEAN"), (int, "INTEGER"), (float, "NUMBER"), (str, "STRING"))


class SchemaError(AopkitError):
    """A JSON schema that cannot be turned into a Gemini schema (a reference to nothing)."""


def to_gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` rewritten for Gemini. A recursive ``$ref`` is expanded once, then cut to a plain
    object (Gemini schemas cannot refer to themselves)."""
    return _Converter(schema).convert(schema, ())


def _is_null(schema: Any) -> bool:
    if not isinstance(schema, Mapping):
        return False
    kind = schema.get("type")
    return (
        kind == "null"
        or kind == ["null"]
        or ("const" in schema and schema["const"] is None)
        or schema.get("enum") == [None]
    )


def _kind_of(values: list[Any]) -> str | None:
    """The Gemini type shared by enum values, if they share one."""
    kinds = {next((kind for t, kind in VALUE_TYPES if isinstance(v, t)), None) for v in values}
    if kinds == {"INTEGER", "NUMBER"}:
        return "NUMBER"
    return kinds.pop() if len(kinds) == 1 else None


class _Converter:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def convert(self, node: Any, refs: tuple[str, ...]) -> dict[str, Any]:
        """One schema node; ``refs`` are the references being expanded above it."""
        if not isinstance(node, Mapping):  # the boolean schemas true / false
            return {}
        if "$ref" in node:
            return self._reference(node, refs)
        if "allOf" in node:
            node, refs = self._merge_all_of(node, refs)
        union = next((node[k] for k in UNIONS if k in node), None)
        if union is not None:
            return self._union(node, list(union), refs)
        return self._plain(node, refs)

    def _reference(self, node: Mapping[str, Any], refs: tuple[str, ...]) -> dict[str, Any]:
        ref = node["$ref"]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        target = self._resolve(ref)
        if ref in refs:
            description = siblings.get("description") or target.get("description")
            note = f"a nested {ref}; its fields are not shown because the schema is recursive"
            cut = {
                "type": "OBJECT",
                "description": f"{description} ({note})" if description else note,
            }
            if siblings.get("nullable") is True:  # Optional["Self"]: null stays allowed
                cut["nullable"] = True
            return cut
        return self.convert({**target, **siblings}, (*refs, ref))

    def _resolve(self, ref: Any) -> Mapping[str, Any]:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(
                f"$ref {ref!r}: only references inside the schema (#/...) can be inlined"
            )
        node: Any = self.root
        for token in ref[1:].split("/")[1:] if ref != "#" else []:
            key = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise SchemaError(f"$ref {ref!r} points at nothing in the schema")
        if not isinstance(node, Mapping):
            raise SchemaError(f"$ref {ref!r} does not point at a schema object")
        return node

    def _merge_all_of(
        self, node: Mapping[str, Any], refs: tuple[str, ...]
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """``allOf`` folded into one node: properties and required names united, the node's
        own keywords winning over those of its parts."""
        merged = {k: v for k, v in node.items() if k != "allOf"}
        properties = dict(merged.get("properties") or {})
        required = list(merged.get("required") or [])
        for part in node["allOf"]:
            while isinstance(part, Mapping) and "$ref" in part and part["$ref"] not in refs:
                ref = part["$ref"]
                siblings = {k: v for k, v in part.items() if k != "$ref"}
                part, refs = {**self._resolve(ref), **siblings}, (*refs, ref)
            if not isinstance(part, Mapping):
                continue
            if "allOf" in part:
                part, refs = self._merge_all_of(part, refs)
            properties = {**part.get("properties", {}), **properties}
            required += [r for r in part.get("required", []) if r not in required]
            for key, value in part.items():
                merged.setdefault(key, value)
        if properties:
            merged["properties"] = properties
        if required:
            merged["required"] = required
        return merged, refs

    def _union(
        self, node: Mapping[str, Any], branches: list[Any], refs: tuple[str, ...]
    ) -> dict[str, Any]:
        rest = {k: v for k, v in node.items() if k not in UNIONS}
        kept = [b for b in branches if not _is_null(b)]
        if len(kept) < len(branches):
            rest["nullable"] = True
        if len(kept) == 1 and isinstance(kept[0], Mapping):
            return self.convert({**kept[0], **rest}, refs)  # the node's own words win
        out = self._plain(rest, refs)
        if kept:
            out["anyOf"] = [self.convert(b, refs) for b in kept]
        return out

    def _plain(self, node: Mapping[str, Any], refs: tuple[str, ...]) -> dict[str, Any]:
        """A node without references or unions."""
        declared = node.get("type")
        kinds = [declared] if isinstance(declared, str) else list(declared or [])
        nullable = node.get("nullable") is True or "null" in kinds
        kinds = [k for k in kinds if k != "null"]
        if len(kinds) > 1:  # type: ["string", "integer"] is a union
            rest = {k: v for k, v in node.items() if k not in ("type", "description", "nullable")}
            union = self._plain(
                {"description": node.get("description"), "nullable": nullable}, refs
            )
            union["anyOf"] = [self._plain({**rest, "type": k}, refs) for k in kinds]
            return union

        notes: list[str] = []
        kind = TYPES.get(kinds[0]) if kinds else None
        choices = node["enum"] if "enum" in node else [node["const"]] if "const" in node else None
        enum = None
        if choices is not None:
            if None in choices:
                nullable = True
                choices = [c for c in choices if c is not None]
            kind = kind or _kind_of(choices)
            if kind == "STRING" and all(isinstance(c, str) for c in choices):
                enum = choices  # Gemini's enum holds strings only
            elif choices:
                notes.append("one of " + ", ".join(json.dumps(c) for c in choices))
        if kind is None:
            if "properties" in node:
                kind = "OBJECT"
            elif "items" in node or "prefixItems" in node:
                kind = "ARRAY"
        out: dict[str, Any] = {} if kind is None else {"type": kind}
        if enum:
            out["enum"] = enum

        for key in COPIED.get(kind or "", ()):
            if key in node:
                out[key] = node[key]
        if kind in ("NUMBER", "INTEGER"):
            self._exclusive_bounds(node, kind, out)
        if kind == "OBJECT":
            properties = {
                name: self.convert(sub, refs)
                for name, sub in (node.get("properties") or {}).items()
            }
            if properties:
                out["properties"] = properties
                required = [r for r in node.get("required") or () if r in properties]
                if required:
                    out["required"] = required
        if kind == "ARRAY":
            out["items"] = self._items(node, refs)

        fmt = node.get("format")
        if isinstance(fmt, str):
            if kind is not None and fmt in FORMATS.get(kind, ()):
                out["format"] = fmt
            else:
                notes.append(f"format: {fmt}")
        if node.get("default") is not None:
            notes.append(f"default: {json.dumps(node['default'])}")
        description = node.get("description")
        if notes:
            description = f"{description} ({'; '.join(notes)})" if description else "; ".join(notes)
        if description:
            out["description"] = description
        if nullable:
            out["nullable"] = True
        return out

    def _items(self, node: Mapping[str, Any], refs: tuple[str, ...]) -> dict[str, Any]:
        """Gemini needs ``items`` on every array: tuples become a union of their positions, and
        an array of anything becomes an array of strings."""
        items = node.get("items", node.get("prefixItems"))
        if isinstance(items, list):
            items = items[0] if len(items) == 1 else {"anyOf": items} if items else None
        out = self.convert(items, refs)
        if "type" not in out and "anyOf" not in out:
            out["type"] = "STRING"
        return out

    @staticmethod
    def _exclusive_bounds(node: Mapping[str, Any], kind: str, out: dict[str, Any]) -> None:
        """``exclusiveMinimum``/``exclusiveMaximum`` as inclusive bounds: exact for integers,
        the nearest Gemini can say for numbers. Both the draft-4 (boolean) and the later
        (number) forms are read."""
        step = 1 if kind == "INTEGER" else 0
        for exclusive, bound, sign in (
            ("exclusiveMinimum", "minimum", 1),
            ("exclusiveMaximum", "maximum", -1),
        ):
            value = node.get(exclusive)
            if isinstance(value, bool):
                if value and bound in node:
                    out[bound] = node[bound] + sign * step
            elif isinstance(value, (int, float)):
                out[bound] = value + sign * step
