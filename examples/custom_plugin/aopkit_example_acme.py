"""``acme:<model>``: an example HTTP provider, for a made-up "Acme Chat" API.

The API: ``POST {base_url}/v1/chat`` with ``{"model", "messages": [{"role", "text"}],
"stream"}`` and the key as a Bearer token. It answers ``{"id", "text", "stop", "usage": {"in",
"out"}}`` (usage optional), or with ``"stream": true`` SSE events ``{"delta": "..."}`` then one
``{"id", "stop", "usage"}``; errors are ``{"error": "..."}`` with an HTTP status. It has no
tools, media or thinking. Its tests (``tests/test_acme.py``) run aopkit's conformance suite.
"""

from __future__ import annotations

import time

import aopkit
from aopkit.formatting import Formatter
from aopkit.http import HTTPChatModel, sse_events, stream_object
from aopkit.models import ChatResponse, ModelUnavailable, Usage, reported_tokens


class AcmeFormatter(Formatter):
    """Messages as Acme takes them: a role and a text each (the text of every text block)."""

    name = "acme"

    async def format(self, messages, *, capabilities, pool=None):
        return [{"role": m.role, "text": m.text} for m in messages if m.text]


class AcmeModel(HTTPChatModel):
    provider = "acme"
    default_base_url = "https://api.acme.example"
    env_prefix = "ACME"  # ACME_API_KEY, ACME_BASE_URL
    formatter_name = "acme"

    async def _payload(self, messages, stream):
        return {"model": self.model, "messages": await self.format(messages), "stream": stream}

    async def _complete(self, *, messages, tools, tool_choice, structured):
        started = time.perf_counter()
        data = await self.request("/v1/chat", await self._payload(messages, False)).send()
        usage = _usage(data, time.perf_counter() - started)
        text = data.get("text") or ""
        return ChatResponse([aopkit.TextBlock(text)], usage, data.get("stop"), data.get("id"))

    async def _stream(self, *, messages, tools, tool_choice, structured):
        started = time.perf_counter()
        request = self.request("/v1/chat", await self._payload(messages, True))
        text = ""
        async for _, data in sse_events(request.lines()):
            event = stream_object(data, self.name)  # a JSON object, or a retryable error
            if "stop" in event:
                usage = _usage(event, time.perf_counter() - started)
                yield ChatResponse([aopkit.TextBlock(text)], usage, event["stop"], event.get("id"))
                return
            text += event.get("delta") or ""
            yield ChatResponse([aopkit.TextBlock(text)])
        raise ModelUnavailable(self.name, "stream cut before its last event")


def _usage(data, seconds):
    counts = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Usage(reported_tokens(counts.get("in")), reported_tokens(counts.get("out")), seconds)


@aopkit.hookimpl
def register_models(register):
    register("acme", AcmeModel)


@aopkit.hookimpl
def register_formatters(register):
    register("acme", AcmeFormatter())
