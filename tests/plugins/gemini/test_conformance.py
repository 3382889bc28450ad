"""The provider conformance suite, run on the Gemini provider."""

from __future__ import annotations

from collections.abc import Mapping

from aopkit.testing.conformance import Adapter, Answer, ProviderConformance
from aopkit.testing.fakes.gemini import FakeGemini, Reply, chunk, error_body

STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


def _pieces(value: str, size: int) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)]


class GeminiAdapter(Adapter):
    prefix = "gemini"
    model = "gemini-test"
    finish_reasons = ("stop", "tool_use")

    def server(self, key: str) -> FakeGemini:
        return FakeGemini(key=key)

    def reply(self, answer: Answer, *, stream: bool) -> Reply:
        counts = ("prompt", "output")
        usage = None if answer.usage is None else dict(zip(counts, answer.usage, strict=True))
        calls = [
            {"functionCall": {"id": c.id, "name": c.name, "args": dict(c.arguments)}}
            for c in answer.calls
        ]
        if not stream:
            parts = [{"text": answer.thinking, "thought": True}] if answer.thinking else []
            parts += [{"text": answer.text}] if answer.text else []
            return Reply(chunk(*parts, *calls, finish="STOP", usage=usage))
        events = [chunk({"text": p, "thought": True}) for p in _pieces(answer.thinking, 6)]
        events += [chunk({"text": p}) for p in _pieces(answer.text, 4)]
        events += [chunk(*calls, finish="STOP", usage=usage)]
        return Reply(events=events)

    def failure(self, status: int, message: str, headers: Mapping[str, str]) -> Reply:
        body = error_body(status, STATUSES.get(status, "INTERNAL"), message)
        return Reply(body, status=status, headers=dict(headers))

    def cut(self, answer: Answer) -> Reply:
        whole = self.reply(answer, stream=True)
        return Reply(events=(whole.events or [])[:2], cut=True)


class TestGemini(ProviderConformance):
    adapter = GeminiAdapter()
