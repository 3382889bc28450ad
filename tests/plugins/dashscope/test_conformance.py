"""The provider conformance suite, run on the DashScope (Qwen) provider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aopkit.testing.conformance import Adapter, Answer, ProviderConformance
from aopkit.testing.fakes import dashscope
from aopkit.testing.fakes.dashscope import Broken, Failure, FakeDashScope

CODES = {
    400: "InvalidParameter",
    401: "InvalidApiKey",
    429: "Throttling.RateQuota",
    503: "ServiceUnavailable",
}


class DashScopeAdapter(Adapter):
    """A text model on the text endpoint: it takes no media."""

    prefix = "dashscope"
    model = "qwen-plus"
    lacks = frozenset({"images"})

    def server(self, key: str) -> FakeDashScope:
        return FakeDashScope(key=key)

    def reply(self, answer: Answer, *, stream: bool) -> dashscope.Answer:
        calls = tuple(dashscope.call(c.id, c.name, dict(c.arguments)) for c in answer.calls)
        return dashscope.Answer(answer.text, answer.thinking, calls, usage=answer.usage)

    def failure(self, status: int, message: str, headers: Mapping[str, str]) -> Failure:
        return Failure(status, CODES.get(status, "InternalError"), message, dict(headers))

    def cut(self, answer: Answer) -> Broken:
        return Broken(self.reply(answer, stream=True), after=3)


class MultimodalAdapter(DashScopeAdapter):
    """A Qwen-VL model on the multimodal endpoint, whose messages are lists of parts. Tools
    are left to the text endpoint: the fake server takes only part lists on this endpoint,
    while the formatter sends a calls-only assistant turn with ``"content": ""``."""

    model = "qwen-vl-plus"
    lacks = frozenset({"tools"})

    def options(self, base_url: str, key: str) -> dict[str, Any]:
        return {**super().options(base_url, key), "multimodal": True}


class TestDashScope(ProviderConformance):
    adapter = DashScopeAdapter()


class TestDashScopeMultimodal(ProviderConformance):
    adapter = MultimodalAdapter()
