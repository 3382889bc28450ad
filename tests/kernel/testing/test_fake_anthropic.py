"""The request check the fake server applies must catch what the API refuses, or the formatter
tests that rely on it prove nothing."""

from __future__ import annotations

import pytest

from aopkit.testing.fakes.anthropic import text, validate_request


def request(*messages, **fields):
    return {"model": "claude-test", "max_tokens": 16, "messages": list(messages), **fields}


def test_a_valid_request_passes():
    validate_request(request({"role": "user", "content": [text("hi")]}, system=[text("sys")]))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (request({"role": "system", "content": "x"}), "not user/assistant"),
        (
            request({"role": "user", "content": [{"type": "text", "text": "x", "extra": {}}]}),
            "extra",
        ),
        (request({"role": "user", "content": [text("")]}), "non-empty"),
        (request({"role": "user", "content": "a"}, {"role": "user", "content": "b"}), "alternate"),
        (request({"role": "user", "content": []}), "non-empty content"),
        (request({"role": "user", "content": "a"}, max_tokens=None), "max_tokens"),
        (request({"role": "user", "content": "a"}, system=[{"type": "text"}]), "text"),
        (
            request(
                {"role": "user", "content": "a"},
                tools=[{"name": "f", "input_schema": {"type": "object"}, "parameters": {}}],
            ),
            "parameters",
        ),
        (  # a bad element nested in a tool result's content list
            request(
                {"role": "user", "content": "a"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/bmp",
                                        "data": "x",
                                    },
                                }
                            ],
                        }
                    ],
                },
            ),
            "media_type",
        ),
        (
            request(
                {"role": "user", "content": "a"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                },
                {"role": "user", "content": "no result"},
            ),
            "without `tool_result`",
        ),
        (
            request(
                {"role": "user", "content": "a"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [text("x"), {"type": "tool_result", "tool_use_id": "t"}],
                },
            ),
            "must come first",
        ),
        (
            request({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "zz"}]}),
            "unexpected `tool_use_id`",
        ),
        (
            request({"role": "assistant", "content": [{"type": "thinking", "thinking": "x"}]}),
            "signature",
        ),
    ],
)
def test_what_the_api_refuses_is_refused(body, match):
    with pytest.raises(Exception, match=match):
        validate_request(body)
