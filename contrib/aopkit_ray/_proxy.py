"""The driver's side: a proxy that is an :class:`aopkit.Agent`, and pools of them."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from aopkit import Agent, AopkitError, Kernel, Memory, Msg, ReplyError, default_kernel
from aopkit.agent import Incoming
from aopkit.message import as_msg, new_id
from aopkit.pool import Replies
from aopkit.secret import SecretNotPortable
from aopkit.session import Store

from ._columns import replied, unpack
from ._host import AgentHost, Call, KernelSpec, Recipe, RemoteAgentError

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")
_Host = ray.remote(AgentHost)


def _recipe(agent: Agent | Any) -> tuple[str | None, Recipe]:
    """(name if known, recipe): an agent travels without its kernel, hubs or running
    replies; a factory ``f(kernel) -> Agent`` travels as it is."""
    if not isinstance(agent, Agent):
        if not callable(agent):
            raise AopkitError(f"expected an aopkit.Agent or a factory f(kernel), got {agent!r:.80}")
        return None, agent
    if isinstance(agent, RemoteAgent):
        raise AopkitError(f"{agent!r} is already remote")
    bare = copy.copy(agent)
    bare._kernel, bare._hubs, bare._replies, bare._sessions = None, (), {}, None
    return agent.name, bare


def _pickled(recipes: dict[str, Recipe]) -> bytes:
    """A pool's recipes pickled in one go (with cloudpickle: an agent class defined in a script
    travels once, not once per agent), or an error that names the agent that cannot travel."""
    try:
        return ray.cloudpickle.dumps(recipes)  # type: ignore[no-any-return,no-untyped-call]
    except Exception:
        for key, recipe in recipes.items():
            try:
                ray.cloudpickle.dumps(recipe)  # type: ignore[no-untyped-call]
            except SecretNotPortable as exc:  # a key must not travel in the actor's arguments
                raise SecretNotPortable(f"agent {key!r}: {exc}") from None
            except Exception as exc:
                if not isinstance(recipe, Agent):
                    raise AopkitError(
                        f"the factory of agent {key!r} cannot be pickled "
                        f"({type(exc).__name__}: {exc})"
                    ) from None
                raise AopkitError(
                    f"agent {key!r} cannot be pickled ({type(exc).__name__}: {exc}); pass a "
                    f"factory instead: to_dist(lambda kernel: {type(recipe).__name__}(..., "
                    "kernel=kernel))"
                ) from None
        raise


class AgentPool:
    """Agents sharing one Ray actor: ``pool.agents`` are their proxies, and
    :meth:`reply_all` / :meth:`observe_all` reach every agent of the pool in one actor call.

    ``agents`` are agents or factories ``f(kernel) -> Agent`` (each built in the actor with the
    actor's kernel). Options: ``resources`` (custom resources the actor needs, e.g. to pin it to
    a node started with them), ``node`` (a Ray node id), ``num_cpus`` (default 0: an agent that
    waits on a model needs no core of its own), ``max_restarts`` and ``max_task_retries`` (Ray's
    restart policy), ``max_concurrency`` (concurrent calls in the actor), ``store`` (an aopkit
    session store the actor saves each agent's state to after every call, and reloads after a
    restart: a :class:`aopkit.JSONFileStore` on a directory every node can reach),
    ``session`` (the store's session id; default the actor's name), ``timeout`` (seconds a call
    may take before it fails with :class:`RemoteAgentError`; None waits for ever), ``name`` (the
    actor's name) and ``runtime_env`` (Ray logs it: never put keys there; name them, see
    ``api_key_env``).
    """

    def __init__(
        self,
        agents: Iterable[Agent | Any],
        *,
        kernel: Kernel | None = None,
        resources: dict[str, float] | None = None,
        node: str | None = None,
        num_cpus: float = 0,
        max_restarts: int = 0,
        max_task_retries: int = 0,
        max_concurrency: int | None = None,
        store: Store | None = None,
        session: str | None = None,
        timeout: float | None = 60.0,
        name: str | None = None,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        recipes: dict[str, Recipe] = {}
        for i, agent in enumerate(agents):
            known, recipe = _recipe(agent)
            if kernel is None and isinstance(agent, Agent):
                kernel = agent._kernel
            key = known or f"agent-{i}"
            if key in recipes:
                raise AopkitError(f"two agents of one pool are named {key!r}")
            recipes[key] = recipe
        self.kernel = kernel or default_kernel()
        self.timeout = timeout
        self.name = name or f"aopkit-{new_id()}"
        options: dict[str, Any] = {
            "num_cpus": num_cpus,
            "max_restarts": max_restarts,
            "max_task_retries": max_task_retries,
            "name": self.name,
        }
        if resources:
            options["resources"] = resources
        if node is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
        if max_concurrency is not None:
            options["max_concurrency"] = max_concurrency
        if runtime_env is not None:
            options["runtime_env"] = runtime_env
        spec, wait = KernelSpec.of(self.kernel), timeout or 600.0
        shipped = _pickled(recipes)
        self.actor: Any = cast(
            Any,
            _Host.options(**options).remote(
                spec, shipped, store, session or self.name, wait, new_id()
            ),
        )
        names = list(recipes)
        if any(not isinstance(r, Agent) for r in recipes.values()):  # factories name their agents
            names = self._get_now(self.actor.names.remote(), "names")
        self.agents = [RemoteAgent(self, key, n) for key, n in zip(recipes, names, strict=True)]
        self._by_name = {a.name: a for a in self.agents}
        self._names = [a.name for a in self.agents]  # the replies' names, unless they differ
        self._seqs = [a._seq for a in self.agents]  # numbered in one C loop by a bulk call
        self._unsynced = False  # whether an agent may have a call the actor must not wait for

    def __getitem__(self, name: str) -> RemoteAgent:
        return self._by_name[name]

    async def reply_all(self, msg: Msg | str | None = None) -> Replies:
        """Every agent replies to ``msg`` (a ``str`` is a user message) concurrently in the
        actor; replies in agent order, and ``failures`` names the agents that failed (they do
        not stop the others). Replies are not broadcast to hubs: this is the bulk path of
        simulations."""
        msg = None if msg is None else as_msg(msg, "pool {!r}: reply_all(msg)", self.name)
        seqs, resync = self._bulk()
        columns, failures, events = await self._wait(
            self.actor.reply_all.remote(
                seqs, _dump(self.kernel, msg), self.kernel.observed, resync
            ),
            "reply_all",
            bulk=True,
        )
        self._emit(events)
        agents = replied(self._names, failures)
        return Replies(unpack(columns, self.kernel.codec, agents), failures)

    async def observe_all(self, msg: Msg | str) -> None:
        """Every agent observes ``msg`` (a ``str`` is a user message) in one actor call."""
        msg = as_msg(msg, "pool {!r}: observe_all(msg)", self.name)
        seqs, resync = self._bulk()
        events = await self._wait(
            self.actor.observe_all.remote(
                seqs, _dump(self.kernel, msg), self.kernel.observed, resync
            ),
            "observe_all",
            bulk=True,
        )
        self._emit(events)

    async def location(self) -> tuple[int, str]:
        """(process id, Ray node id) of the actor: where its agents run."""
        pid, node = await self._wait(self.actor.location.remote(), "location")
        return pid, node

    def kill(self) -> None:
        """End the actor for good (no restart)."""
        ray.kill(self.actor, no_restart=True)

    # -- plumbing ----------------------------------------------------------------------------
    def _bulk(self) -> tuple[list[int], list[int]]:
        """A bulk call's numbers, one per agent, and the indexes of the agents whose earlier
        call may never have reached the actor (the actor does not wait for it)."""
        resync: list[int] = []
        if self._unsynced:  # only after a call was given up on: no look at each agent otherwise
            self._unsynced = False
            resync = [i for i, a in enumerate(self.agents) if a._resync]
            for i in resync:
                self.agents[i]._resync = False
        return list(map(next, self._seqs)), resync

    async def _wait(
        self, ref: Any, what: str, agent: RemoteAgent | None = None, *, bulk: bool = False
    ) -> Any:
        """The call's result, or a :class:`RemoteAgentError` that says what failed: never a
        hang (``timeout``), never a raw Ray error. A call cancelled here is cancelled in the
        actor too (an async actor cancels its task), so a stopped round stops there."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(ref.future()), self.timeout)
        except asyncio.TimeoutError:
            ray.cancel(ref)
            raise self._failed(what, agent, f"got no answer within {self.timeout}s", bulk) from None
        except RayError as exc:
            raise self._failed(what, agent, _explain(exc), bulk) from None
        except asyncio.CancelledError:
            ray.cancel(ref)
            self._lost(agent, bulk)
            raise

    def _get_now(self, ref: Any, what: str, agent: RemoteAgent | None = None) -> Any:
        """Blocking form of :meth:`_wait`, for the kernel's synchronous state API."""
        try:
            return ray.get(ref, timeout=self.timeout)
        except GetTimeoutError:
            raise self._failed(what, agent, f"got no answer within {self.timeout}s") from None
        except RayError as exc:
            raise self._failed(what, agent, _explain(exc)) from None

    def _failed(
        self, what: str, agent: RemoteAgent | None, problem: str, bulk: bool = False
    ) -> RemoteAgentError:
        self._lost(agent, bulk)
        who = f"agent {agent.name!r}" if agent is not None else f"pool {self.name!r}"
        return RemoteAgentError(f"{who}: {what} {problem} (actor {self.name!r})")

    def _lost(self, agent: RemoteAgent | None, bulk: bool) -> None:
        """A call of ``agent`` (of every agent: ``bulk``) may never reach the actor: the next
        call of each tells the actor not to wait for it."""
        for each in self.agents if bulk else (agent,) if agent is not None else ():
            each._resync = self._unsynced = True

    def _emit(self, events: list[dict[str, Any]], reply: Msg | None = None, hubs: Any = ()) -> None:
        """Re-emit the actor's events into the driver's kernel (the Studio and traces see remote
        agents too); the reply's MessageSent names the driver-side hubs it goes to."""
        kernel = self.kernel
        if not (events and kernel.observed):
            return
        for data in events:
            if (
                reply is not None
                and data["type"] == "message_sent"
                and data["msg"]["id"] == reply.id
            ):
                data = {**data, "hubs": [h.name for h in hubs]}
            kernel.emit(kernel.codec.load_event(data))


def _explain(exc: RayError) -> str:
    if isinstance(exc, RayTaskError):
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        return f"failed: {type(cause).__name__}: {cause}"
    return (
        f"failed: the actor is unavailable ({type(exc).__name__}); give it max_restarts and "
        "max_task_retries to survive a lost process"
    )


def _dump(kernel: Kernel, msg: Incoming) -> Any:
    if msg is None:
        return None
    if isinstance(msg, Msg):
        return kernel.codec.dump(msg)
    return [kernel.codec.dump(m) for m in msg]


class RemoteAgent(Agent):
    """An agent running in a Ray actor, used exactly as the local one: ``await agent(msg)``,
    ``observe``, hub membership, ``state_dict``/``load_state_dict``, ``interrupt``.

    Its ``observe`` is a round trip, so hubs deliver to remote agents concurrently
    (``concurrent_observe``): a broadcast to many remote agents costs about one round trip, and
    a failed observe is a ``DeliveryError`` from the broadcast, as locally.
    """

    concurrent_observe = True

    def __init__(self, pool: AgentPool, key: str, name: str) -> None:
        super().__init__(name, kernel=pool.kernel)
        self.pool, self.key = pool, key
        self._seq = itertools.count()
        self._resync = False

    def __repr__(self) -> str:
        return f"<RemoteAgent {self.name!r} in {self.pool.name!r}>"

    def _next(self) -> int:
        return next(self._seq)

    def _resyncing(self) -> bool:
        resync, self._resync = self._resync, False
        return resync

    @property
    def memory(self) -> Memory:
        """A snapshot of the remote agent's memory (one round trip; it blocks)."""
        memory = Memory()
        memory.load_state_dict(self.state_dict()["memory"], self.kernel.codec)
        return memory

    @memory.setter
    def memory(self, value: Memory) -> None:
        if len(value):
            raise AopkitError(f"{self!r}: its memory lives in its actor; use load_state_dict")

    def _call(self, msg: Incoming, structured: Any = None) -> Call:
        """This agent's next call, as its actor takes it."""
        kernel = self.kernel
        return (
            self.key,
            self._next(),
            self._resyncing(),
            _dump(kernel, msg),
            kernel.observed,
            structured,
        )

    async def __call__(self, msg: Incoming = None, *, structured: type[T] | None = None) -> Any:
        if self._hooks:
            msg = await self._run_hooks("pre_reply", msg)
        kernel = self.kernel
        ref = self.pool.actor.reply.remote(self._call(msg, structured))
        dumped, value, events = await self.pool._wait(ref, "reply", self)
        if dumped is None:
            self.pool._emit(events)
            raise ReplyError(self.name, RemoteAgentError(value))
        reply: Msg = kernel.codec.load(dumped)
        self.pool._emit(events, reply, self._hubs)
        if self._hooks:
            reply = await self._run_hooks("post_reply", reply, msg)
        for hub in self._hubs:
            await hub.broadcast(reply, sender=self)
        return reply if structured is None else value

    async def observe(self, msg: Incoming) -> None:
        if self._hooks:
            msg = await self._run_hooks("pre_observe", msg)
        ref = self.pool.actor.observe.remote(self._call(msg))
        self.pool._emit(await self.pool._wait(ref, "observe", self))
        if self._hooks:
            await self._run_hooks("post_observe", msg)

    def interrupt(self) -> None:
        self.pool.actor.interrupt.remote(self.key)

    def state_dict(self) -> dict[str, Any]:
        """The remote agent's state, after every call made before (one blocking round trip)."""
        ref = self.pool.actor.state.remote(self.key, self._next(), self._resyncing())
        return self.pool._get_now(ref, "state_dict", self)  # type: ignore[no-any-return]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ref = self.pool.actor.load_state.remote(self.key, self._next(), self._resyncing(), state)
        self.pool._get_now(ref, "load_state_dict", self)

    def session(self, session_id: str, *, keep: bool = True) -> Self:
        raise AopkitError(
            f"{self!r}: take the session before going remote: to_dist(agent.session(id))"
        )


def to_dist(agent: Agent | Any, **options: Any) -> RemoteAgent:
    """Run ``agent`` (or a factory ``f(kernel) -> Agent``) in a Ray actor of its own; the proxy
    returned is used exactly as the agent. Options are :class:`AgentPool`'s."""
    return AgentPool([agent], **options).agents[0]


def pools(agents: Sequence[Agent | Any], size: int, **options: Any) -> list[AgentPool]:
    """Split many light agents into pools of at most ``size`` agents, one actor each."""
    if size < 1:
        raise AopkitError(f"a pool holds at least one agent, got size={size}")
    return [AgentPool(agents[i : i + size], **options) for i in range(0, len(agents), size)]
