"""An agent that answers with a model: its system prompt and memory are the conversation."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from .agent import Agent, Incoming, check_instance
from .errors import ConfigurationError
from .faults import FaultPolicy
from .message import Msg

if TYPE_CHECKING:
    from .kernel import Kernel
    from .memory import Memory
    from .models import ChatModel
    from .structured import Target

T = TypeVar("T")


class ModelAgent(Agent):
    """``ModelAgent("judge", "openai:gpt-4o-mini", sys_prompt="...")``: replies are the model's
    answers to the system prompt plus everything the agent has seen. ``model`` is a model or a
    ``provider:model`` name (without ``kernel=``, the agent belongs to its model's kernel);
    ``faults`` chooses the correctors and critics of its structured
    replies (default: the model's policy)."""

    def __init__(
        self,
        name: str,
        model: ChatModel | str,
        *,
        sys_prompt: str | None = None,
        faults: FaultPolicy | None = None,
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

    async def reply(self, msg: Incoming) -> Msg:
        response: Any = await self.model(self.messages())
        return Msg(self.name, response.content, "assistant")

    async def reply_structured(self, msg: Incoming, target: Target[T]) -> tuple[Msg, T]:
        from .faults import resolve

        value = await resolve(self.model, self.messages(), target, policy=self.faults)
        text = json.dumps(self.kernel.codec.dump(value), ensure_ascii=False)
        return Msg(self.name, text, "assistant", metadata={"structured": target.name}), value
