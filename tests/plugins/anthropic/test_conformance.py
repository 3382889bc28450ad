"""The provider conformance suite, run on the Anthropic Messages provider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aopkit.testing.conformance import Adapter, Answer, ProviderConformance
from aopkit.testing.fakes.anthropic import (
    Broken,
    Failure,
    FakeAnthropic,
    message,
    text,
    thinking,
    tool_use,
)

KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


class AnthropicAdapter(Adapter):
    prefix = "anthropic"
    model = "claude-test"
    finish_reasons = ("end_turn", "tool_use")

    def server(self, key: str) -> FakeAnthropic:
        return FakeAnthropic()

    def reply(self, answer: Answer, *, stream: bool) -> dict[str, Any]:
        content = [thinking(answer.thinking, "sig-1")] if answer.thinking else []
        content += [text(answer.text)] if answer.text else []
        content += [tool_use(c.id, c.name, dict(c.arguments)) for c in answer.calls]
        stop = "tool_use" if answer.calls else "end_turn"
        return message(*content, stop_reason=stop, usage=answer.usage)

    def failure(self, status: int, message: str, headers: Mapping[str, str]) -> Failure:
        return Failure(status, KINDS.get(status, "api_error"), message, dict(headers))

    def cut(self, answer: Answer) -> Broken:
        return Broken(self.reply(answer, stream=True), after=5)


class TestAnthropic(ProviderConformance):
    adapter = AnthropicAdapter()
