"""The provider conformance suite, run on the OpenAI chat-completions provider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aopkit.testing.conformance import Adapter, Answer, ProviderConformance
from aopkit.testing.fakes.openai import Broken, Failure, FakeOpenAI, call, completion

KINDS = {400: "invalid_request_error", 401: "invalid_request_error", 429: "requests"}


class OpenAIAdapter(Adapter):
    prefix = "openai"
    model = "gpt-test"

    def server(self, key: str) -> FakeOpenAI:
        return FakeOpenAI(key=key)

    def reply(self, answer: Answer, *, stream: bool) -> dict[str, Any]:
        calls = [call(c.id, c.name, dict(c.arguments)) for c in answer.calls]
        return completion(
            answer.text or None,
            tool_calls=calls or None,
            reasoning=answer.thinking or None,
            usage=answer.usage,
        )

    def failure(self, status: int, message: str, headers: Mapping[str, str]) -> Failure:
        kind = KINDS.get(status, "server_error")
        return Failure(status, message, kind, headers=dict(headers))

    def cut(self, answer: Answer) -> Broken:
        return Broken(self.reply(answer, stream=True), after=3)


class TestOpenAI(ProviderConformance):
    adapter = OpenAIAdapter()
