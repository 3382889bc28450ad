"""The Acme provider's tests: aopkit's conformance suite with an adapter, and a fake Acme
server. ``kernel`` and ``serve`` are fixtures of aopkit's pytest plugin: nothing to import."""

from __future__ import annotations

import json

import attrs
from aiohttp import web

from aopkit import Msg
from aopkit.testing.conformance import Adapter, Answer, ProviderConformance
from aopkit.testing.fakes.base import FakeServer


@attrs.frozen
class Failure:
    status: int
    message: str
    headers: dict


@attrs.frozen
class Cut:
    body: dict


class FakeAcme(FakeServer):
    """Speaks the Acme Chat API on loopback; refuses a request without the right key."""

    routes = ("/v1/chat",)

    def __init__(self, key):
        super().__init__()
        self.key = key

    async def answer(self, request, body):
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response({"error": "invalid key"}, status=401)
        reply = self.next_reply({"id": "acme-0", "text": "ok", "stop": "done"})
        if isinstance(reply, Failure):
            error = {"error": reply.message}
            return web.json_response(error, status=reply.status, headers=reply.headers)
        whole = reply.body if isinstance(reply, Cut) else reply
        if not body["stream"]:
            return web.json_response(whole)
        text = whole["text"]
        events = [{"delta": text[i : i + 4]} for i in range(0, len(text), 4)]
        events.append({k: v for k, v in whole.items() if k != "text"})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for n, event in enumerate(events):
            frame = f"data: {json.dumps(event)}\n\n".encode()
            if isinstance(reply, Cut) and n == 2:
                await response.write(frame[:9])  # the connection drops midway
                break
            await response.write(frame)
        await response.write_eof()
        return response


class AcmeAdapter(Adapter):
    prefix = "acme"
    model = "acme-1"
    lacks = frozenset({"tools", "images", "thinking"})
    finish_reasons = ("done", "done")

    def server(self, key):
        return FakeAcme(key)

    def reply(self, answer: Answer, *, stream):
        body = {"id": "acme-1", "text": answer.text, "stop": "done"}
        if answer.usage is not None:
            body["usage"] = dict(zip(("in", "out"), answer.usage, strict=True))
        return body

    def failure(self, status, message, headers):
        return Failure(status, message, dict(headers))

    def cut(self, answer):
        return Cut(self.reply(answer, stream=True))


class TestAcme(ProviderConformance):
    adapter = AcmeAdapter()


async def test_the_payload_is_what_acme_documents(kernel, serve):
    fake = FakeAcme("k")
    await fake.start(serve)
    model = kernel.model("acme:acme-1", base_url=fake.base_url, api_key="k")
    await model([Msg("sys", "Be brief.", "system"), Msg("user", "hi", "user")])
    assert fake.requests == [
        {
            "model": "acme-1",
            "messages": [{"role": "system", "text": "Be brief."}, {"role": "user", "text": "hi"}],
            "stream": False,
        }
    ]
