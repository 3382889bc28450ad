"""Secrets never leak, whatever the server echoes: every provider plugin is configured with a
secret in every way a program can pass one (the API key, each credential header, a header value
marked ``Secret``, a value added to ``kernel.secrets``, a key in the base URL's query string)
against a server that echoes the request's URL, headers and body back, in error bodies (JSON
and HTML) and in 200 answers. With every sink attached, nothing any of them wrote holds a
secret, nor its first or last 8 characters."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import traceback
from collections.abc import Iterator
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from loguru import logger
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import aopkit
from aopkit.faults import FaultPolicy
from aopkit.retry import RetryPolicy
from aopkit.secret import Secret
from aopkit_otel import instrument
from aopkit_replay.model import ReplayModel
from aopkit_studio import Studio

FAST = RetryPolicy(attempts=2, initial=0.0, max_wait=0.0, jitter=0.0)


def _secret() -> str:
    return "s" + secrets.token_hex(16)


SECRETS = {
    "api_key": _secret(),
    "authorization": _secret(),
    "proxy_password": _secret(),
    "api-key": _secret(),
    "x-api-key": _secret(),
    "x-goog-api-key": _secret(),
    "cookie": _secret(),
    "marked header": _secret(),
    "kernel.secrets": _secret(),
    "url ?key=": "u+/" + secrets.token_hex(16),  # characters a URL spells otherwise
}
AUTH_HEADER = {  # the header each provider sends its key in (api_key wins over headers=)
    "openai": "authorization",
    "dashscope": "authorization",
    "ollama": "authorization",
    "anthropic": "x-api-key",
    "gemini": "x-goog-api-key",
    "openai-responses": "authorization",
}


def headers_for(provider: str) -> dict[str, str | Secret]:
    proxy = base64.b64encode(f"proxyuser:{SECRETS['proxy_password']}".encode()).decode()
    headers: dict[str, str | Secret] = {
        "Authorization": f"Bearer {SECRETS['authorization']}",
        "Proxy-Authorization": f"Basic {proxy}",
        "api-key": SECRETS["api-key"],  # Azure's spelling
        "x-api-key": SECRETS["x-api-key"],
        "x-goog-api-key": SECRETS["x-goog-api-key"],
        "Cookie": f"theme=dark; session={SECRETS['cookie']}",
        "X-Signed": Secret(SECRETS["marked header"]),
        "X-Tenant": SECRETS["kernel.secrets"],  # not a credential by name: the program says so
    }
    own = AUTH_HEADER[provider]
    return {k: v for k, v in headers.items() if k.lower() != own}


def answer(provider: str, text: str) -> dict[str, Any]:
    """A provider's 200 answer whose text is ``text``."""
    if provider == "openai":
        message = {"role": "assistant", "content": text}
        return {"id": "c1", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    if provider == "openai-responses":
        part = {"type": "output_text", "text": text, "annotations": []}
        item = {"id": "m1", "type": "message", "role": "assistant", "content": [part]}
        return {"id": "r1", "object": "response", "status": "completed", "output": [item]}
    if provider == "anthropic":
        return {
            "id": "m1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    if provider == "gemini":
        content = {"role": "model", "parts": [{"text": text}]}
        return {"candidates": [{"content": content, "finishReason": "STOP"}]}
    if provider == "dashscope":
        message = {"role": "assistant", "content": text}
        choice = {"message": message, "finish_reason": "stop"}
        return {"output": {"choices": [choice]}, "request_id": "r1"}
    assert provider == "ollama"
    message = {"role": "assistant", "content": text}
    return {"model": "m", "message": message, "done": True, "done_reason": "stop"}


def stream(provider: str, text: str) -> bytes:
    """A provider's streamed 200 answer (SSE, NDJSON for Ollama) whose text is ``text``."""
    if provider == "openai":
        choices = [{"index": 0, "delta": {"content": text}}], [{"index": 0, "delta": {}}]
        choices[1][0]["finish_reason"] = "stop"
        frames = [f"data: {json.dumps({'id': 'c1', 'choices': c})}\n\n" for c in choices]
        return "".join([*frames, "data: [DONE]\n\n"]).encode()
    if provider == "openai-responses":
        whole = answer(provider, text)
        item = whole["output"][0]
        events = [
            {"type": "response.created", "response": {**whole, "output": []}},
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {"type": "response.completed", "response": whole},
        ]
        return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
    if provider == "anthropic":
        message = {**answer(provider, ""), "content": [], "stop_reason": None}
        block, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": text}
        events = [
            {"type": "message_start", "message": message},
            {"type": "content_block_start", "index": 0, "content_block": block},
            {"type": "content_block_delta", "index": 0, "delta": delta},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}},
            {"type": "message_stop"},
        ]
        return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
    data = json.dumps(answer(provider, text))
    if provider == "gemini":
        return f"data: {data}\n\n".encode()
    if provider == "dashscope":
        return f"id:1\nevent:result\n:HTTP_STATUS/200\ndata:{data}\n\n".encode()
    return f"{data}\n".encode()


@attrs.define
class Verdict:
    winner: str


class EchoServer:
    """Answers every request with its URL, headers and body, as ``mode`` says: a 200 answer of
    the provider, a JSON 401, an HTML 500, or a stream that starts and is cut."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.mode = "ok"
        self.seen: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.text()
        echo = json.dumps({"url": str(request.url), "headers": dict(request.headers), "body": body})
        self.seen.append(echo)
        if self.mode == "401":
            error = {"error": {"message": f"bad credentials: {echo}", "type": "auth_error"}}
            return web.json_response(error, status=401)
        if self.mode == "500":
            page = f"<html><body><h1>Bad gateway</h1><pre>{echo}</pre></body></html>"
            return web.Response(status=502, text=page, content_type="text/html")
        if self.mode == "stream":
            kind = "application/x-ndjson" if self.provider == "ollama" else "text/event-stream"
            response = web.StreamResponse(headers={"Content-Type": kind})
            await response.prepare(request)
            await response.write(stream(self.provider, f"you sent {echo}"))
            return response
        if self.mode == "cut":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(f"data: {echo}\n\n".encode())
            return response  # ends without the provider's last event
        return web.json_response(answer(self.provider, f"you sent {echo}"))


def walk(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        yield from walk(exc.__cause__)
        exc = exc.__context__


def exception_texts(exc: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(exc))]
    for link in walk(exc):
        texts += [str(link), repr(link), repr(link.args), repr(vars(link))]
    return texts


async def studio_frames(studio: Studio) -> list[str]:
    """Every frame a page gets when it connects, and the trace files it can browse."""
    await asyncio.sleep(0.3)  # the Studio sends its events in batches
    auth = {"Authorization": f"Bearer {studio.token}"}
    base = f"http://127.0.0.1:{studio.port}"
    frames = []
    async with aiohttp.ClientSession(headers=auth) as session:
        async with session.ws_connect(f"{base}/ws?since=0") as ws:
            while (message := await ws.receive(timeout=2)).type == aiohttp.WSMsgType.TEXT:
                frames.append(message.data)
                if '"events"' in message.data and len(frames) > 1:
                    break
        async with session.get(f"{base}/api/runs/trace.jsonl") as response:
            frames.append(await response.text())
    assert any('"message_sent"' in frame for frame in frames)
    return frames


@pytest.mark.parametrize("provider", sorted(AUTH_HEADER))
async def test_no_secret_reaches_any_sink(provider, kernel, serve, tmp_path):
    server = EchoServer(provider)
    base = await serve(server.app())
    kernel.secrets.add(SECRETS["kernel.secrets"])

    logged: list[str] = []
    sink = logger.add(
        logged.append,
        level="TRACE",
        format="{level} {message} {extra}\n{exception}",
        backtrace=True,
        diagnose=True,  # tracebacks with the values of local variables
    )
    seen_events: list[str] = []

    class Listener:
        @aopkit.hookimpl
        def event(self, event: aopkit.events.Event, kernel: aopkit.Kernel) -> None:
            seen_events.append(repr(event))  # the raw object, before any sink scrubs it
            seen_events.append(kernel.codec.dumps_event(event))

    class Failing:
        @aopkit.hookimpl
        def event(self, event: aopkit.events.Event) -> None:
            raise RuntimeError(f"listener broke on {event!r}")  # logged with its traceback

    kernel.register(Listener(), "listener")
    kernel.register(Failing(), "failing")
    kernel.register(aopkit.ChatLog(), "chatlog")
    trace = aopkit.JsonlTrace(tmp_path / "trace.jsonl")
    kernel.register(trace, "trace")
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(kernel, tracer_provider=tracer_provider)
    studio = Studio(kernel, traces=tmp_path, incidents=False, flush=0.01)
    await studio.start()

    inner = kernel.model(
        f"{provider}:m-1",
        base_url=f"{base}/v1?key={SECRETS['url ?key=']}",
        api_key=SECRETS["api_key"],
        headers=headers_for(provider),
        retry=FAST,
        faults=FaultPolicy(rounds=1, escalate=False),
    )
    cassette = tmp_path / "cassette.json"
    model = ReplayModel.wrap(inner, cassette=cassette, mode="record")
    agent = aopkit.ModelAgent("bot", model, kernel=kernel)
    hello = aopkit.Msg("user", f"hello, my tenant is {SECRETS['kernel.secrets']}", "user")
    texts: list[str] = [repr(inner), repr(model), repr(inner.headers), repr(inner.api_key)]

    reply = await agent(hello)
    texts.append(reply.text)
    assert "***" in reply.text and "you sent" in reply.text
    with pytest.raises(aopkit.AopkitError) as structured:
        await agent(hello, structured=Verdict)  # the echo is no Verdict: an incident
    texts += exception_texts(structured.value)
    server.mode = "stream"
    streamed_texts = [chunk.text async for chunk in await model([hello], stream=True)]
    assert "***" in streamed_texts[-1] and "you sent" in streamed_texts[-1]
    texts += streamed_texts
    for mode in ("401", "500"):
        server.mode = mode
        with pytest.raises(aopkit.ReplyError) as failed:
            await agent(hello)
        texts += exception_texts(failed.value)
        with pytest.raises(aopkit.AopkitError) as streamed:
            async for _ in await model([hello], stream=True):
                pass
        texts += exception_texts(streamed.value)
    server.mode = "cut"
    with pytest.raises(aopkit.AopkitError) as cut:
        async for _ in await model([hello], stream=True):
            pass
    texts += exception_texts(cut.value)

    texts += await studio_frames(studio)  # what the page is sent, live and when browsing
    await studio.stop()
    trace.close()
    tracer_provider.shutdown()
    logger.remove(sink)
    texts += logged + seen_events
    texts.append((tmp_path / "trace.jsonl").read_text())
    texts.append(cassette.read_text())
    texts.append(kernel.faults.render() + repr(kernel.faults.faults))
    texts.append((tmp_path / "incidents.jsonl").read_text())
    for span in exporter.get_finished_spans():
        texts.append(span.to_json())
    # (The agent's memory keeps the program's own message as it was written: state is data.)
    texts.append(json.dumps([m.text for m in agent.memory.messages() if m.name == "bot"]))

    # The test can fail: the server did receive every secret, the sinks did get the echoes.
    received = "\n".join(server.seen)
    for label, value in SECRETS.items():
        if label not in ("proxy_password", AUTH_HEADER[provider]):  # base64; not sent
            assert value in received or value.replace("/", "%2F") in received, label
    assert any("Bad gateway" in t or "HTML page" in t for t in texts)
    assert any("bad credentials" in t for t in texts)
    everything = "\n".join(texts)
    assert "incident" in everything and "retry" in everything.lower()
    leaks = [
        f"the {label} secret ({piece!r}) in: ...{text[max(0, at - 200) : at + 50]}"
        for label, value in SECRETS.items()
        for piece in (value, value[:8], value[-8:])
        for text in texts
        if (at := text.find(piece)) >= 0
    ]
    assert not leaks, f"{provider}: " + "\n".join(leaks[:3])
