"""The provider conformance suite, run on the OpenAI Responses provider."""

from __future__ import annotations

from typing import Any

from aopkit.testing.conformance import Answer, ProviderConformance
from aopkit.testing.fakes.openai_responses import (
    Broken,
    FakeResponses,
    function_call,
    reasoning,
    response,
)
from tests.plugins.openai.test_conformance import OpenAIAdapter


class ResponsesAdapter(OpenAIAdapter):
    """The same platform: its HTTP errors are chat completions' (``failure``)."""

    prefix = "openai-responses"
    finish_reasons = ("completed", "completed")  # the API's status, tool calls or not

    def server(self, key: str) -> FakeResponses:
        return FakeResponses(key=key)

    def reply(self, answer: Answer, *, stream: bool) -> dict[str, Any]:
        thought = [reasoning(answer.thinking)] if answer.thinking else []
        text: list[dict[str, Any] | str] = [answer.text] if answer.text else []
        calls = [function_call(c.id, c.name, dict(c.arguments)) for c in answer.calls]
        return response(*thought, *text, *calls, usage=answer.usage)

    def cut(self, answer: Answer) -> Broken:
        return Broken(self.reply(answer, stream=True), after=5)


class TestOpenAIResponses(ProviderConformance):
    adapter = ResponsesAdapter()
