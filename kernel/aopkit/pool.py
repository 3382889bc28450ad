"""Many light agents in one process: a pool with the API of ``aopkit_ray``'s pools, so a
simulation moves to Ray by changing the runtime it names, and rounds that report to observers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import attrs

from .agent import Agent, stepping_eagerly
from .durable import current_run
from .errors import AopkitError, ConfigurationError, ReplyError
from .events import RoundFinished
from .kernel import Kernel, default_kernel
from .message import Msg, as_msg, new_id
from .usage import BudgetExceeded

YIELD_EVERY = 10_000
"""Agents a pool drives between two yields to the event loop: a million-agent round never
holds the loop (timers, servers, cancellation) for more than a few milliseconds."""


class Replies(list[Msg]):
    """The replies of a pool's agents, in agent order; ``failures`` maps each agent that
    failed to reply to what went wrong (a failed agent does not stop the others)."""

    def __init__(self, replies: Iterable[Msg] = (), failures: dict[str, str] | None = None):
        super().__init__(replies)
        self.failures: dict[str, str] = failures or {}


class Pool(Protocol):
    """What every runtime's pool offers (the local :class:`AgentPool`, ``aopkit_ray``'s)."""

    name: str
    kernel: Kernel
    agents: Sequence[Agent]

    async def reply_all(self, msg: Msg | str | None = None) -> Replies: ...
    async def observe_all(self, msg: Msg | str) -> None: ...


class AgentPool:
    """Agents driven together in this process: :meth:`reply_all` and :meth:`observe_all`
    reach every agent as ``await agent(msg)`` and ``agent.observe(msg)`` would (hooks, memory,
    events), at a fraction of the cost: a reply that never waits runs without a task."""

    def __init__(
        self, agents: Iterable[Agent], *, kernel: Kernel | None = None, name: str | None = None
    ) -> None:
        self.agents: list[Agent] = list(agents)
        self._by_name: dict[str, Agent] = {}
        for agent in self.agents:
            if not isinstance(agent, Agent):
                raise ConfigurationError(f"a pool holds aopkit.Agent objects, got {agent!r:.80}")
            if agent.name in self._by_name:
                raise ConfigurationError(f"two agents of one pool are named {agent.name!r}")
            self._by_name[agent.name] = agent
        if kernel is None:
            kernel = self.agents[0].kernel if self.agents else default_kernel()
        self.kernel = kernel
        self.name = name or f"pool-{new_id()}"

    def __repr__(self) -> str:
        return f"<AgentPool {self.name!r} of {len(self.agents)} agents>"

    def __getitem__(self, name: str) -> Agent:
        return self._by_name[name]

    def __len__(self) -> int:
        return len(self.agents)

    async def reply_all(self, msg: Msg | str | None = None) -> Replies:
        """Every agent replies to ``msg`` (a ``str`` is a user message; every agent gets the
        same object). Replies are not broadcast to hubs: this is the bulk path of simulations.
        Cancelling the call cancels the replies still running. The garbage collector is paused
        while a stretch of replies runs (see ``_collector_paused``)."""
        msg = None if msg is None else as_msg(msg, "pool {!r}: reply_all(msg)", self.name)
        agents = self.agents
        replies: list[Msg | None] = [None] * len(agents)
        failures: dict[str, str] = {}
        waiting: list[tuple[int, asyncio.Future[Msg]]] = []
        progress, reported = self.kernel.progress, 0  # agents shown as done (or failed)
        durable = current_run() is not None  # a durable run's replies take the ordinary path
        try:
            for start in range(0, len(agents), YIELD_EVERY):
                if start:
                    progress.advanced(start - len(waiting) - reported)
                    reported = start - len(waiting)
                    await asyncio.sleep(0)
                with _collector_paused(), stepping_eagerly():
                    for i, agent in enumerate(agents[start : start + YIELD_EVERY], start):
                        try:
                            reply = agent(msg) if durable else agent._reply_eagerly(msg)
                        except Exception as exc:
                            failures[agent.name] = _reason(exc)
                            continue
                        if isinstance(reply, Msg):
                            replies[i] = reply
                        else:
                            waiting.append((i, asyncio.ensure_future(reply)))
            progress.advanced(len(agents) - len(waiting) - reported)
            if waiting:
                done = await asyncio.gather(*(w for _, w in waiting), return_exceptions=True)
                progress.advanced(len(waiting))
                for (i, _), result in zip(waiting, done, strict=True):
                    if isinstance(result, BaseException):
                        failures[agents[i].name] = _reason(result)
                    else:
                        replies[i] = result
        except BaseException:
            for _, pending in waiting:
                pending.cancel()
            raise
        return Replies((r for r in replies if r is not None), failures)

    async def observe_all(self, msg: Msg | str) -> None:
        """Every agent observes ``msg`` (a ``str`` is a user message)."""
        msg = as_msg(msg, "pool {!r}: observe_all(msg)", self.name)
        for i, agent in enumerate(self.agents):
            if i and not i % YIELD_EVERY:
                await asyncio.sleep(0)
            await agent.observe(msg)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused (if it runs) for one stretch of replies (at
    most ``YIELD_EVERY`` first steps, which no other task interleaves with; another thread's
    cycles wait for the stretch's end too): the replies a round keeps would otherwise set it
    off every few hundred agents, and each full collection walks every message kept.
    Reference counting still frees what is not in a cycle; the collector resumes after the
    stretch and counts the stretch's objects then."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _reason(exc: BaseException) -> str:
    """What an agent's failure is counted as; what must stop the round is raised instead: a
    budget reached (work stopped on purpose), a cancellation, an interpreter exit."""
    if isinstance(exc, BudgetExceeded) or not isinstance(exc, Exception):
        raise exc
    cause = exc.__cause__ if isinstance(exc, ReplyError) and exc.__cause__ else exc
    return f"{type(cause).__name__}: {cause}"


def pools(
    agents: Sequence[Agent | Any], size: int, *, runtime: str = "local", **options: Any
) -> list[Pool]:
    """Split many light agents into pools of at most ``size`` agents each, run by ``runtime``:
    ``"local"`` (this process) or a runtime a plugin registers (``"ray"``: one actor per pool).
    Options go to the runtime's pools."""
    if type(size) is not int or size < 1:
        raise ConfigurationError(f"a pool holds at least one agent, got size={size!r}")
    kernel = options.get("kernel")
    if kernel is None:
        first = agents[0] if agents else None
        kernel = first.kernel if isinstance(first, Agent) else default_kernel()
    found: list[Pool] = runtime_of(kernel, runtime).pools(agents, size, **options)
    return found


def runtime_of(kernel: Kernel, runtime: str) -> Any:
    """The runtime registered as ``runtime`` (hook ``register_runtimes``), or a clear error."""
    found = kernel.runtimes.get(runtime)
    if found is None:
        known = ", ".join(sorted(kernel.runtimes)) or "none"
        extra = f"; pip install 'aopkit[{runtime}]'" if runtime == "ray" else ""
        raise AopkitError(f"no runtime named {runtime!r} is registered (known: {known}){extra}")
    return found


class LocalRuntime:
    """The runtime ``"local"``: pools in this process."""

    @staticmethod
    def pools(agents: Sequence[Agent], size: int, **options: Any) -> list[AgentPool]:
        return [AgentPool(agents[i : i + size], **options) for i in range(0, len(agents), size)]


@attrs.frozen
class Round:
    """One round of :class:`Rounds`: its number, the replies, the failures and the
    aggregates the program computed from the replies."""

    number: int
    replies: list[Msg]
    failures: dict[str, str]
    aggregates: dict[str, float]
    seconds: float


class Rounds:
    """Rounds over pools (of any runtime): each :meth:`play` sends one message to every agent,
    gathers the replies, and reports the round to observers as a ``RoundFinished`` event."""

    def __init__(
        self, pools: Sequence[Pool], *, run: str | None = None, kernel: Kernel | None = None
    ) -> None:
        self.pools = list(pools)
        if kernel is None:
            kernel = self.pools[0].kernel if self.pools else default_kernel()
        self.kernel = kernel
        self.run = run or f"run-{new_id()}"
        self.agents = sum(len(p.agents) for p in self.pools)
        self.number = 0

    async def play(
        self,
        msg: Msg | str | None = None,
        *,
        aggregate: Callable[[list[Msg]], dict[str, float]] | None = None,
    ) -> Round:
        """One round: every agent replies to ``msg``; ``aggregate(replies)`` gives the numbers
        the round is reported with (an average, a count...)."""
        started = time.perf_counter()
        self.kernel.progress.round_started(self.agents)
        answers = await asyncio.gather(*(self._reply_all(p, msg) for p in self.pools))
        replies = [m for answer in answers for m in answer] if len(answers) != 1 else answers[0]
        failures = {k: v for answer in answers for k, v in answer.failures.items()}
        aggregates = aggregate(replies) if aggregate is not None else {}
        seconds = time.perf_counter() - started
        self.number += 1
        if self.kernel.observed:
            self.kernel.emit(
                RoundFinished(
                    run=self.run,
                    round=self.number,
                    agents=self.agents,
                    replied=len(replies),
                    failed=len(failures),
                    seconds=seconds,
                    aggregates=aggregates,
                )
            )
        self.kernel.progress.changed(now=True)
        return Round(self.number, replies, failures, aggregates, seconds)

    async def _reply_all(self, pool: Pool, msg: Msg | str | None) -> Replies:
        answer = await pool.reply_all(msg)
        if not isinstance(pool, AgentPool):  # a remote pool's agents are counted when it ends
            self.kernel.progress.advanced(len(answer) + len(answer.failures))
        return answer
