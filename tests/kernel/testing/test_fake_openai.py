"""The fake server must speak the real protocol, or the model tests prove nothing: its bodies
and chunks are checked against the official ``openai`` response types."""

from __future__ import annotations

import aiohttp
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from aopkit.testing.fakes.openai import FakeOpenAI, call, chunks, completion

BODY = completion(
    "Hello there",
    tool_calls=[call("call_1", "weather", {"city": "Paris"}), call("call_2", "clock", {})],
    reasoning="Two tools.",
)


def test_completions_are_valid_responses():
    parsed = ChatCompletion.model_validate(BODY)
    assert parsed.choices[0].message.tool_calls[1].function.name == "clock"
    assert parsed.usage.prompt_tokens == 11


def test_chunks_are_valid_and_fragment_the_arguments_by_index():
    events = list(chunks(BODY, usage=True, interleave=True))
    parsed = [ChatCompletionChunk.model_validate(e) for e in events]
    assert parsed[-1].choices == [] and parsed[-1].usage.completion_tokens == 7
    fragments = [tc for p in parsed for c in p.choices for tc in c.delta.tool_calls or ()]
    assert [f.index for f in fragments[:4]] == [0, 1, 0, 1]  # interleaved
    assert all(f.id is None for f in fragments[2:])  # later fragments carry only the index
    assert "".join(f.function.arguments for f in fragments if f.index == 0) == '{"city": "Paris"}'
    without_usage = list(chunks(BODY, usage=False))
    assert all("usage" not in e for e in without_usage) and without_usage[-1]["choices"]


async def test_an_invalid_request_gets_the_apis_400(serve):
    server = FakeOpenAI()
    url = await server.start(serve) + "/chat/completions"
    bad = {"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]}
    async with aiohttp.ClientSession() as session, session.post(url, json=bad) as response:
        body = await response.json()
    assert response.status == 400
    assert set(body["error"]) == {"message", "type", "param", "code"}
