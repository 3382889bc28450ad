"""The Ray actor that hosts agents: one agent, or a pool of many light ones.

Messages arrive as the kernel's own serialised form (``codec.dump``). Every call on an agent
carries a sequence number given by its proxy (from 0, for each pool the driver makes), so the
agent sees calls in the order they were made even though an async actor may start them out of
order, and a call that Ray retries after a restart is recognised and never applied twice. A
pool's bulk call whose agents are all in order (the usual case) runs through the kernel's own
:class:`aopkit.AgentPool`, as a local pool does, and its replies go back as columns
(:mod:`aopkit_ray._columns`).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import pickle
from collections.abc import Callable
from types import ModuleType
from typing import Any

import attrs

from aopkit import (
    Agent,
    AgentPool,
    AopkitError,
    DecodeError,
    Kernel,
    Msg,
    Replies,
    ReplyError,
    StoreError,
    hookimpl,
)
from aopkit.events import Event
from aopkit.session import Store

from ._columns import pack, replied

Recipe = Callable[[Kernel], Agent] | Agent  # a factory, or an agent without its kernel


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


Call = tuple[str, int, bool, Any, bool, Any]
"""One call of one agent, as its proxy sends it: (the agent's key in the actor, its call
number (see :meth:`AgentHost._turn`), whether an earlier call may never come (see
:meth:`AgentHost._in_order`), the codec's form of the message(s), whether the driver wants
the call's events, the structured output asked of a reply). One argument, not six: Ray
serialises each argument on its own. A plain tuple, not a NamedTuple: Ray packs plain data
directly but pickles an instance of a class, about 0.4 ms more a call."""


@attrs.define
class _Slot:
    agent: Agent
    next: int | None  # the sequence number of the next call to apply; None: not known yet
    last_reply: tuple[int, Msg] | None = None  # (seq, reply) of the latest reply
    turn: asyncio.Condition = attrs.field(factory=asyncio.Condition)

    def skip_to(self, seq: int) -> None:
        """The calls before ``seq`` may never come (the driver gave up on one, or this actor
        cannot know them): ``seq`` is the next call to apply, unless a later one is."""
        if self.next is None or seq > self.next:
            self.next = seq


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _restarted() -> bool:
    """Whether Ray restarted this actor: its constructor then runs again, with the arguments it
    was first given."""
    import ray  # the host also runs without Ray (in tests)

    if not ray.is_initialized():  # get_runtime_context() would start a local Ray
        return False
    context = ray.get_runtime_context()
    return context.get_actor_id() is not None and bool(context.was_current_actor_reconstructed)


def build_agent(recipe: Recipe, kernel: Kernel) -> Agent:
    agent = recipe if isinstance(recipe, Agent) else recipe(kernel)
    if not isinstance(agent, Agent):
        raise AopkitError(f"an agent factory must return an aopkit.Agent, got {agent!r:.80}")
    agent._kernel = kernel
    return agent


class AgentHost:
    """The actor class (wrapped with ``ray.remote`` by :mod:`aopkit_ray`)."""

    def __init__(
        self,
        spec: KernelSpec,
        recipes: dict[str, Recipe] | bytes,
        store: Store | None,
        session: str,
        order_timeout: float,
        run: str,
    ) -> None:
        self.kernel = spec.build()
        if isinstance(recipes, bytes):  # pickled by the pool in one go
            recipes = pickle.loads(recipes)
            assert isinstance(recipes, dict)
        # A new actor knows its pool's numbering starts at 0. A restarted one knows it only from
        # the state it saved; without one, its agents start afresh at the next call that comes.
        first = None if _restarted() else 0
        self.slots = {key: _Slot(build_agent(r, self.kernel), first) for key, r in recipes.items()}
        # The names as the driver has them: as built, before any saved state (see _columns).
        self.agent_names = self.names()
        self.store, self.session, self.order_timeout = store, session, order_timeout
        self.run = run  # the pool's own id: its calls' numbers mean nothing to another pool
        self.capture = _Capture()
        self.capturing = False
        self.loading: asyncio.Future[None] | None = None
        self.save_lock = asyncio.Lock()
        self.waiting: dict[str, int] = {}  # calls waiting for their turn, by agent

    @functools.cached_property
    def pool(self) -> AgentPool:
        """The actor's agents as the kernel's pool: the bulk calls' fast path."""
        return AgentPool([slot.agent for slot in self.slots.values()], kernel=self.kernel)

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
        """Put back what :meth:`_save` stored, or say clearly that it is something else. A state
        an earlier pool saved on this session gives its agents; this pool numbers its own calls."""
        agent, next_seq, last = saved.get("agent"), saved.get("next"), saved.get("last_reply")
        run = saved.get("run")
        shaped = (
            isinstance(agent, dict)
            and (next_seq is None or type(next_seq) is int)
            and (last is None or (isinstance(last, list) and len(last) == 2))
            and (run is None or isinstance(run, str))
        )
        reply: Msg | None = None
        if shaped and last:
            try:
                reply = self.kernel.codec.load(last[1])
            except DecodeError:
                shaped = False
        if not shaped:
            raise StoreError(
                f"{self.store!r}, session {self.session!r}: the state saved for agent {key!r} "
                "is not an aopkit_ray host's (an object with 'agent', 'next', 'last_reply' "
                "and 'run'); it is left as it is"
            )
        slot.agent.load_state_dict(agent)
        if run == self.run:
            slot.next = next_seq
            slot.last_reply = (last[0], reply) if last and reply else None

    def _drain(self) -> list[dict[str, Any]]:
        events, self.capture.events = self.capture.events, []
        return events

    async def _turn(self, key: str, seq: int, resync: bool) -> _Slot | None:
        """Wait until every earlier call on ``key`` has started; None if ``seq`` was applied
        already (Ray retried it after a restart)."""
        slot = self.slots.get(key)
        if slot is None:
            raise RemoteAgentError(f"this actor hosts no agent named {key!r}")
        if slot.next is None or resync:
            slot.skip_to(seq)
        if seq < slot.next:
            return None
        if seq > slot.next:
            self.waiting[key] = self.waiting.get(key, 0) + 1
            try:
                async with slot.turn:
                    await asyncio.wait_for(
                        slot.turn.wait_for(lambda: slot.next is not None and slot.next >= seq),
                        self.order_timeout,
                    )
            except asyncio.TimeoutError:
                raise RemoteAgentError(
                    f"agent {key!r}: call {seq} waited {self.order_timeout}s for call "
                    f"{slot.next}, which never arrived"
                ) from None
            finally:
                self.waiting[key] -= 1
                if not self.waiting[key]:
                    del self.waiting[key]
        return slot

    def _in_order(self, seqs: list[int], resync: list[int]) -> bool:
        """Whether a bulk call is every agent's next call and no other call waits: then it
        may take the fast path, which starts every agent's call at once. The agents named in
        ``resync`` (by index) had a call the driver gave up on (it timed out or was cancelled
        there), which may never come: their next call is this one, as for a single call."""
        if len(seqs) != len(self.slots):
            raise RemoteAgentError(
                f"a bulk call names {len(seqs)} calls for the {len(self.slots)} agents of "
                "this actor"
            )
        if resync:
            slots = list(self.slots.values())
            for i in resync:
                slots[i].skip_to(seqs[i])
        return not self.waiting and all(
            slot.next is None or slot.next == seq
            for slot, seq in zip(self.slots.values(), seqs, strict=True)
        )

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
            last = slot.last_reply
            states[key] = {
                "agent": slot.agent.state_dict(),
                "next": slot.next,
                "last_reply": last and (last[0], self.kernel.codec.dump(last[1])),
                "run": self.run,
            }
        async with self.save_lock:  # saves land in call order: an older state never wins
            await self.store.save(self.session, states)

    async def _reply(
        self, key: str, seq: int, resync: bool, msg: Any, structured: Any
    ) -> tuple[Msg, Any]:
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
        slot.last_reply = (seq, reply)
        return reply, None if structured is None else result

    async def _observe(self, key: str, seq: int, resync: bool, msg: Any) -> None:
        slot = await self._turn(key, seq, resync)
        if slot is not None:
            try:  # the next call waits until this message is taken in, as a hub waits locally
                await slot.agent.observe(self._load(msg))
            finally:
                await self._advance(slot, seq)

    # -- what proxies call -------------------------------------------------------------------
    async def reply(self, call: Call) -> tuple[Any, Any, list[dict[str, Any]]]:
        """(dumped reply, structured value, events), or (None, error text, events) if the agent
        failed: the proxy raises it as the local agent would, after re-emitting the events."""
        key, seq, resync, msg, events, structured = call
        await self._prepare(events)
        try:
            reply, value = await self._reply(key, seq, resync, msg, structured)
            dumped = self.kernel.codec.dump(reply)
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc, ReplyError) and exc.__cause__ else exc
            dumped, value = None, _reason(cause)
        await self._save([key])
        return dumped, value, self._drain()

    async def observe(self, call: Call) -> list[dict[str, Any]]:
        key, seq, resync, msg, events, _ = call
        await self._prepare(events)
        await self._observe(key, seq, resync, msg)
        await self._save([key])
        return self._drain()

    async def reply_all(
        self, seqs: list[int], msg: Any, events: bool, resync: list[int]
    ) -> tuple[bytes, dict[str, str], list[dict[str, Any]]]:
        """Every agent replies to ``msg``: one actor call for a pool (``seqs``: each agent's
        call number, in agent order; ``resync``: the agents whose earlier call may never have
        come, see :meth:`_in_order`). (the replies as columns, in agent order; {agent: error}
        of those that failed; events)."""
        await self._prepare(events)
        if self._in_order(seqs, resync):
            for slot, seq in zip(self.slots.values(), seqs, strict=True):
                slot.next = seq + 1
            replies = await self.pool.reply_all(self._load_one(msg))
            if self.store is not None:  # what a retry after a restart answers with
                given = iter(replies)
                for slot, seq in zip(self.slots.values(), seqs, strict=True):
                    if slot.agent.name not in replies.failures:
                        slot.last_reply = (seq, next(given))
        else:
            replies = await self._reply_in_turn(seqs, msg)
        await self._save(list(self.slots))
        failures = replies.failures
        payload = pack(replies, self.kernel.codec, replied(self.agent_names, failures))
        return payload, failures, self._drain()

    async def _reply_in_turn(self, seqs: list[int], msg: Any) -> Replies:
        """The slow path of :meth:`reply_all`: each agent waits for its turn (an earlier call
        still to come) or answers a call already applied (Ray retried it after a restart)."""
        results = await asyncio.gather(
            *(
                self._reply(key, seq, False, msg, None)
                for key, seq in zip(self.slots, seqs, strict=True)
            ),
            return_exceptions=True,
        )
        replies, failures = [], {}
        for slot, result in zip(self.slots.values(), results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                cause = result.__cause__ if isinstance(result, ReplyError) else None
                failures[slot.agent.name] = _reason(cause or result)
            else:
                replies.append(result[0])
        return Replies(replies, failures)

    async def observe_all(
        self, seqs: list[int], msg: Any, events: bool, resync: list[int]
    ) -> list[dict[str, Any]]:
        """Every agent observes ``msg``: one actor call for a pool (``seqs`` and ``resync`` as
        for :meth:`reply_all`)."""
        await self._prepare(events)
        if self._in_order(seqs, resync):
            try:
                await self.pool.observe_all(self._load_one(msg))
            finally:  # calls that came meanwhile wait until the message is taken in
                for slot, seq in zip(self.slots.values(), seqs, strict=True):
                    slot.next = seq + 1
                for key in list(self.waiting):
                    turn = self.slots[key].turn
                    async with turn:
                        turn.notify_all()
        else:
            await asyncio.gather(
                *(
                    self._observe(key, seq, False, msg)
                    for key, seq in zip(self.slots, seqs, strict=True)
                )
            )
        await self._save(list(self.slots))
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

    def _load_one(self, data: Any) -> Msg | None:
        msg = self._load(data)
        if isinstance(msg, list):
            raise RemoteAgentError("a pool's bulk call carries one message, not a list")
        return msg

    def _load(self, data: Any) -> Msg | list[Msg] | None:
        if data is None:
            return None
        if isinstance(data, list):
            return [self.kernel.codec.load(m) for m in data]
        return self.kernel.codec.load(data)
