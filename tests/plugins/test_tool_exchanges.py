"""Every provider's formatter, for the tool exchanges a history can hold: a tool result is a
tool result whatever the role of the message holding it, media a tool returned are kept as that
API allows, and a request with nothing to send is refused before it is sent."""

import base64
import json

import pytest
from aiohttp import web

from aopkit import Base64Source, ImageBlock, Msg, TextBlock, ToolResultBlock, ToolUseBlock
from aopkit.models import ModelRejected
from aopkit.retry import NO_RETRY
from tests.tool_history import CAPABILITIES, FORMATTERS, PROVIDERS, assert_answered

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(40))).decode()
ROLES = ("system", "user", "assistant")
# How each API takes an image a tool returned: in the result itself, or beside it (OpenAI: in
# a user message after the results), or only as a note (tool results there hold text only).
MEDIA_KEPT = {
    "openai": True,
    "anthropic": True,
    "gemini": True,
    "dashscope": False,
    "ollama": False,
    "openai-responses": True,
}


def calls(*ids):
    return [ToolUseBlock(i, f"tool_{i}", {"x": 1}) for i in ids]


def snap_result(call_id):
    shot = ImageBlock(Base64Source("image/png", PNG))
    return ToolResultBlock(call_id, f"tool_{call_id}", [TextBlock("a cat"), shot])


async def formatted(kernel, name, history):
    payload = await kernel.formatters[name].format(history, capabilities=CAPABILITIES)
    return json.dumps(payload)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", FORMATTERS)
async def test_results_answer_their_calls_whatever_the_role_holding_them(kernel, name, role):
    history = [
        Msg("sys", "Be brief.", "system"),
        Msg("user", "What is in the picture?", "user"),
        Msg("helper", [TextBlock("Let me look."), *calls("a", "b")], "assistant"),
        Msg(
            "tools",
            [snap_result("a"), ToolResultBlock("b", "tool_b", "no count", is_error=True)],
            role,
        ),
        Msg("user", "And?", "user"),
    ]
    await assert_answered(kernel, history, formatters=[name])
    wire = await formatted(kernel, name, history)
    assert "a cat" in wire and "no count" in wire
    if MEDIA_KEPT[name.removesuffix("-multiagent")]:
        assert PNG in wire, "the image the tool returned reaches the model"
    else:
        assert "[image not shown to the model" in wire, "never a silent drop"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", FORMATTERS)
async def test_a_message_holding_calls_and_results_keeps_each_result_after_its_call(
    kernel, name, role
):
    """A host may store a call with its result, or the answer to one call with the next call."""
    history = [
        Msg("user", "Go.", "user"),
        Msg("helper", calls("a"), "assistant"),
        Msg("host", [ToolResultBlock("a", "tool_a", "A"), TextBlock("Next."), *calls("b")], role),
        Msg("tools", [ToolResultBlock("b", "tool_b", "B")], "user"),
        Msg("host", [*calls("c"), ToolResultBlock("c", "tool_c", "C")], role),
        Msg("user", "Thanks.", "user"),
    ]
    await assert_answered(kernel, history, stored=False, formatters=[name])


class Counter:
    """A loopback server that counts the requests it gets and refuses them all."""

    def __init__(self):
        self.requests = 0

    async def handle(self, request):
        self.requests += 1
        return web.json_response({"error": {"message": "refused"}}, status=400)

    def app(self):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


NOTHING = {
    "an empty history": [],
    "only an empty message": [Msg("user", [], "user")],
}


@pytest.mark.parametrize("history", NOTHING.values(), ids=NOTHING.keys())
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_request_with_nothing_to_send_is_refused_before_it_is_sent(
    kernel, serve, provider, history
):
    counter = Counter()
    url = await serve(counter.app())
    model = kernel.model(f"{provider}:m", base_url=url, api_key="k", retry=NO_RETRY)
    with pytest.raises(ModelRejected, match="no message to send"):
        await model(history)
    with pytest.raises(ModelRejected, match="no message to send"):
        async for _ in await model(history, stream=True):
            pass
    assert counter.requests == 0
    with pytest.raises(ModelRejected, match="refused"):  # the server is there: a real call
        await model([Msg("user", "hi", "user")])
    assert counter.requests == 1


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
async def test_only_a_system_prompt_is_refused_where_the_api_keeps_it_apart(
    kernel, serve, provider
):
    counter = Counter()
    model = kernel.model(
        f"{provider}:m", base_url=await serve(counter.app()), api_key="k", retry=NO_RETRY
    )
    with pytest.raises(ModelRejected, match="no message to send"):
        await model([Msg("sys", "Be brief.", "system")])
    assert counter.requests == 0
