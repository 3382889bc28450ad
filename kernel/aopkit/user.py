"""The user agent: a human participant whose words come from an input source."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .agent import Agent, Incoming
from .message import Msg

if TYPE_CHECKING:
    from .kernel import Kernel
    from .memory import Memory

InputSource = Callable[["UserAgent", Incoming], Awaitable[str | Msg]]


async def terminal_input(agent: UserAgent, msg: Incoming) -> str:
    """Read one line from the terminal (on the event loop, so other agents keep running and
    Ctrl-C ends the program at once)."""
    from .terminal import ask

    return await ask(f"{agent.name}: ")


class UserAgent(Agent):
    """A human in the conversation. ``input`` is where the words come from: the terminal by
    default; the Studio provides one for the browser; tests pass their own."""

    def __init__(
        self,
        name: str = "user",
        *,
        input: InputSource | None = None,
        memory: Memory | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        super().__init__(name, memory=memory, kernel=kernel)
        self.input: InputSource = input or terminal_input

    async def reply(self, msg: Incoming) -> Msg:
        said = await self.input(self, msg)
        return said if isinstance(said, Msg) else Msg(self.name, said, "user")
