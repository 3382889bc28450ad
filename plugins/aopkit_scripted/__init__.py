"""``scripted:<anything>``: a model that returns the responses it is given, in order.

A scripted answer reports usage as a server would: the kernel's estimate of the request's
tokens (:func:`aopkit.usage.estimate_tokens`) as input, and of its own content as output; a
scripted :class:`~aopkit.models.ChatResponse` reports the usage it carries.

For tests and offline demos: no network, no randomness. A response may be a string (one text
block), a list of blocks, a :class:`~aopkit.models.ChatResponse`, or an exception to raise (to
script faults). Every call is kept in :attr:`ScriptedModel.calls`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import attrs

import aopkit
from aopkit.blocks import Block, TextBlock
from aopkit.models import Capabilities, ChatModel, ChatResponse, ToolChoice, ToolSpec, Usage
from aopkit.usage import estimate_tokens

Scripted = str | list[Block] | ChatResponse | BaseException


class ScriptExhausted(aopkit.AopkitError):
    """The model was called more often than it had responses."""


class ScriptedModel(ChatModel):
    provider = "scripted"
    capabilities = Capabilities(
        structured_output=True, media=frozenset({"image", "audio", "video"}), thinking=True
    )

    def __init__(
        self,
        model: str,
        *,
        kernel: aopkit.Kernel,
        responses: Iterable[Scripted] = (),
        chunk_size: int = 8,
        capabilities: Capabilities | None = None,
    ) -> None:
        super().__init__(model, kernel=kernel, capabilities=capabilities)
        self.responses = list(responses)
        self.chunk_size = chunk_size
        self.calls: list[dict[str, Any]] = []

    def add(self, *responses: Scripted) -> None:
        """Script more responses."""
        self.responses.extend(responses)

    def _next(self, request: dict[str, Any]) -> ChatResponse:
        self.calls.append(request)
        if not self.responses:
            raise ScriptExhausted(
                f"{self.name} has no response left for call {len(self.calls)}; script more"
            )
        item = self.responses.pop(0)
        if isinstance(item, BaseException):
            try:
                raise item
            finally:
                del item  # its traceback holds this frame: no local may hold it (a cycle)
        if isinstance(item, ChatResponse):
            return item
        content = [TextBlock(item)] if isinstance(item, str) else list(item)
        return ChatResponse(
            content,
            Usage(  # what it reports: the kernel's estimates, so runs are repeatable
                input_tokens=estimate_tokens(request["messages"], request["tools"]),
                output_tokens=estimate_tokens([aopkit.Msg(self.model, content, "assistant")]),
            ),
            finish_reason="tool_use" if any(b.type == "tool_use" for b in content) else "stop",
            id=f"scripted-{len(self.calls)}",
            model=self.model,
        )

    async def _complete(
        self,
        *,
        messages: list[aopkit.Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> ChatResponse:
        return self._next(_request(messages, tools, tool_choice, structured))

    async def _stream(
        self,
        *,
        messages: list[aopkit.Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> AsyncIterator[ChatResponse]:
        final = self._next(_request(messages, tools, tool_choice, structured))
        text = final.text
        other = [b for b in final.content if not isinstance(b, TextBlock)]
        for end in range(self.chunk_size, len(text), self.chunk_size):
            yield ChatResponse([TextBlock(text[:end])], id=final.id, model=final.model)
        yield attrs.evolve(final, content=[*([TextBlock(text)] if text else []), *other])


def _request(
    messages: list[aopkit.Msg],
    tools: list[ToolSpec],
    tool_choice: ToolChoice | None,
    structured: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return {
        "messages": messages,
        "tools": tools,
        "tool_choice": tool_choice,
        "structured": structured,
    }


@aopkit.hookimpl
def register_models(register: Callable[[str, Any], None]) -> None:
    register("scripted", ScriptedModel)
