"""MCP results and names as aopkit sees them (no server needed: these work on protocol JSON)."""

from __future__ import annotations

from aopkit import Base64Source, ImageBlock, TextBlock
from aopkit_mcp._content import output, tool_name


def test_structured_content_alone_becomes_json_text():
    assert output({"content": [], "structuredContent": {"city": "Oslo"}}) == (
        '{"city": "Oslo"}',
        '{"city": "Oslo"}',
    )


def test_structured_content_is_not_repeated_when_text_carries_it():
    result = {"content": [{"type": "text", "text": "21"}], "structuredContent": {"result": 21}}
    assert output(result) == ("21", "21")


def test_resources_and_links():
    content = [
        {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "hello"}},
        {
            "type": "resource",
            "resource": {"uri": "file:///a.png", "mimeType": "image/png", "blob": "iVBO"},
        },
        {
            "type": "resource",
            "resource": {"uri": "file:///a.zip", "mimeType": "application/zip", "blob": "UEs"},
        },
        {"type": "resource_link", "uri": "file:///b.txt", "name": "b"},
        {"type": "hologram", "data": 1},
    ]
    blocks, text = output({"content": content})
    assert blocks == [
        TextBlock("hello"),
        ImageBlock(Base64Source("image/png", "iVBO")),
        TextBlock("[binary resource file:///a.zip (application/zip)]"),
        TextBlock("[resource b: file:///b.txt]"),
        TextBlock('{"type": "hologram", "data": 1}'),
    ]
    assert text.startswith("hello\n[binary resource")


def test_names_are_made_safe_for_model_providers():
    assert tool_name("files.read", None) == "files_read"
    assert tool_name("search web", "gh") == "gh_search_web"
    assert tool_name("ok-name_1", "") == "ok-name_1"
