"""The provider conformance suite, run on the OpenAI Responses provider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aopkit.testing.conformance import Adapter, Answer, ProviderConformance
from aopkit.testing.fakes.openai_responses import (
    Broken,
    Failure,
    FakeResponses,
    function_call,
    reasoning,
    response,
)

KINDS = {400: "invalid_request_error", 401: "invalid_request_error", 429: "requests"}


class ResponsesAdapter(Adapter):
    prefix = "openai-responses"
    model = "gpt-test"
    finish_reasons = ("completed", "completed")  # the API's status, tool calls or not

    def server(self, key: str) -> FakeResponses:
        return FakeResponses(key=key)

    def reply(self, answer: Answer, *, stream: bool) -> dict[str, Any]:
        thought = [reasoning(answer.thinking)] if answer.thinking else []
        text: list[dict[str, Any] | str] = [answer.text] if answer.text else []
        calls = [function_call(c.id, c.name, dict(c.arguments)) for c in answer.calls]
        return response(*thought, *text, *calls, usage=answer.usage)

    def failure(self, status: int, message: str, headers: Mapping[str, str]) -> Failure:
        kind = KINDS.get(status, "server_error")
        return Failure(status, message, kind, headers=dict(headers))

    def cut(self, answer: Answer) -> Broken:
        return Broken(self.reply(answer, stream=True), after=5)


class TestOpenAIResponses(ProviderConformance):
    adapter = ResponsesAdapter()
