"""The message hub: a group conversation where each reply reaches every other participant."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING

from .durable import current_run
from .durable import durable as durable_run
from .errors import AopkitError, ConfigurationError
from .events import HubJoined, HubLeft, MessageSent
from .message import Msg, as_input, as_msg, new_id
from .session import check_run_id
from .usage import Account, checked_budget

if TYPE_CHECKING:
    from .agent import Agent
    from .kernel import Kernel
    from .session import JournalStore
    from .usage import Budget


class DeliveryError(AopkitError):
    """Some participants failed to observe a message; the others received it."""

    def __init__(self, hub: str, msg: Msg, failures: list[tuple[str, BaseException]]) -> None:
        self.hub, self.msg, self.failures = hub, msg, failures
        who = ", ".join(f"{name!r} ({type(exc).__name__}: {exc})" for name, exc in failures)
        super().__init__(f"hub {hub!r}: message {msg.id} was not observed by {who}")


class MsgHub:
    """``async with MsgHub([alice, bob]) as hub:`` — while open, every reply of a participant is
    delivered to all the others, and every participant observes messages in the order they were
    sent, even when several agents reply concurrently.

    ``announcement`` (a message, a ``str`` — a user message —, or a list of them) is broadcast
    to everyone on entry. ``budget`` limits the model calls of one run (one ``async with``) of
    the hub: of every participant's replies while it is open; :attr:`usage` is what the run used
    so far. ``durable=store, run="id"`` makes each run durable (see :mod:`aopkit.durable`).
    """

    def __init__(
        self,
        participants: Iterable[Agent] = (),
        announcement: Msg | str | Sequence[Msg | str] | None = None,
        *,
        name: str | None = None,
        kernel: Kernel | None = None,
        budget: Budget | None = None,
        durable: JournalStore | None = None,
        run: str | None = None,
    ) -> None:
        from .agent import _check_kernel, check_name

        self.participants: list[Agent] = _agents(participants, "MsgHub(participants)")
        self.announcement = as_input(announcement, "MsgHub(announcement)")
        self.name = f"hub-{new_id()}" if name is None else check_name(name, "MsgHub")
        self._kernel = _check_kernel(kernel)
        self._open = False
        self._lock = asyncio.Lock()
        self._deliverer: asyncio.Task[object] | None = None
        self._nested: deque[tuple[Msg, Agent | None]] = deque()
        self.usage = Account(f"hub {self.name!r}", checked_budget(budget))
        if (durable is None) != (run is None):
            raise ConfigurationError("MsgHub: give durable= (a store) and run= (an id) together")
        self._durable = None if durable is None or run is None else (durable, check_run_id(run))
        self._run: AbstractAsyncContextManager[object] | None = None

    @property
    def kernel(self) -> Kernel:
        if self._kernel is None:
            self._kernel = self.participants[0].kernel if self.participants else _default()
        return self._kernel

    async def __aenter__(self) -> MsgHub:
        self.usage = Account(self.usage.label, self.usage.budget)  # each run counts afresh
        if self._durable is not None:
            self._run = durable_run(*self._durable)
            await self._run.__aenter__()
        self._open = True
        self._join(self.participants)
        try:
            if self.announcement is not None:
                for msg in (
                    [self.announcement] if isinstance(self.announcement, Msg) else self.announcement
                ):
                    await self.broadcast(msg)
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave(self.participants)
        self._open = False
        if self._run is not None:
            run, self._run = self._run, None
            await run.__aexit__(exc_type, exc, tb)

    def add(self, *agents: Agent) -> None:
        """Add participants; they observe messages sent from now on."""
        new = [a for a in _agents(agents, "MsgHub.add()") if a not in self.participants]
        self.participants.extend(new)
        if self._open:
            self._join(new)

    def remove(self, *agents: Agent) -> None:
        """Remove participants; they observe nothing more from this hub."""
        gone = [a for a in agents if a in self.participants]
        self.participants = [a for a in self.participants if a not in gone]
        if self._open:
            self._leave(gone)

    def _join(self, agents: Iterable[Agent]) -> None:
        kernel = self.kernel
        for agent in agents:
            agent._hubs = (*agent._hubs, self)
            if kernel.observed:
                kernel.emit(HubJoined(hub=self.name, agent=agent.name))

    def _leave(self, agents: Iterable[Agent]) -> None:
        kernel = self.kernel
        for agent in agents:
            if self in agent._hubs:
                hubs = list(agent._hubs)
                hubs.remove(self)
                agent._hubs = tuple(hubs)
            if kernel.observed:
                kernel.emit(HubLeft(hub=self.name, agent=agent.name))

    async def broadcast(self, msg: Msg | str, *, sender: Agent | None = None) -> None:
        """Deliver ``msg`` (a ``str`` is a user message) to every participant but ``sender``.
        Messages are delivered one at a time, whole, in the order they were broadcast; a message
        broadcast by an observer while it observes is delivered right after the current one."""
        msg = as_msg(msg, "hub {!r}: broadcast(msg)", self.name)
        if sender is None:
            kernel = self.kernel
            if (run := current_run()) is not None:
                key = run.next_key("broadcast")
                msg = await run.message("broadcast", key, msg, kernel, check=True)
            if kernel.observed:
                kernel.emit(MessageSent(msg=msg, hubs=(self.name,)))
        if self._deliverer is not None and self._deliverer is asyncio.current_task():
            self._nested.append((msg, sender))
            return
        failures: list[DeliveryError] = []
        async with self._lock:
            self._deliverer = asyncio.current_task()
            try:
                item: tuple[Msg, Agent | None] | None = (msg, sender)
                while item is not None:
                    try:
                        await self._deliver(*item)
                    except DeliveryError as exc:
                        failures.append(exc)
                    item = self._nested.popleft() if self._nested else None
            finally:
                self._deliverer = None
        if failures:
            raise failures[0]

    async def _deliver(self, msg: Msg, sender: Agent | None) -> None:
        """Deliver to every participant but the sender. Local observers are called in turn
        (no task per delivery); observers whose observe does I/O (``concurrent_observe``, e.g.
        remote actors) are called concurrently. Either way the message reaches everyone before
        the next message is delivered."""
        failures: list[tuple[str, BaseException]] = []
        concurrent: list[Agent] = []
        for agent in tuple(self.participants):
            if agent is sender:
                continue
            if agent.concurrent_observe:
                concurrent.append(agent)
                continue
            try:
                await agent.observe(msg)
            except Exception as exc:  # the others still receive the message
                failures.append((agent.name, exc))
        if concurrent:
            results = await asyncio.gather(
                *(agent.observe(msg) for agent in concurrent), return_exceptions=True
            )
            failures.extend(
                (agent.name, result)
                for agent, result in zip(concurrent, results, strict=True)
                if isinstance(result, Exception)
            )
        if failures:
            raise DeliveryError(self.name, msg, failures)


def _agents(agents: Iterable[Agent], where: str) -> list[Agent]:
    """The agents as a list; anything else is an error naming ``where``."""
    from .agent import Agent

    if isinstance(agents, (str, bytes)) or not isinstance(agents, Iterable):
        raise ConfigurationError(f"{where}: expected agents, got {type(agents).__name__}")
    found = list(agents)
    for i, agent in enumerate(found):
        if not isinstance(agent, Agent):
            raise ConfigurationError(
                f"{where}[{i}]: expected an aopkit.Agent, got {type(agent).__name__} {agent!r:.80}"
            )
    return found


def _default() -> Kernel:
    from .kernel import default_kernel

    return default_kernel()
