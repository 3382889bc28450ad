"""MCP wire values to aopkit values: tool results to blocks, input schemas to parameters.

Both work on the protocol's JSON (camelCase keys, as the specification spells them), so they do
not depend on which major version of the ``mcp`` package made the objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from aopkit import AopkitError, AudioBlock, Base64Source, Block, ImageBlock, TextBlock

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_MEDIA: dict[str, type[ImageBlock] | type[AudioBlock]] = {"image": ImageBlock, "audio": AudioBlock}


class MCPError(AopkitError):
    """An MCP server could not be reached, did not answer in time, or reported a failure."""


def tool_name(name: str, prefix: str | None) -> str:
    """The toolkit name of an MCP tool: characters model providers reject become ``_``."""
    safe = _UNSAFE.sub("_", name)
    return f"{prefix}_{safe}" if prefix else safe


def parameters(where: str, schema: Any) -> dict[str, Any]:
    """The server's input schema as tool parameters, checked enough that a provider accepts it."""
    if not isinstance(schema, Mapping) or schema.get("type", "object") != "object":
        raise MCPError(f"{where}: the input schema must be a JSON object schema of type 'object'")
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    if not isinstance(properties, Mapping):
        raise MCPError(f"{where}: 'properties' in the input schema must be an object")
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise MCPError(f"{where}: 'required' in the input schema must be a list of names")
    return {**schema, "type": "object", "properties": dict(properties), "required": required}


def output(result: Mapping[str, Any]) -> tuple[str | list[Block], str]:
    """A ``CallToolResult`` as a tool output (text alone, or blocks when there is media) and
    its text. Structured content becomes JSON text when no text block already carries it."""
    blocks = [_block(item) for item in result.get("content") or ()]
    structured = result.get("structuredContent")
    if structured is not None and not any(isinstance(b, TextBlock) for b in blocks):
        blocks.append(TextBlock(json.dumps(structured, ensure_ascii=False)))
    text = "\n".join(b.text for b in blocks if isinstance(b, TextBlock))
    if all(isinstance(b, TextBlock) for b in blocks):
        return text, text
    return blocks, text


def _block(item: Mapping[str, Any]) -> Block:
    kind = item.get("type")
    if kind == "text":
        return TextBlock(item["text"])
    if kind in _MEDIA:
        return _MEDIA[kind](Base64Source(item["mimeType"], item["data"]))
    if kind == "resource":
        resource = item["resource"]
        mime = resource.get("mimeType") or ""
        if "text" in resource:
            return TextBlock(resource["text"])
        if mime.split("/")[0] in _MEDIA:
            return _MEDIA[mime.split("/")[0]](Base64Source(mime, resource["blob"]))
        return TextBlock(f"[binary resource {resource.get('uri')} ({mime or 'unknown type'})]")
    if kind == "resource_link":
        return TextBlock(f"[resource {item.get('name')}: {item.get('uri')}]")
    return TextBlock(json.dumps(item, ensure_ascii=False))
