"""Every formatter, every awkward history: no payload holds a null, an empty part list or an
empty text part that a strict server rejects (llama.cpp's server answers 500 to a null assistant
content; Anthropic and Gemini reject empty text and error results without content)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from aopkit import Msg, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from aopkit.models import Capabilities
from aopkit.retry import NO_RETRY
from tests.plugins.test_usage_unknown import PROVIDERS as ANSWERS

FORMATTERS = [
    "openai",
    "openai-multiagent",
    "dashscope",
    "dashscope-multiagent",
    "ollama",
    "ollama-multiagent",
    "anthropic",
    "anthropic-multiagent",
    "gemini",
    "gemini-multiagent",
    "openai-responses",
    "openai-responses-multiagent",
]
CALL = ToolUseBlock("call_1", "clock", {})
TEXT_ONLY = Capabilities(media=frozenset())


def histories() -> dict[str, list[Msg]]:
    ask = Msg("user", "What time is it?", "user")
    return {
        "calls only": [
            ask,
            Msg("bot", [CALL], "assistant"),
            Msg("tools", [ToolResultBlock("call_1", "clock", "noon")], "user"),
        ],
        "calls beside empty text and thinking": [
            ask,
            Msg("bot", [ThinkingBlock(""), TextBlock(""), CALL], "assistant"),
            Msg("tools", [ToolResultBlock("call_1", "clock", "noon")], "user"),
        ],
        "empty results": [
            ask,
            Msg("bot", [CALL, ToolUseBlock("call_2", "clock", {})], "assistant"),
            Msg(
                "tools",
                [
                    ToolResultBlock("call_1", "clock", ""),
                    ToolResultBlock("call_2", "clock", [], is_error=True),
                ],
                "user",
            ),
        ],
        "an error result with no text": [
            ask,
            Msg("bot", [CALL], "assistant"),
            Msg("tools", [ToolResultBlock("call_1", "clock", "", is_error=True)], "user"),
        ],
        "unparsed arguments": [
            ask,
            Msg("bot", [ToolUseBlock("call_1", "clock", {}, raw_input="{'tz': ")], "assistant"),
            Msg("tools", [ToolResultBlock("call_1", "clock", "noon")], "user"),
        ],
        "empty turns": [
            ask,
            Msg("bot", [ThinkingBlock("")], "assistant"),
            Msg("user", [TextBlock("")], "user"),
            Msg("user", "and now?", "user"),
        ],
    }


def offences(value: Any, formatter: str, path: str = "") -> list[str]:
    """Where ``value`` holds what a strict server rejects."""
    found = []
    if value is None:
        found.append(f"{path}: null")
    elif isinstance(value, dict):
        if value.get("type") == "text" and value.get("text") == "":
            found.append(f"{path}: empty text part")
        if formatter.startswith("gemini") and value.keys() == {"text"} and not value["text"]:
            found.append(f"{path}: empty text part")
        is_error_result = value.get("type") == "tool_result" and value.get("is_error")
        if is_error_result and not value.get("content"):
            found.append(f"{path}: error result without content")
        for key, item in value.items():
            if key in ("content", "parts") and item == []:
                found.append(f"{path}.{key}: empty list")
            found += offences(item, formatter, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += offences(item, formatter, f"{path}[{index}]")
    return found


@pytest.mark.parametrize("history", list(histories()))
@pytest.mark.parametrize("name", FORMATTERS)
@pytest.mark.parametrize("capabilities", [Capabilities(), TEXT_ONLY], ids=["media", "text"])
async def test_no_payload_holds_what_a_strict_server_rejects(kernel, name, history, capabilities):
    formatter = kernel.formatters[name]
    payload = await formatter.format(histories()[history], capabilities=capabilities)
    assert offences(payload, name) == []


@pytest.mark.parametrize("strict", [False, True])
async def test_an_openai_turn_of_calls_only_has_empty_string_content(kernel, strict):
    formatter = kernel.formatters["openai"].configured(strict=strict, send_reasoning=False)
    payload = await formatter.format(histories()["calls only"], capabilities=Capabilities())
    turn = payload["messages"][1]
    assert turn["content"] == "" and turn["tool_calls"][0]["id"] == "call_1"


async def test_an_anthropic_error_result_without_text_says_it_failed(kernel):
    formatter = kernel.formatters["anthropic"]
    payload = await formatter.format(
        histories()["an error result with no text"], capabilities=Capabilities()
    )
    (result,) = payload["messages"][2]["content"]
    assert result["is_error"] is True
    assert "failed" in result["content"]


PROVIDERS = ["openai", "anthropic", "gemini", "dashscope", "ollama", "openai-responses"]
CLOCK = {"type": "object", "properties": {"tz": {"type": "string"}}}


@pytest.fixture
def capture(kernel, serve):
    """A model of ``provider`` whose requests are kept (the answers are minimal, valid ones)."""

    async def start(provider: str):
        bodies: list[Any] = []
        content_type, body = ANSWERS[provider][0](ANSWERS[provider][1], False)

        async def handler(request: web.Request) -> web.Response:
            bodies.append(await request.json())
            return web.Response(body=body, headers={"Content-Type": content_type})

        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", handler)
        base = await serve(app)
        model = kernel.model(f"{provider}:m", base_url=base, api_key="k", retry=NO_RETRY)
        return model, bodies

    return start


@pytest.mark.parametrize("choice", [None, "auto", "clock"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_no_request_body_holds_what_a_strict_server_rejects(capture, provider, choice):
    """The whole body (tools, tool choice, parameters), not only the messages."""
    model, bodies = await capture(provider)
    for history in histories().values():
        await model(history, tools=[{"name": "clock", "parameters": CLOCK}], tool_choice=choice)
    await model(histories()["calls only"], structured={"type": "object", "properties": {}})
    assert len(bodies) == len(histories()) + 1
    for body in bodies:
        assert offences(body, provider) == []
