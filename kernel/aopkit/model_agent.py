"""An agent that answers with a model: its system prompt and memory are the conversation."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from .agent import Agent, Incoming, check_instance
from .compaction import Compaction, compact, journal_entry, replay_compaction
from .durable import current_call, model_answer
from .errors import ConfigurationError
from .faults import FaultPolicy
from .message import Msg

if TYPE_CHECKING:
    from .kernel import Kernel
    from .memory import Memory
    from .models import ChatModel, ChatResponse, ToolSpec
    from .structured import Target

T = TypeVar("T")


class ModelAgent(Agent):
    """``ModelAgent("judge", "openai:gpt-4o-mini", sys_prompt="...")``: replies are the model's
    answers to the system prompt plus everything the agent has seen. ``model`` is a model or a
    ``provider:model`` name (without ``kernel=``, the agent belongs to its model's kernel);
    ``faults`` chooses the correctors and critics of its structured
    replies (default: the model's policy); ``compaction`` shrinks its memory before a model
    call when the history nears a token budget (see :mod:`aopkit.compaction`)."""

    def __init__(
        self,
        name: str,
        model: ChatModel | str,
        *,
        sys_prompt: str | None = None,
        faults: FaultPolicy | None = None,
        compaction: Compaction | None = None,
        memory: Memory | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        if kernel is None and not isinstance(model, str):
            kernel = getattr(model, "kernel", None)  # the agent joins its model's kernel
        super().__init__(name, memory=memory, kernel=kernel)
        if not isinstance(model, str) and not callable(model):
            raise ConfigurationError(
                f"{type(self).__name__} {name!r}: model must be a 'provider:model' name or a "
                f"ChatModel, got {type(model).__name__} {model!r:.80}"
            )
        self.model: ChatModel = self.kernel.model(model) if isinstance(model, str) else model
        if getattr(self.model, "kernel", self.kernel) is not self.kernel:
            raise ConfigurationError(
                f"{type(self).__name__} {name!r}: its model was made by another kernel; make "
                "it with the agent's kernel (kernel.model(...)) or pass the model's name"
            )
        if sys_prompt is not None and not isinstance(sys_prompt, str):
            raise ConfigurationError(
                f"{type(self).__name__} {name!r}: sys_prompt must be a str or None, "
                f"got {type(sys_prompt).__name__}"
            )
        self.sys_prompt = sys_prompt
        self.faults = check_instance(faults, FaultPolicy, "faults", optional=True)
        self.compaction = check_instance(compaction, Compaction, "compaction", optional=True)

    _system: Msg | None = None  # the system prompt's message, made again when it changes

    def messages(self) -> list[Msg]:
        """What the model is shown: the system prompt, then the memory."""
        history = self.memory.messages()
        prompt = self.sys_prompt
        if prompt:
            system = self._system
            if system is None or system.content != prompt:
                system = self._system = Msg("system", prompt, "system", id=f"{self.name}-sys")
            history.insert(0, system)
        return history

    async def compact(self, tools: list[ToolSpec] | None = None) -> None:
        """Shrink the memory by the compaction policy if the history nears its budget. In a
        durable run each compaction is journaled, and replayed instead of run again."""
        if self.compaction is None:
            return
        call = current_call()
        key = call.next_key("compaction") if call is not None else ""
        if call is not None and (done := call.run.journaled("compaction", key)) is not None:
            replay_compaction(call.run.id, self.memory, done, self.kernel)
            return
        fixed = self.messages()[:1] if self.sys_prompt else []
        history = self.memory.messages()
        compacted = await compact(
            self.kernel,
            self.name,
            history,
            self.compaction,
            model=self.model,
            fixed=fixed,
            tools=tools or [],
        )
        if compacted is not None:
            if call is not None:
                entry = journal_entry(self.kernel, history, compacted)
                await call.run.record("compaction", key, **entry)
            self.memory.clear()
            self.memory.extend(compacted)

    async def reply(self, msg: Incoming) -> Msg:
        if self.compaction is not None:
            await self.compact()
        if current_call() is None:  # not in a durable run: nothing to journal or replay
            response: Any = await self.model(self.messages())
        else:
            response = await self._journaled_answer()
        return Msg(self.name, response.content, "assistant")

    async def _journaled_answer(self) -> ChatResponse:
        async def ask() -> ChatResponse:
            response: Any = await self.model(self.messages())
            return response  # type: ignore[no-any-return]

        response, _ = await model_answer(self.kernel, self.model.name, ask)
        return response

    async def reply_structured(self, msg: Incoming, target: Target[T]) -> tuple[Msg, T]:
        from .faults import resolve

        await self.compact()
        value = await resolve(self.model, self.messages(), target, policy=self.faults)
        text = json.dumps(self.kernel.codec.dump(value), ensure_ascii=False)
        return Msg(self.name, text, "assistant", metadata={"structured": target.name}), value
