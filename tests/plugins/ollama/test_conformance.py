"""The provider conformance suite, run on the Ollama provider."""

from __future__ import annotations

from collections.abc import Mapping

from aopkit.testing.conformance import Adapter, Answer, ProviderConformance
from aopkit.testing.fakes import ollama
from aopkit.testing.fakes.ollama import Broken, Failure, FakeOllama


class OllamaAdapter(Adapter):
    prefix = "ollama"
    model = "llama3.2"
    finish_reasons = ("stop", "stop")  # Ollama ends a turn of calls with "stop" too

    def server(self, key: str) -> FakeOllama:
        return FakeOllama(key=key)  # as behind a proxy that wants a key

    def reply(self, answer: Answer, *, stream: bool) -> ollama.Answer:
        calls = tuple(ollama.call(c.name, dict(c.arguments), c.id) for c in answer.calls)
        return ollama.Answer(answer.text, answer.thinking, calls, counts=answer.usage)

    def failure(self, status: int, message: str, headers: Mapping[str, str]) -> Failure:
        return Failure(status, message, dict(headers))

    def cut(self, answer: Answer) -> Broken:
        return Broken(self.reply(answer, stream=True), after=3)


class TestOllama(ProviderConformance):
    adapter = OllamaAdapter()
