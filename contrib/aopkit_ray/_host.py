"""The Ray actor that hosts agents: one agent, or a pool of many light ones.

Messages arrive as the kernel's own serialised form (``codec.dump``). Every call on an agent
carries a sequence number given by its proxy, so the agent sees calls in the order they were
made even though an async actor may start them out of order, and a call that Ray retries after
a restart is recognised and never applied twice.
"""

from __future__ import annotations

import asyncio
import importlib
import pickle
from collections.abc import Callable
from types import ModuleType
from typing import Any

import attrs

from aopkit import Agent, AopkitError, Kernel, Msg, ReplyError, StoreError, hookimpl
from aopkit.events import Event
from aopkit.session import Store

Recipe = Callable[[Kernel], Agent] | bytes  # a factory, or a pickled agent without its kernel


class RemoteAgentError(AopkitError):
    """A remote agent could not be reached, did not answer in time, or its actor died."""


@attrs.frozen
class KernelSpec:
    """What is needed to rebuild a kernel in another process (a kernel itself is not picklable):
    its allow- and block-lists and the plugin modules registered by hand."""

    plugins: frozenset[str] | None = None
    disable: frozenset[str] = frozenset()
    modules: tuple[str, ...] = ()

    @classmethod
    def of(cls, kernel: Kernel) -> KernelSpec:
        from importlib.metadata import entry_points

        from aopkit.kernel import BUILTIN, ENTRY_POINT_GROUP

        by_entry_point = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | {BUILTIN}
        modules = tuple(
            plugin.__name__
            for name, plugin in kernel.pm.list_name_plugin()
            if isinstance(plugin, ModuleType) and name not in by_entry_point
        )
        allowed = frozenset(kernel.allowed) if kernel.allowed is not None else None
        return cls(allowed, frozenset(kernel.disabled), modules)

    def build(self) -> Kernel:
        kernel = Kernel(plugins=self.plugins, disable=self.disable)
        for module in self.modules:
            kernel.register(importlib.import_module(module), module)
        return kernel


class _Capture:
    """An event listener that keeps the actor's events, serialised, until a call drains them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    @hookimpl
    def event(self, event: Event, kernel: Kernel) -> None:
        self.events.append(kernel.codec.dump_event(event))


@attrs.define
class _Slot:
    agent: Agent
    next: int | None = None  # the sequence number of the next call to apply; None: not known yet
    last_reply: tuple[int, Any] | None = None  # (seq, dumped reply) of the latest reply
    turn: asyncio.Condition = attrs.field(factory=asyncio.Condition)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def build_agent(recipe: Recipe, kernel: Kernel) -> Agent:
    agent = pickle.loads(recipe) if isinstance(recipe, bytes) else recipe(kernel)
    if not isinstance(agent, Agent):
        raise AopkitError(f"an agent factory must return an aopkit.Agent, got {agent!r:.80}")
    agent._kernel = kernel
    return agent


class AgentHost:
    """The actor class (wrapped with ``ray.remote`` by :mod:`aopkit_ray`)."""

    def __init__(
        self,
        spec: KernelSpec,
        recipes: dict[str, Recipe],
        store: Store | None,
        session: str,
        order_timeout: float,
    ) -> None:
        self.kernel = spec.build()
        self.slots = {key: _Slot(build_agent(r, self.kernel)) for key, r in recipes.items()}
        self.store, self.session, self.order_timeout = store, session, order_timeout
        self.capture = _Capture()
        self.capturing = False
        self.loading: asyncio.Future[None] | None = None
        self.save_lock = asyncio.Lock()

    # -- plumbing ----------------------------------------------------------------------------
    async def _prepare(self, events: bool) -> None:
        """Load the last saved state once (after a restart too) and follow the driver's wish
        for events: capturing costs nothing when no one watches."""
        if self.loading is None:  # concurrent first calls all wait for the one load
            self.loading = asyncio.ensure_future(self._load_saved())
        await self.loading
        if events != self.capturing:
            self.capturing = events
            if events:
                self.kernel.register(self.capture, "aopkit_ray.capture")
            else:
                self.kernel.unregister("aopkit_ray.capture")

    async def _load_saved(self) -> None:
        if self.store is None:
            return
        states = await self.store.load(self.session)
        for key, slot in self.slots.items():
            saved = states.get(key)
            if saved is not None:
                self._restore(key, slot, saved)

    def _restore(self, key: str, slot: _Slot, saved: dict[str, Any]) -> None:
        """Put back what :meth:`_save` stored, or say clearly that it is something else."""
        agent, next_seq, last = saved.get("agent"), saved.get("next"), saved.get("last_reply")
        shapes = (
            isinstance(agent, dict),
            next_seq is None or (isinstance(next_seq, int) and not isinstance(next_seq, bool)),
            last is None or (isinstance(last, list) and len(last) == 2),
        )
        if not all(shapes):
            raise StoreError(
                f"{self.store!r}, session {self.session!r}: the state saved for agent {key!r} "
                "is not an aopkit_ray host's (an object with 'agent', 'next' and "
                "'last_reply'); it is left as it is"
            )
        slot.agent.load_state_dict(agent)
        slot.next = next_seq
        slot.last_reply = (last[0], last[1]) if last else None

    def _drain(self) -> list[dict[str, Any]]:
        events, self.capture.events = self.capture.events, []
        return events

    async def _turn(self, key: str, seq: int, resync: bool) -> _Slot | None:
        """Wait until every earlier call on ``key`` has started; None if ``seq`` was applied
        already (Ray retried it after a restart)."""
        slot = self.slots.get(key)
        if slot is None:
            raise RemoteAgentError(f"this actor hosts no agent named {key!r}")
        if slot.next is None or (resync and seq > slot.next):
            slot.next = seq
        if seq < slot.next:
            return None
        if seq > slot.next:
            async with slot.turn:
                try:
                    await asyncio.wait_for(
                        slot.turn.wait_for(lambda: slot.next is not None and slot.next >= seq),
                        self.order_timeout,
                    )
                except asyncio.TimeoutError:
                    raise RemoteAgentError(
                        f"agent {key!r}: call {seq} waited {self.order_timeout}s for call "
                        f"{slot.next}, which never arrived"
                    ) from None
        return slot

    async def _advance(self, slot: _Slot, seq: int) -> None:
        slot.next = seq + 1
        async with slot.turn:
            slot.turn.notify_all()

    async def _save(self, keys: list[str]) -> None:
        if self.store is None or not keys:
            return
        states = {}
        for key in keys:
            slot = self.slots[key]
            states[key] = {
                "agent": slot.agent.state_dict(),
                "next": slot.next,
                "last_reply": slot.last_reply,
            }
        async with self.save_lock:  # saves land in call order: an older state never wins
            await self.store.save(self.session, states)

    async def _reply(
        self, key: str, seq: int, resync: bool, msg: Any, structured: Any
    ) -> tuple[Any, Any]:
        slot = await self._turn(key, seq, resync)
        if slot is None:
            found = self.slots[key].last_reply
            if found is None or found[0] != seq:
                raise RemoteAgentError(f"agent {key!r}: reply {seq} was lost in a restart")
            return found[1], None
        try:
            incoming = self._load(msg)
        finally:
            await self._advance(slot, seq)
        # the agent may take in other calls while it replies, as a local agent in a hub does
        result = await slot.agent(incoming, structured=structured)
        reply = result if structured is None else slot.agent.memory[-1]
        dumped = self.kernel.codec.dump(reply)
        slot.last_reply = (seq, dumped)
        return dumped, None if structured is None else result

    async def _observe(self, key: str, seq: int, resync: bool, msg: Any) -> None:
        slot = await self._turn(key, seq, resync)
        if slot is not None:
            try:  # the next call waits until this message is taken in, as a hub waits locally
                await slot.agent.observe(self._load(msg))
            finally:
                await self._advance(slot, seq)

    # -- what proxies call -------------------------------------------------------------------
    async def reply(
        self, key: str, seq: int, resync: bool, msg: Any, structured: Any, events: bool
    ) -> tuple[Any, Any, list[dict[str, Any]]]:
        """(dumped reply, structured value, events), or (None, error text, events) if the agent
        failed: the proxy raises it as the local agent would, after re-emitting the events."""
        await self._prepare(events)
        try:
            dumped, value = await self._reply(key, seq, resync, msg, structured)
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc, ReplyError) and exc.__cause__ else exc
            dumped, value = None, _reason(cause)
        await self._save([key])
        return dumped, value, self._drain()

    async def observe(
        self, key: str, seq: int, resync: bool, msg: Any, events: bool
    ) -> list[dict[str, Any]]:
        await self._prepare(events)
        await self._observe(key, seq, resync, msg)
        await self._save([key])
        return self._drain()

    async def reply_all(
        self, seqs: dict[str, int], msg: Any, events: bool
    ) -> tuple[list[Any], dict[str, str], list[dict[str, Any]]]:
        """Every agent of ``seqs`` replies to ``msg`` concurrently: one actor call for a pool.
        (dumped replies in agent order, {agent: error} of those that failed, events)."""
        await self._prepare(events)
        results = await asyncio.gather(
            *(self._reply(key, seq, False, msg, None) for key, seq in seqs.items()),
            return_exceptions=True,
        )
        await self._save(list(seqs))
        dumped, failures = [], {}
        for key, result in zip(seqs, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                cause = result.__cause__ if isinstance(result, ReplyError) else None
                failures[self.slots[key].agent.name] = _reason(cause or result)
            else:
                dumped.append(result[0])
        return dumped, failures, self._drain()

    async def observe_all(
        self, seqs: dict[str, int], msg: Any, events: bool
    ) -> list[dict[str, Any]]:
        """Every agent of ``seqs`` observes ``msg``: one actor call for a pool."""
        await self._prepare(events)
        await asyncio.gather(*(self._observe(key, seq, False, msg) for key, seq in seqs.items()))
        await self._save(list(seqs))
        return self._drain()

    async def state(self, key: str, seq: int, resync: bool) -> dict[str, Any]:
        await self._prepare(self.capturing)
        slot = await self._turn(key, seq, resync)
        if slot is not None:
            await self._advance(slot, seq)
        return self.slots[key].agent.state_dict()

    async def load_state(self, key: str, seq: int, resync: bool, state: dict[str, Any]) -> None:
        await self._prepare(self.capturing)
        slot = await self._turn(key, seq, resync)
        if slot is not None:
            try:
                slot.agent.load_state_dict(state)
            finally:
                await self._advance(slot, seq)
            await self._save([key])

    def interrupt(self, key: str) -> None:
        self.slots[key].agent.interrupt()

    def names(self) -> list[str]:
        return [slot.agent.name for slot in self.slots.values()]

    def location(self) -> tuple[int, str]:
        """(process id, Ray node id) of this actor."""
        import os

        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def _load(self, data: Any) -> Msg | list[Msg] | None:
        if data is None:
            return None
        if isinstance(data, list):
            return [self.kernel.codec.load(m) for m in data]
        return self.kernel.codec.load(data)
