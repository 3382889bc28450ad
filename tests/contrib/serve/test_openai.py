"""OpenAI chat completions, driven by the official ``openai`` client (and raw HTTP for what
that client would never send)."""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp
import openai
import pytest
from aiohttp import web

import aopkit
from aopkit import Msg, ReActAgent, ToolUseBlock
from aopkit.events import ReplyChunk
from aopkit_serve import build_app
from tests.tool_history import assert_answered

from .agents import Recall, held

TOKEN = "tok-" + "x" * 30
HEADER = "X-Aopkit-Conversation"


@pytest.fixture
async def start():
    """``await start(target, store=...)`` -> an ``AsyncOpenAI`` client of the app, run as
    ``aopkit serve`` runs it (aiohttp's defaults: handlers not cancelled when clients leave)."""
    clients, runners = [], []

    async def started(target, *, store=None, token=TOKEN):
        runner = web.AppRunner(build_app(target, token=TOKEN, store=store, protocols=("openai",)))
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        client = openai.AsyncOpenAI(
            base_url=f"http://{host}:{port}/v1",
            api_key=token,
            max_retries=0,
            timeout=30,
            http_client=openai.DefaultAsyncHttpxClient(trust_env=False),
        )
        clients.append(client)
        return client

    yield started
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()


def user(text):
    return [{"role": "user", "content": text}]


def header(conversation):
    return {"extra_headers": {HEADER: conversation}}


async def test_models_lists_the_served_agents(kernel, start):
    client = await start([Recall("recall", kernel=kernel), Recall("other", kernel=kernel)])
    assert [m.id for m in (await client.models.list()).data] == ["recall", "other"]
    assert (await client.models.retrieve("other")).id == "other"
    with pytest.raises(openai.NotFoundError, match="not a served agent"):
        await client.models.retrieve("nobody")


async def test_a_plain_completion_with_usage(kernel, start, scripted):
    helper = aopkit.ModelAgent("helper", scripted("Hello there, friend."), kernel=kernel)
    client = await start(helper)
    raw = await client.chat.completions.with_raw_response.create(
        model="helper", messages=user("hi")
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello there, friend."
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "helper" and completion.object == "chat.completion"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert len(raw.headers[HEADER]) == 32  # the fresh conversation, to continue it by


async def test_a_streamed_completion_with_usage_and_done(kernel, start, scripted):
    text = "A streamed answer that comes in several chunks."
    helper = ReActAgent("helper", scripted(text, chunk_size=5), stream=True, kernel=kernel)
    client = await start(helper)
    stream = await client.chat.completions.create(
        model="helper",
        messages=user("hi"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]  # ends at [DONE]
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    assert "".join(d or "" for d in deltas) == text
    assert len([d for d in deltas if d]) >= 5  # token by token, not in one piece
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert {c.id for c in chunks} == {chunks[0].id}


async def test_a_stream_without_usage_and_an_agent_that_does_not_stream(kernel, start):
    client = await start(Recall("recall", kernel=kernel))
    stream = await client.chat.completions.create(
        model="recall", messages=user("plain"), stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "plain"
    assert all(c.usage is None for c in chunks)


async def test_with_a_conversation_id_the_agent_remembers(kernel, start):
    client = await start(Recall("recall", kernel=kernel))
    ask = client.chat.completions.create
    first = await ask(model="recall", messages=user("one"), **header("c1"))
    assert first.choices[0].message.content == "one"
    history = [*user("one"), {"role": "assistant", "content": "one"}, *user("two")]
    second = await ask(model="recall", messages=history, **header("c1"))
    assert second.choices[0].message.content == "one|two"  # only the last message was new
    by_metadata = await ask(model="recall", messages=user("three"), metadata={"conversation": "c1"})
    assert by_metadata.choices[0].message.content == "one|two|three"


async def test_without_one_the_earlier_messages_are_the_fresh_agents_memory(kernel, start):
    client = await start(Recall("recall", kernel=kernel))
    history = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "b", "name": "dana"},
    ]
    for _ in range(2):  # and each such request is a conversation of its own
        reply = await client.chat.completions.create(model="recall", messages=history)
        assert reply.choices[0].message.content == "a|b"


async def test_twenty_conversations_at_once_never_see_each_others_messages(kernel, start, tmp_path):
    client = await start(Recall("recall", kernel=kernel), store=aopkit.SQLiteStore(tmp_path / "s"))

    async def talk(n: int, stream: bool) -> None:
        said = []
        for turn in range(3):
            said.append(f"{n}-{turn}")
            answer = await client.chat.completions.create(
                model="recall", messages=user(said[-1]), stream=stream, **header(f"conv{n}")
            )
            if stream:
                text = "".join([c.choices[0].delta.content or "" async for c in answer])
            else:
                text = answer.choices[0].message.content
            assert text == "|".join(said)

    await asyncio.gather(*(talk(n, stream=n % 2 == 0) for n in range(20)))


async def test_a_restarted_server_continues_a_conversation(kernel, start, tmp_path):
    store = tmp_path / "sessions.sqlite3"
    first = await start(Recall("recall", kernel=kernel), store=aopkit.SQLiteStore(store))
    await first.chat.completions.create(model="recall", messages=user("before"), **header("k"))
    second = await start(Recall("recall", kernel=kernel), store=aopkit.SQLiteStore(store))
    reply = await second.chat.completions.create(
        model="recall", messages=user("after"), **header("k")
    )
    assert reply.choices[0].message.content == "before|after"


async def test_two_servers_on_one_store_continue_each_others_conversations(kernel, start, tmp_path):
    shared = tmp_path / "shared.sqlite3"
    servers = [
        await start(Recall("recall", kernel=kernel), store=aopkit.SQLiteStore(shared))
        for _ in range(2)
    ]

    async def talk(n: int) -> None:
        said = []
        for turn in range(4):
            said.append(f"{n}.{turn}")
            reply = await servers[turn % 2].chat.completions.create(
                model="recall", messages=user(said[-1]), **header(f"x{n}")
            )
            assert reply.choices[0].message.content == "|".join(said)

    await asyncio.gather(*(talk(n) for n in range(10)))


async def test_a_wrong_or_missing_token_is_refused(kernel, start):
    for token in ("wrong", TOKEN + "x", TOKEN.upper()):
        client = await start(Recall("recall", kernel=kernel), token=token)
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model="recall", messages=user("hi"))
        assert refused.value.status_code == 401 and TOKEN not in str(refused.value)
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()


async def test_an_unknown_model_is_404(kernel, start):
    client = await start(Recall("recall", kernel=kernel))
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert missing.value.code == "model_not_found" and missing.value.param == "model"


GARBAGE = [
    (b"", "not valid JSON"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"model": "recall", "messages": [], "model": "x"}', "not valid JSON"),
    (b'{"model": 3, "messages": []}', "'model' must be"),
    (b'{"model": "recall"}', "'messages' must be a non-empty array"),
    (b'{"model": "recall", "messages": "hi"}', "'messages' must be a non-empty array"),
    (b'{"model": "recall", "messages": [null]}', "messages[0] must be an object"),
    (b'{"model": "recall", "messages": [{"role": "tool", "content": "x"}]}', "role must be"),
    (b'{"model": "recall", "messages": [{"role": "user", "content": 5}]}', "content must be"),
    (b'{"model": "recall", "messages": [{"role": "user"}]}', "content must be"),
    (
        b'{"model": "recall", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}',
        "must be a text or image_url part",
    ),
    (
        b'{"model": "recall", "messages": [{"role": "user", "content": [{"type": "image_url",'
        b' "image_url": {"url": "file:///etc/passwd"}}]}]}',
        "http(s) or base64 data URL",
    ),
    (
        b'{"model": "recall", "messages": [{"role": "assistant", "content": "x"}]}',
        "the last message must be the user's",
    ),
    (
        b'{"model": "recall", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}',
        "tools are not accepted",
    ),
    (b'{"model": "recall", "messages": [{"role": "user", "content": "x"}], "n": 2}', "n=1"),
    (
        b'{"model": "recall", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
        "'stream' must be true or false",
    ),
    (
        b'{"model": "recall", "messages": [{"role": "user", "content": "x"}], "metadata": 1}',
        "'metadata' must be an object",
    ),
    (
        b'{"model": "recall", "messages": [{"role": "user", "content": "x"}],'
        b' "metadata": {"conversation": "../../etc"}}',
        "invalid conversation id",
    ),
    (
        b'{"model": "recall", "messages": [{"role": "user", "content": "x"}],'
        b' "stream_options": {"include_usage": 1}}',
        "'stream_options' must be",
    ),
    (
        b'{"model": "recall", "messages": [{"role": "user", "content": "x"}],'
        b' "stream_options": [true]}',
        "'stream_options' must be",
    ),
    (b'{"model": "recall", "messages": [{"role": "user", "content": NaN}]}', "not valid JSON"),
    (b'{"model": "recall", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", "not valid JSON"),
    (b"\xff\xfe garbage", "not valid JSON"),
]


async def test_garbage_bodies_get_a_400_in_openais_shape(kernel, serve):
    agent = Recall("recall", kernel=kernel)
    url = await serve(build_app(agent, token=TOKEN, protocols=("openai",)))
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        for body, problem in GARBAGE:
            async with http.post(f"{url}/v1/chat/completions", data=body, headers=auth) as r:
                assert r.status == 400, (body[:80], await r.text())
                error = (await r.json())["error"]
                assert problem in error["message"], (body[:80], error)
                assert error["type"] == "invalid_request_error"
        huge = io.BytesIO(json.dumps({"model": "recall", "messages": user("x" * 2**21)}).encode())
        async with http.post(f"{url}/v1/chat/completions", data=huge, headers=auth) as r:
            assert r.status == 413 and "larger than" in (await r.json())["error"]["message"]
        bad_id = {**auth, HEADER: "a/b"}
        good = json.dumps({"model": "recall", "messages": user("x"), "stream": True})
        async with http.post(f"{url}/v1/chat/completions", data=good, headers=bad_id) as r:
            assert r.status == 400 and r.content_type == "application/json"  # before the stream


async def test_a_failing_agent_is_a_500_without_secrets_and_mid_stream_an_error_event(
    kernel, start
):
    kernel.secrets.add("sk-very-secret-key")

    class Failing(aopkit.Agent):
        async def reply(self, msg):
            if self.kernel.observed:
                self.kernel.emit(ReplyChunk(agent=self.name, text="partial"))
            raise RuntimeError("upstream refused key sk-very-secret-key")

    client = await start(Failing("failing", kernel=kernel))
    with pytest.raises(openai.InternalServerError) as failed:
        await client.chat.completions.create(model="failing", messages=user("hi"))
    assert "upstream refused" in str(failed.value) and "sk-very" not in str(failed.value)
    stream = await client.chat.completions.create(model="failing", messages=user("hi"), stream=True)
    got = []
    with pytest.raises(openai.APIError, match="upstream refused") as mid:
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content)
    assert "sk-very" not in str(mid.value) and "partial" in got


def slow_tool_agent(kernel, started: asyncio.Event):
    async def slow(seconds: float) -> str:
        """Wait a while."""
        started.set()
        await asyncio.sleep(seconds)
        return "done"

    model = kernel.model(
        "scripted:brain",
        responses=[[ToolUseBlock("call1", "slow", {"seconds": 30})], "after the tool"],
    )
    return ReActAgent("helper", model, tools=[slow], stream=True, kernel=kernel)


async def test_a_client_leaving_mid_stream_cancels_the_reply_and_keeps_history_valid(
    kernel, start, tmp_path
):
    started = asyncio.Event()
    store = aopkit.SQLiteStore(tmp_path / "s")
    client = await start(slow_tool_agent(kernel, started), store=store)
    headers = {"Authorization": f"Bearer {TOKEN}", HEADER: "left"}
    body = {"model": "helper", "messages": user("go"), "stream": True}
    async with aiohttp.ClientSession() as http:
        response = await http.post(f"{client.base_url}chat/completions", json=body, headers=headers)
        assert (await response.content.readline()).startswith(b"data: ")  # the role chunk
        await asyncio.wait_for(started.wait(), 10)  # the tool runs: nothing is being written
        response.close()  # the client goes away

    async def saved():
        return len((await store.load("left")).get("helper", {}).get("memory", [])) == 3

    await eventually(saved)  # the watcher noticed, cancelled the reply; the turn saved
    restored = ReActAgent("helper", "scripted:x", kernel=kernel)
    restored.load_state_dict((await store.load("left"))["helper"])
    messages = restored.memory.messages()
    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert "cancelled" in messages[-1].content[0].output
    await assert_answered(kernel, messages)
    reply = await client.chat.completions.create(  # the server kept working
        model="helper", messages=user("again"), **header("left")
    )
    assert reply.choices[0].message.content == "after the tool"


async def eventually(check, seconds=10.0):
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {seconds}s: {check.__name__}")


async def test_a_client_leaving_while_text_streams_and_a_cancelled_plain_call(
    kernel, start, tmp_path
):
    cancelled = []

    class Drip(aopkit.Agent):
        async def reply(self, msg):
            text = ""
            try:
                for i in range(60):
                    text += f"{i} "
                    self.kernel.emit(ReplyChunk(agent=self.name, text=text))
                    await asyncio.sleep(0.02)
            except asyncio.CancelledError:
                cancelled.append(self.memory[-1].text)
                raise
            return Msg(self.name, text, "assistant")

    store = aopkit.SQLiteStore(tmp_path / "s")
    client = await start(Drip("drip", kernel=kernel), store=store)
    stream = await client.chat.completions.create(
        model="drip", messages=user("x"), stream=True, **header("d")
    )
    async for _ in stream:
        break
    await stream.close()  # the client leaves: its reply is cancelled, its message kept

    async def stream_cancelled():
        memory = (await store.load("d")).get("drip", {}).get("memory", [])
        return cancelled == ["x"] and len(memory) == 1

    await eventually(stream_cancelled)

    call = asyncio.create_task(
        client.chat.completions.create(model="drip", messages=user("y"), **header("e"))
    )
    await asyncio.sleep(0.2)
    call.cancel()  # a plain call the client gives up on: cancelled on the server too
    with pytest.raises(asyncio.CancelledError):
        await call

    async def plain_cancelled():
        memory = (await store.load("e")).get("drip", {}).get("memory", [])
        return cancelled == ["x", "y"] and len(memory) == 1

    await eventually(plain_cancelled)


async def test_a_turn_another_server_holds_too_long_is_a_409(kernel, start, tmp_path, monkeypatch):
    monkeypatch.setattr("aopkit_serve.Service.claim_wait", 0.05)
    first, second = [
        await start(Recall("recall", kernel=kernel), store=aopkit.SQLiteStore(tmp_path / "s.db"))
        for _ in range(2)
    ]
    asked = {"model": "recall", **header("c")}
    slow = asyncio.create_task(first.chat.completions.create(messages=user("sleep:0.5"), **asked))
    await held(aopkit.SQLiteStore(tmp_path / "s.db"), "session:c")
    with pytest.raises(openai.ConflictError, match="conversation 'c' is busy") as caught:
        await second.chat.completions.create(messages=user("x"), **asked)
    assert caught.value.code == "conversation_busy"
    await slow
    again = await second.chat.completions.create(messages=user("y"), **asked)
    assert again.choices[0].message.content == "sleep:0.5|y"
