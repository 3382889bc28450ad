"""The ReAct agent: reason, act with tools, observe the results, until it can answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .agent import Incoming
from .blocks import Block, ToolResultBlock, ToolUseBlock
from .durable import DurableError, approvals, current_call, model_answer, read, tool_result
from .errors import ConfigurationError, DecodeError
from .events import MessageSent, ReplyChunk
from .message import Msg
from .model_agent import ModelAgent
from .structured import Target
from .toolkit import Tool, Toolkit

if TYPE_CHECKING:
    from .compaction import Compaction
    from .faults import Fault, FaultPolicy
    from .kernel import Kernel
    from .memory import Memory
    from .models import ChatModel, ChatResponse, ToolChoice, ToolSpec

T = TypeVar("T")
Compressor = Callable[[list[Msg]], Awaitable[list[Msg]]]

Checked = dict[str, tuple[dict[str, Any], dict[str, Any]]]  # by call id: given, checked
NOT_CHECKED: tuple[None, None] = (None, None)

CLOSING = (
    "You have used all your steps. Do not call tools now: answer with what you found so far, "
    "and say what is still open."
)


class ReActAgent(ModelAgent):
    """``ReActAgent("helper", model, tools=[search, calc])``.

    ``tools=`` (a list of functions and :class:`Tool` s) or ``toolkit=`` (a :class:`Toolkit`, or
    such a list) are the tools; a toolkit built without ``kernel=`` reports its calls to this
    agent's kernel, so one toolkit can serve agents of several kernels.

    Each step the model either calls tools — run concurrently when it asks for several — or
    answers. A step enters memory whole, the calls with one result each, whatever ends it (an
    interrupt, a cancel, a failing tool), so the history is always valid for the next model
    call. After ``max_iters`` steps it is asked for a closing summary instead. ``compress`` (or
    overriding :meth:`compress`) shortens long histories before they reach the model;
    ``stream=True`` streams the model's text to observers as ``reply_chunk`` events.
    """

    def __init__(
        self,
        name: str,
        model: ChatModel | str,
        *,
        toolkit: Toolkit | Iterable[Tool | Callable[..., Any]] | None = None,
        tools: Iterable[Tool | Callable[..., Any]] | None = None,
        sys_prompt: str | None = None,
        max_iters: int = 10,
        parallel: bool = True,
        stream: bool = False,
        compress: Compressor | None = None,
        faults: FaultPolicy | None = None,
        compaction: Compaction | None = None,
        memory: Memory | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        super().__init__(
            name,
            model,
            sys_prompt=sys_prompt,
            faults=faults,
            compaction=compaction,
            memory=memory,
            kernel=kernel,
        )
        if toolkit is not None and tools is not None:
            raise ConfigurationError(
                f"ReActAgent {name!r}: give toolkit= or tools=, not both "
                "(tools=[...] is a toolkit of those tools)"
            )
        self.toolkit = Toolkit.of(toolkit if tools is None else tools)
        self.toolkit.usable_by(self.kernel, name)
        if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
            raise ConfigurationError(
                f"ReActAgent {name!r}: max_iters must be a whole number of steps, at least 1, "
                f"got {max_iters!r}"
            )
        for flag, value in (("parallel", parallel), ("stream", stream)):
            if not isinstance(value, bool):
                raise ConfigurationError(f"ReActAgent {name!r}: {flag} must be True or False")
        if compress is not None and not callable(compress):
            raise ConfigurationError(f"ReActAgent {name!r}: compress must be an async function")
        self.max_iters = max_iters
        self.parallel = parallel
        self.stream = stream
        self._compress = compress
        self._tool_faults: dict[str, _Retrying] = {}  # bad arguments sent back to the model

    def _reset(self) -> None:
        super()._reset()
        self._tool_faults = {}

    async def compress(self, messages: list[Msg]) -> list[Msg]:
        """The hook point for long histories: return what the model should see."""
        return messages if self._compress is None else await self._compress(messages)

    async def reply(self, msg: Incoming) -> Msg:
        try:
            for _ in range(self.max_iters):
                response = await self._think(tools=True)
                if not response.tool_uses:
                    return Msg(self.name, list(response.content), "assistant")
                checked: Checked = {}
                content = list(response.content)
                for i, block in enumerate(content):  # a loop: a comprehension that awaits
                    if isinstance(block, ToolUseBlock):  # is a coroutine of its own
                        fault = self._arguments(block, checked)
                        if fault is not None:
                            content[i] = await self._fixed(block, response.finish_reason, *fault)
                await self._act(Msg(self.name, content, "assistant"), checked)
            closing = Msg("system", CLOSING, "user", metadata={"closing": True})
            response = await self._think(tools=False, extra=closing)  # for this call only
            return Msg(self.name, list(response.content), "assistant", metadata={"max_iters": True})
        finally:
            for retrying in self._tool_faults.values():  # the model tried no more
                retrying.fault.resolver = "not fixed before the reply ended"
            self._tool_faults.clear()

    async def reply_structured(self, msg: Incoming, target: Target[T]) -> tuple[Msg, T]:
        """Act with tools as usual, then state the answer in the target's shape (all tiers)."""
        from .faults import resolve

        answer = await self.reply(msg)
        self.memory.add(answer)
        await self.compact()
        value = await resolve(
            self.model, await self.compress(self.messages()), target, policy=self.faults
        )
        text = json.dumps(self.kernel.codec.dump(value), ensure_ascii=False)
        return Msg(self.name, text, "assistant", metadata={"structured": target.name}), value

    async def _think(self, tools: bool, extra: Msg | None = None) -> ChatResponse:
        specs = self.toolkit.specs() if tools else []
        await self.compact(specs)
        history = self.messages()
        if extra is not None:
            history.append(extra)
        messages = await self.compress(history)
        choice = None if specs else ("none" if tools else None)
        if current_call() is None:  # not in a durable run: nothing to journal or replay
            return await self._ask(messages, specs, choice)
        kernel = self.kernel
        answer, replayed = await model_answer(
            kernel, self.model.name, lambda: self._ask(messages, specs, choice)
        )
        if replayed and self.stream and kernel.observed and answer.text:
            kernel.emit(ReplyChunk(agent=self.name, text=answer.text))
        return answer

    async def _ask(
        self, messages: list[Msg], specs: list[ToolSpec], choice: ToolChoice | None
    ) -> ChatResponse:
        """The model's answer, streamed to observers as it comes if :attr:`stream`."""
        if not self.stream:
            response: Any = await self.model(messages, tools=specs, tool_choice=choice)
            return response  # type: ignore[no-any-return]
        kernel = self.kernel
        last = None
        chunks: Any = await self.model(messages, tools=specs, tool_choice=choice, stream=True)
        async for last in chunks:
            if kernel.observed and last.text:
                kernel.emit(ReplyChunk(agent=self.name, text=last.text))
        assert last is not None
        final: ChatResponse = last
        return final

    def _arguments(self, use: ToolUseBlock, checked: Checked) -> tuple[Tool, str, str, str] | None:
        """None if ``use`` goes to its tool as it is: its arguments fit the tool (they go into
        ``checked``, so the call does not check them again), or it names no tool (the call's
        result says so). Else the tool, the arguments as text, what is wrong with them (a
        fault's kind) and the error, for :meth:`_fixed`."""
        found = self.toolkit.active(use.name)
        if found is None:
            return None
        if use.raw_input is not None:
            return found, use.raw_input, "malformed", "the arguments are not JSON"
        try:
            arguments = found.arguments(use.input, self.kernel)
        except DecodeError as exc:
            return found, json.dumps(use.input), "invalid", str(exc)
        checked[use.id] = (use.input, arguments)
        self._retried(use.name)
        return None

    async def _fixed(
        self,
        use: ToolUseBlock,
        finish_reason: str | None,
        found: Tool,
        text: str,
        kind: str,
        error: str,
    ) -> ToolUseBlock:
        """Tool-call arguments that do not fit pass the fault tiers before the tool runs. Tier 2
        repairs them without a model call (never when the answer was cut off); what it cannot
        fix goes back to the model as an error result, and each next try of the model is a
        tier-3 round. When the policy's rounds are spent, tier 4: a human's answer becomes the
        arguments, a retry (or no one answering) gives the model its rounds again, an abort
        ends the reply."""
        kernel = self.kernel
        from .faults import DEFAULT_POLICY, CutOff, Fault, answer, correct, new_incident
        from .faults import escalate as escalate_to_human

        def check(value: Any) -> dict[str, Any]:
            found.arguments(value, kernel)
            return dict(value)

        target = Target(f"arguments of {use.name}", found.parameters, check)
        policy = self.faults or self.model.fault_policy or DEFAULT_POLICY
        source = f"{self.model.name} ({use.name} arguments)"
        retrying = self._tool_faults.get(use.name)
        tiers = retrying.tiers if retrying is not None else []
        try:
            fixed = correct(
                kernel,
                source,
                text,
                target,
                policy.correctors,
                kind=kind,
                error=error,
                tiers=tiers,
                finish_reason=finish_reason,
            )
        except CutOff as exc:
            fixed, error = None, f"{exc.reason}; {error}"
        if fixed is not None:
            self._retried(use.name)
            return attrs.evolve(use, input=fixed, raw_input=None)
        if retrying is None:
            retrying = _Retrying(Fault(kind, source, error, None, None), tiers)
            self._tool_faults[use.name] = retrying
            kernel.faults.add(retrying.fault)
        else:
            retrying.fault.calls += 1
            tiers.append({"tier": 3, "by": TIER_3, "outcome": f"still {kind}: {error}"})
        retrying.outputs.append(text)
        if retrying.fault.calls < policy.rounds and policy.critics:
            return use  # the model sees the error result; its next try is a tier-3 round
        del self._tool_faults[use.name]
        found_incident = new_incident(
            kernel, source, target, error, self.messages(), retrying.outputs, retrying.tiers
        )
        resolution = await escalate_to_human(kernel, found_incident, retrying.fault, policy)
        if resolution is None or resolution.action == "retry":
            return use  # the model sees the error result and has its rounds again
        return attrs.evolve(use, input=answer(target, found_incident, resolution), raw_input=None)

    def _retried(self, name: str) -> None:
        """The model's new try at a tool's arguments worked: its fault is resolved at tier 3."""
        retrying = self._tool_faults.pop(name, None)
        if retrying is not None:
            fault = retrying.fault
            fault.tier, fault.resolver, fault.calls = 3, TIER_3, fault.calls + 1

    async def _act(self, step: Msg, checked: Checked) -> None:
        """Run the step's tool calls (concurrently if allowed), then store the step and all its
        results at once, in the order the model asked for them, whatever happens: a call that
        finished keeps its real result even when the reply is interrupted or cancelled; only
        the others are marked as not finished. Observers see the calls as they start. Calls
        that need approval are decided first; in a durable run each result and the whole step
        are journaled before they are used, and a journaled step is replayed as it was."""
        kernel = self.kernel
        call = current_call()
        key = call.next_key("step") if call is not None else ""
        if call is not None and (done := call.run.journaled("step", key)) is not None:
            step, tools = read(
                call.run.id, done, lambda e: [kernel.codec.load(m, Msg) for m in e["msgs"]]
            )
            self.memory.add(step)
            self._step(tools)
            return
        results: dict[int, ToolResultBlock] = {}
        toolkit = self.toolkit
        uses = step.blocks(ToolUseBlock)
        asking = [u for u in uses if toolkit.needs_approval(u)]
        if asking:
            step = await self._approved(step, asking, results)
            uses = step.blocks(ToolUseBlock)
        if kernel.observed:
            kernel.emit(MessageSent(msg=step))
        started: set[int] = set()

        async def run(index: int, use: ToolUseBlock) -> None:
            started.add(index)
            given, arguments = checked.get(use.id, NOT_CHECKED)
            if given is not use.input:  # a person edited them since they were checked
                arguments = None
            if call is None:  # not in a durable run: nothing to journal or replay
                results[index] = await toolkit.call(use, kernel=kernel, arguments=arguments)
                return

            def run_tool(use: ToolUseBlock) -> Awaitable[ToolResultBlock]:
                return toolkit.call(use, kernel=kernel, arguments=arguments)

            found = toolkit.active(use.name)
            results[index] = await tool_result(kernel, use, found, run_tool)

        stopped = False  # a durable run that cannot go on leaves the step for its resume
        try:
            waiting = [(i, u) for i, u in enumerate(uses) if i not in results]
            if self.parallel and len(waiting) > 1:
                await asyncio.gather(*(run(i, u) for i, u in waiting))
            else:
                for i, use in waiting:
                    await run(i, use)
        except DurableError:
            stopped = True
            raise
        finally:
            if not stopped:
                how = "interrupted" if self._interrupting else "cancelled"
                answers: list[Block] = [
                    results.get(i) or _unfinished(use, how, i in started)
                    for i, use in enumerate(uses)
                ]
                tools = Msg("tools", answers, "user")
                if call is not None:
                    await call.run.record(
                        "step", key, msgs=[kernel.codec.dump(m) for m in (step, tools)]
                    )
                self.memory.add(step)
                self._step(tools)

    async def _approved(
        self, step: Msg, asking: list[ToolUseBlock], results: dict[int, ToolResultBlock]
    ) -> Msg:
        """Ask about the step's calls that need approval (``asking``). Rejected calls get their
        result here (the reason, as an error the model reads); edited calls run with the new
        arguments, which the step then shows."""
        decisions = await approvals(self.kernel, self.name, asking)
        content: list[Block] = []
        index = 0
        for block in step.content if isinstance(step.content, list) else []:
            if isinstance(block, ToolUseBlock):
                decision = decisions.get(block.id)
                if decision is not None and decision.action == "edit":
                    block = attrs.evolve(block, input=dict(decision.arguments or {}))
                elif decision is not None and decision.action == "reject":
                    results[index] = ToolResultBlock(
                        block.id,
                        block.name,
                        f"rejected by a person: {decision.reason or 'no reason given'}",
                        is_error=True,
                    )
                index += 1
            content.append(block)
        return attrs.evolve(step, content=content)

    def _step(self, msg: Msg) -> None:
        """Store an intermediate step (tool results). It is not broadcast to hubs, but
        observers see it as a ``message_sent`` event with no hubs (the CHAT log, the Studio)."""
        self.memory.add(msg)
        if self.kernel.observed:
            self.kernel.emit(MessageSent(msg=msg))


TIER_3 = "self (tool error result)"


@attrs.define
class _Retrying:
    """A tool's arguments the model is trying to fix: the fault and what each tier tried."""

    fault: Fault
    tiers: list[dict[str, Any]]
    outputs: list[str] = attrs.field(factory=list)


def _unfinished(use: ToolUseBlock, how: str, started: bool) -> ToolResultBlock:
    """The result of a call the reply stopped: whether it began says whether it may have
    had some of its effects."""
    text = (
        f"{how} before it finished: it may have done part of its work"
        if started
        else f"not run: the reply was {how} before this call started"
    )
    return ToolResultBlock(use.id, use.name, text, is_error=True)
