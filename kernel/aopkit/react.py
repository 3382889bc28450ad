"""The ReAct agent: reason, act with tools, observe the results, until it can answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .agent import Incoming
from .blocks import Block, TextBlock, ToolResultBlock, ToolUseBlock
from .errors import DecodeError
from .events import MessageSent, ReplyChunk
from .message import Msg
from .model_agent import ModelAgent
from .structured import Target
from .toolkit import Toolkit

if TYPE_CHECKING:
    from .faults import Fault, FaultPolicy
    from .kernel import Kernel
    from .memory import Memory
    from .models import ChatModel, ChatResponse

T = TypeVar("T")
Compressor = Callable[[list[Msg]], Awaitable[list[Msg]]]

CLOSING = (
    "You have used all your steps. Do not call tools now: answer with what you found so far, "
    "and say what is still open."
)


class ReActAgent(ModelAgent):
    """``ReActAgent("helper", model, toolkit=Toolkit([search, calc]))``.

    Each step the model either calls tools — run concurrently when it asks for several, their
    results stored in memory — or answers. After ``max_iters`` steps it is asked for a closing
    summary instead. ``compress`` (or overriding :meth:`compress`) shortens long histories
    before they reach the model; ``stream=True`` streams the model's text to observers as
    ``reply_chunk`` events.
    """

    def __init__(
        self,
        name: str,
        model: ChatModel | str,
        *,
        toolkit: Toolkit | None = None,
        sys_prompt: str | None = None,
        max_iters: int = 10,
        parallel: bool = True,
        stream: bool = False,
        compress: Compressor | None = None,
        faults: FaultPolicy | None = None,
        memory: Memory | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        super().__init__(
            name, model, sys_prompt=sys_prompt, faults=faults, memory=memory, kernel=kernel
        )
        self.toolkit = toolkit if toolkit is not None else Toolkit(kernel=self.kernel)
        self.max_iters = max_iters
        self.parallel = parallel
        self.stream = stream
        self._compress = compress
        self._pending: list[ToolUseBlock] = []  # tool calls whose results are not stored yet
        self._tool_faults: dict[str, Fault] = {}  # bad arguments sent back to the model

    def _reset(self) -> None:
        super()._reset()
        self._pending = []
        self._tool_faults = {}

    async def compress(self, messages: list[Msg]) -> list[Msg]:
        """The hook point for long histories: return what the model should see."""
        return messages if self._compress is None else await self._compress(messages)

    async def reply(self, msg: Incoming) -> Msg:
        for _ in range(self.max_iters):
            response = await self._think(tools=True)
            if not any(isinstance(b, ToolUseBlock) for b in response.content):
                return Msg(self.name, list(response.content), "assistant")
            content = [
                self._checked(b, response.finish_reason) if isinstance(b, ToolUseBlock) else b
                for b in response.content
            ]
            self._step(Msg(self.name, content, "assistant"))
            await self._act([b for b in content if isinstance(b, ToolUseBlock)])
        closing = Msg("system", CLOSING, "user", metadata={"closing": True})
        self.memory.add(closing)
        response = await self._think(tools=False)
        return Msg(self.name, list(response.content), "assistant", metadata={"max_iters": True})

    async def reply_structured(self, msg: Incoming, target: Target[T]) -> tuple[Msg, T]:
        """Act with tools as usual, then state the answer in the target's shape (all tiers)."""
        from .faults import resolve

        answer = await self.reply(msg)
        self.memory.add(answer)
        value = await resolve(
            self.model, await self.compress(self.messages()), target, policy=self.faults
        )
        text = json.dumps(self.kernel.codec.dump(value), ensure_ascii=False)
        return Msg(self.name, text, "assistant", metadata={"structured": target.name}), value

    async def _think(self, tools: bool) -> ChatResponse:
        messages = await self.compress(self.messages())
        specs = self.toolkit.specs() if tools else []
        choice = None if specs else ("none" if tools else None)
        if not self.stream:
            response: Any = await self.model(messages, tools=specs, tool_choice=choice)
            return response  # type: ignore[no-any-return]
        last = None
        kernel = self.kernel
        chunks: Any = await self.model(messages, tools=specs, tool_choice=choice, stream=True)
        async for last in chunks:
            if kernel.observed and last.text:
                kernel.emit(ReplyChunk(agent=self.name, text=last.text))
        assert last is not None
        final: ChatResponse = last
        return final

    def _checked(self, use: ToolUseBlock, finish_reason: str | None) -> ToolUseBlock:
        """Tool-call arguments pass the fault tiers before the tool runs: tier 2 repairs them
        without a model call (never when the answer was cut off); what it cannot fix goes back
        to the model as an error result, and the model's next try is the tier-3 round."""
        from .faults import DEFAULT_POLICY, CutOff, Fault, correct

        found = self.toolkit.active(use.name)
        if found is None:
            return use
        kernel = self.kernel
        if use.raw_input is None:
            try:
                found.arguments(use.input, kernel)
            except DecodeError as exc:
                text, kind, error = json.dumps(use.input), "invalid", str(exc)
            else:
                fault = self._tool_faults.pop(use.name, None)
                if fault is not None:
                    fault.tier, fault.resolver, fault.calls = 3, "self (tool error result)", 1
                return use
        else:
            text, kind, error = use.raw_input, "malformed", "the arguments are not JSON"

        def check(value: Any) -> dict[str, Any]:
            found.arguments(value, kernel)
            return dict(value)

        target = Target(f"arguments of {use.name}", found.parameters, check)
        policy = self.faults or self.model.fault_policy or DEFAULT_POLICY
        source = f"{self.model.name} ({use.name} arguments)"
        try:
            fixed = correct(
                kernel,
                source,
                text,
                target,
                policy.correctors,
                kind=kind,
                error=error,
                finish_reason=finish_reason,
            )
        except CutOff as exc:
            fixed, error = None, f"{exc.reason}; {error}"
        if fixed is not None:
            return attrs.evolve(use, input=fixed, raw_input=None)
        fault = Fault(kind, source, error, None, None)
        kernel.faults.add(fault)
        self._tool_faults[use.name] = fault
        return use

    async def _act(self, uses: Sequence[ToolUseBlock]) -> None:
        """Run the calls (concurrently if allowed) and store all results in one message, in
        the order the model asked for them."""
        self._pending = list(uses)
        if self.parallel and len(uses) > 1:
            results = await asyncio.gather(*(self.toolkit.call(u) for u in uses))
        else:
            results = [await self.toolkit.call(u) for u in uses]
        self._pending = []
        self._step(Msg("tools", list[Block](results), "user"))

    def _step(self, msg: Msg) -> None:
        """Store an intermediate step (tool calls, tool results). It is not broadcast to hubs,
        but observers see it as a ``message_sent`` event with no hubs (the CHAT log, the
        Studio)."""
        self.memory.add(msg)
        if self.kernel.observed:
            self.kernel.emit(MessageSent(msg=msg))

    async def handle_interrupt(self, msg: Incoming) -> Msg:
        """Give every pending tool call an "interrupted" result, so the history stays valid
        (every call answered) for the next model call."""
        if self._pending:
            results: list[Block] = [
                ToolResultBlock(u.id, u.name, "interrupted before it finished", is_error=True)
                for u in self._pending
            ]
            self._pending = []
            self._step(Msg("tools", results, "user"))
        return Msg(
            self.name,
            [TextBlock("I was interrupted.")],
            "assistant",
            metadata={"interrupted": True},
        )
