"""The user agent: a human participant whose words come from an input source."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .agent import Agent, Incoming
from .errors import ConfigurationError
from .message import Msg
from .sinks import chat_line

if TYPE_CHECKING:
    from .kernel import Kernel
    from .memory import Memory

InputSource = Callable[["UserAgent", Incoming], Awaitable[str | Msg]]


async def terminal_input(agent: UserAgent, msg: Incoming) -> str:
    """Show what the others said since the human's last turn, then read one line from the
    terminal (on the event loop, so other agents keep running and Ctrl-C ends the program at
    once)."""
    from .terminal import ask

    for line in agent.unseen():
        print(line, flush=True)
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
        if input is not None and not callable(input):
            raise ConfigurationError(
                f"UserAgent {name!r}: input must be an async function (agent, msg) -> str, "
                f"got {type(input).__name__}"
            )
        self.input: InputSource = input or terminal_input
        self._seen: str | None = None  # the id of the last message the human was shown

    def unseen(self) -> list[str]:
        """One line per message of the others this agent took in since it was last asked
        (scrubbed of the kernel's secrets); asking again returns only newer ones."""
        messages = self.memory.messages()
        start = next(
            (i + 1 for i in range(len(messages) - 1, -1, -1) if messages[i].id == self._seen),
            0,  # never asked, or the memory was cleared or trimmed since
        )
        new = messages[start:]
        if new:
            self._seen = new[-1].id
        redact = self.kernel.secrets.redact
        return [redact(chat_line(m)) for m in new if m.name != self.name]

    def _reset(self) -> None:
        super()._reset()
        self._seen = None

    async def reply(self, msg: Incoming) -> Msg:
        said = await self.input(self, msg)
        return said if isinstance(said, Msg) else Msg(self.name, said, "user")
