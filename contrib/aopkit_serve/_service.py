"""The service every protocol adapter speaks for: the served agents, one conversation at a time.

A conversation's agents are made afresh for each request, loaded from the session store, and
saved back when the request ends, so the store is the only memory: a restarted server (or
another process on the same store) continues the conversation, and conversations share nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import aopkit
from aopkit.events import Event
from aopkit.session import JournalStore, State, Store, check_session_id, claim_of

T = TypeVar("T")
Served = aopkit.Agent | Sequence[aopkit.Agent]
Target = Served | Callable[[], Served]

DEFAULT_DESCRIPTION = "An aopkit agent."


class UnknownAgent(aopkit.AopkitError, LookupError):
    """No served agent has this name; ``name`` is what was asked for."""

    def __init__(self, name: str, served: Iterable[str]) -> None:
        self.name = name
        super().__init__(f"no agent named {name!r} is served; served: {', '.join(served)}")


class InvalidConversation(aopkit.AopkitError, ValueError):
    """A conversation id that cannot name a session in the store."""


class ConversationBusy(aopkit.AopkitError):
    """Another process on the same store kept a turn of this conversation going for longer
    than this one would wait (``Service.claim_wait``); nothing of this request was run."""


# The event queues of the ``conv.events()`` blocks the current task runs in (innermost last).
_QUEUES: ContextVar[tuple[asyncio.Queue[Event], ...]] = ContextVar(
    "aopkit_serve_events", default=()
)


class _Router:
    """The kernel listener that hands each event to the queues of the task that emitted it.
    Registered while at least one ``conv.events()`` block is open on its kernel (``users``), so
    a server whose streams have ended builds no event for nobody."""

    NAME = "aopkit_serve.events"

    def __init__(self) -> None:
        self.users = 0

    @aopkit.hookimpl
    def event(self, event: Event) -> None:
        for queue in _QUEUES.get():
            queue.put_nowait(event)


class Service:
    """The served ``target`` (an agent, a list of agents, or a callable returning either,
    called once per conversation and once at start to learn the names) with its kernel,
    session store and toolkits; with ``durable`` (a journal store), protocols that can make
    each conversation a durable run (A2A) do."""

    claim_wait = 60.0
    """Seconds a turn waits for a turn of the same conversation in another process."""

    def __init__(
        self,
        target: Target,
        *,
        kernel: aopkit.Kernel | None = None,
        store: Store | None = None,
        toolkits: Iterable[aopkit.Toolkit] = (),
        durable: JournalStore | None = None,
        public_media_only: bool = True,
    ) -> None:
        self._target = target
        self.durable = durable
        self.public_media_only = public_media_only
        probe = _served(target)
        self.kernel = kernel if kernel is not None else probe[0].kernel
        self._limit_media(self.kernel, *(agent.kernel for agent in probe))
        self.store: Store = store if store is not None else _MemoryStore()
        self.toolkits = tuple(toolkits)
        self._described = {agent.name: _description(agent) for agent in probe}
        self._locks: dict[str, _Lock] = {}

    def _limit_media(self, *kernels: aopkit.Kernel) -> None:
        """Clients' media URLs are fetched from public addresses only (unless the app allows
        private ones): a client must not make the server fetch from its own network."""
        if self.public_media_only:
            for kernel in kernels:
                kernel.pool.public_media_only = True

    def names(self) -> list[str]:
        """The served agents' names, in the order given."""
        return list(self._described)

    def describe(self, name: str) -> str:
        """What agent ``name`` is for: its ``description``, else its system prompt's first
        line, else a default."""
        if name not in self._described:
            raise UnknownAgent(name, self._described)
        return self._described[name]

    @asynccontextmanager
    async def conversation(self, conversation_id: str | None) -> AsyncIterator[Conversation]:
        """One request's turn in a conversation (a fresh one when ``conversation_id`` is None).
        Turns of one conversation run one at a time, also across processes on one store that
        can claim (see :class:`aopkit.session.ClaimingStore`); the agents' state is saved when
        the block ends, also when it fails or is cancelled."""
        conversation_id = _checked_id(conversation_id)
        async with self._turn(conversation_id), self._claimed(conversation_id):
            states = await self.store.load(conversation_id)
            conv = Conversation(conversation_id, self._fresh_agents(conversation_id), states)
            try:
                yield conv
            finally:
                # Shielded: a cancelled request still leaves what was answered in the store,
                # and the next turn (waiting on the lock) starts from it.
                await _finish(self._save(conv))

    async def _save(self, conv: Conversation) -> None:
        if conv.used:
            await aopkit.save_session(self.store, conv.id, *conv.used)

    @asynccontextmanager
    async def _turn(self, conversation_id: str) -> AsyncIterator[None]:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = self._locks[conversation_id] = _Lock()
        lock.users += 1
        try:
            async with lock:
                yield
        finally:
            lock.users -= 1
            if not lock.users:  # nobody waits: forget it, or the server would keep every id
                del self._locks[conversation_id]

    @asynccontextmanager
    async def _claimed(self, conversation_id: str) -> AsyncIterator[None]:
        """The store's claim on the conversation, from load to save: a turn in another process
        waits for it (up to ``claim_wait``) instead of overwriting its save."""
        claiming = claim_of(self.store)
        async with AsyncExitStack() as held:
            if claiming is not None:
                try:
                    claim = claiming.claim(f"session:{conversation_id}", wait=self.claim_wait)
                    await held.enter_async_context(claim)
                except aopkit.Claimed:
                    raise ConversationBusy(
                        f"conversation {conversation_id!r} is busy: another server process on "
                        f"the same store has been answering it for over {self.claim_wait:g} s; "
                        "try again later"
                    ) from None
            yield

    def _fresh_agents(self, conversation_id: str) -> dict[str, aopkit.Agent]:
        if _is_factory(self._target):
            agents = _served(self._target)
            for agent in agents:
                agent.session_id = conversation_id
        else:
            agents = [a.session(conversation_id, keep=False) for a in _served(self._target)]
        self._limit_media(*(agent.kernel for agent in agents))
        named = {agent.name: agent for agent in agents}
        if list(named) != self.names():
            raise aopkit.AopkitError(
                f"the served callable returned agents {list(named)}, "
                f"but at start it returned {self.names()}: it must return the same names"
            )
        return named


class Conversation:
    """One turn of a conversation: its id and its own agents."""

    def __init__(
        self, conversation_id: str, agents: dict[str, aopkit.Agent], states: dict[str, State]
    ) -> None:
        self.id = conversation_id
        self._agents = agents
        self._states = states
        self.used: list[aopkit.Agent] = []  # loaded, hence saved at the end

    def fresh(self, name: str) -> aopkit.Agent:
        """This conversation's agent ``name`` with no state loaded (and none saved): for a
        turn whose memory a durable run's journal rebuilds."""
        agent = self._agents.get(name)
        if agent is None:
            raise UnknownAgent(name, self._agents)
        return agent

    @property
    def agents(self) -> list[aopkit.Agent]:
        """Every served agent of this conversation (each loaded on the way)."""
        return [self.agent(name) for name in self._agents]

    def agent(self, name: str) -> aopkit.Agent:
        """This conversation's agent ``name``, its state loaded from the store on first use."""
        agent = self._agents.get(name)
        if agent is None:
            raise UnknownAgent(name, self._agents)
        if agent not in self.used:
            state = self._states.get(name)
            if state is not None:
                try:
                    agent.load_state_dict(state)
                except aopkit.DecodeError as exc:
                    raise aopkit.StoreError(
                        f"conversation {self.id!r}: the stored state of agent {name!r} does "
                        f"not load: {exc.under(name)}"
                    ) from None
            self.used.append(agent)
        return agent

    @asynccontextmanager
    async def events(self) -> AsyncIterator[Events]:
        """The kernel events emitted by work done inside the block, in this task and the tasks
        it creates: a streaming adapter sees its own run only."""
        kernels = {id(a.kernel): a.kernel for a in self._agents.values()}.values()
        routers = [_router(kernel) for kernel in kernels]
        for router in routers:
            router.users += 1
        stream = Events()
        token = _QUEUES.set((*_QUEUES.get(), stream.queue))
        try:
            yield stream
        finally:
            _QUEUES.reset(token)
            for kernel, router in zip(kernels, routers, strict=True):
                router.users -= 1
                if not router.users:
                    kernel.unregister(_Router.NAME)


def _router(kernel: aopkit.Kernel) -> _Router:
    router = kernel.pm.get_plugin(_Router.NAME)
    if router is None:
        router = _Router()
        kernel.register(router, _Router.NAME)
    assert isinstance(router, _Router)
    return router


class Events:
    """The events of one ``conv.events()`` block, as an async iterator.

    ``async for event in events.during(work)`` runs ``work`` and yields its events until it
    ends; ``await`` the task it made (``events.task``) for the result or the error.
    """

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.task: asyncio.Future[Any] | None = None

    def __aiter__(self) -> Events:
        return self

    async def __anext__(self) -> Event:
        return await self.queue.get()

    async def during(self, work: Awaitable[Any]) -> AsyncGenerator[Event, None]:
        """Run ``work`` and yield the events it emits, up to and including its last one;
        cancelling the iteration cancels the work."""
        task = self.task = asyncio.ensure_future(work)
        try:
            while True:
                while not self.queue.empty():
                    yield self.queue.get_nowait()
                if task.done():
                    return
                getting = asyncio.ensure_future(self.queue.get())
                try:
                    await asyncio.wait({getting, task}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    getting.cancel()  # if still waiting, it took nothing: the item stays queued
                if getting.done() and not getting.cancelled():
                    yield getting.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


class _Lock(asyncio.Lock):
    users = 0  # requests holding or waiting for it


class _MemoryStore:
    """States kept in this process only (a server without a store forgets on restart)."""

    def __init__(self) -> None:
        self._sessions: dict[str, dict[str, State]] = {}

    async def save(self, session_id: str, states: dict[str, State]) -> None:
        self._sessions.setdefault(session_id, {}).update(states)

    async def load(self, session_id: str) -> dict[str, State]:
        return dict(self._sessions.get(session_id, {}))


async def _finish(work: Awaitable[T]) -> T:
    """Await ``work`` to its end however often the caller is cancelled meanwhile, then
    re-raise the cancellation: a turn's lock is not released before its state is saved."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


def _is_factory(target: object) -> bool:
    return callable(target) and not isinstance(target, aopkit.Agent)


def _served(target: Target) -> list[aopkit.Agent]:
    """The agents ``target`` serves (a callable target is called for them)."""
    return _agents(target() if callable(target) and _is_factory(target) else target)


def _agents(served: object) -> list[aopkit.Agent]:
    agents = [served] if isinstance(served, aopkit.Agent) else served
    if (
        isinstance(agents, (str, bytes))
        or not isinstance(agents, Sequence)
        or not agents
        or not all(isinstance(agent, aopkit.Agent) for agent in agents)
    ):
        raise aopkit.ConfigurationError(
            "serve: the target must be an aopkit.Agent, a non-empty list of agents, or a "
            f"callable returning either; got {type(served).__name__} {served!r:.80}"
        )
    names = [agent.name for agent in agents]
    if len(set(names)) != len(names):
        raise aopkit.ConfigurationError(f"serve: two served agents share a name: {names}")
    return list(agents)


def _description(agent: aopkit.Agent) -> str:
    description = getattr(agent, "description", None)
    if isinstance(description, str) and description.strip():
        return description.strip()
    prompt = getattr(agent, "sys_prompt", None)
    if isinstance(prompt, str) and prompt.strip():
        return prompt.strip().splitlines()[0]
    return DEFAULT_DESCRIPTION


def _checked_id(conversation_id: str | None) -> str:
    if conversation_id is None:
        return uuid.uuid4().hex
    try:
        checked: str = check_session_id(conversation_id)
        return checked
    except aopkit.StoreError as exc:
        raise InvalidConversation(str(exc).replace("session id", "conversation id")) from None
