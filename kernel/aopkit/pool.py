"""Many light agents in one process: a pool with the API of ``aopkit_ray``'s pools, so a
simulation moves to Ray by changing the runtime it names, and rounds that report to observers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import attrs

from .agent import Agent, cancelling, first_steps, still_wanted
from .durable import current_run
from .errors import AopkitError, ConfigurationError, ReplyError
from .events import RoundFinished
from .kernel import Kernel, default_kernel
from .message import Msg, as_msg, new_id
from .progress import Progress
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
        while replies that do not wait run (see :func:`collector_paused`)."""
        msg = None if msg is None else as_msg(msg, "pool {!r}: reply_all(msg)", self.name)
        drive = _Drive(self.agents, msg, self.kernel.progress)
        this = asyncio.current_task()
        before = cancelling(this)
        try:
            await drive.from_agent(0)
            still_wanted(this, before)
            for task in drive.tasks:  # the list grows while earlier tasks are awaited
                await task
                still_wanted(this, before)
        except BaseException:
            for task in drive.tasks:
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()  # seen: a failure of a task not awaited is not logged
            raise
        replies = drive.replies
        if drive.failures:  # an agent that failed left None
            replies = [r for r in replies if r is not None]
        return Replies(replies, drive.failures)  # type: ignore[arg-type]  # no None is left

    async def observe_all(self, msg: Msg | str) -> None:
        """Every agent observes ``msg`` (a ``str`` is a user message)."""
        msg = as_msg(msg, "pool {!r}: observe_all(msg)", self.name)
        for i, agent in enumerate(self.agents):
            if i and not i % YIELD_EVERY:
                await asyncio.sleep(0)
            await agent.observe(msg)


class _Drive:
    """One :meth:`AgentPool.reply_all`. Each agent's first step runs in turn, in the task
    driving the agents: a reply that never waits (most rule-based ones) costs no task. A reply
    that waits goes on in the task that ran its first step, so whatever that step bound to
    "the current task" (``asyncio.timeout``, a task group, an HTTP timer, ``interrupt()``) is
    the reply's own; the agents after it are driven on by a new task (``tasks``)."""

    def __init__(self, agents: list[Agent], msg: Msg | None, progress: Progress) -> None:
        self.agents, self.msg, self.progress = agents, msg, progress
        self.replies: list[Msg | None] = [None] * len(agents)
        self.failures: dict[str, str] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.durable = current_run() is not None  # each reply then takes the usual path

    async def from_agent(self, start: int) -> None:
        """Drive the agents from ``start`` on, ``YIELD_EVERY`` at a time between two yields to
        the event loop, until one's reply waits: this task goes on with that reply. The
        collector stays paused while this task drives (see :func:`collector_paused`)."""
        end, waiting = len(self.agents), None
        with collector_paused():
            while start < end:
                stop = min(end, (start // YIELD_EVERY + 1) * YIELD_EVERY)
                start, waiting = self._first_steps(start, stop)
                if waiting is not None:
                    break
                if start < end:
                    await asyncio.sleep(0)
        if waiting is not None:
            self.tasks.append(asyncio.ensure_future(self.from_agent(start + 1)))
            await self._finish(start, waiting)

    def _first_steps(self, start: int, stop: int) -> tuple[int, Awaitable[Msg] | None]:
        """Run the first steps of agents ``start`` to ``stop``: (where it stopped, the rest of
        the reply that waits there, if one does)."""
        at, rest = first_steps(
            self.agents, self.msg, start, stop, self.replies, self._failed, usual=self.durable
        )
        self.progress.advanced(at - start)
        return at, rest

    def _failed(self, agent: Agent, exc: Exception) -> None:
        self.failures[agent.name] = _reason(exc)

    async def _finish(self, i: int, rest: Awaitable[Msg]) -> None:
        try:
            self.replies[i] = await rest
        except Exception as exc:
            self.failures[self.agents[i].name] = _reason(exc)
        self.progress.advanced(1)


_pauses = 0  # bulk work holding the collector paused now, in every thread
_pauses_lock = threading.Lock()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a round's replies are made in bulk (a
    local pool driving replies that do not wait, its yields to the event loop included: other
    tasks then run with it paused; a remote pool rebuilding the replies an actor sent), and
    resumed when the last such work in any thread stops. The replies would otherwise set it
    off as they are made, and the replies a round keeps, walked young, then again
    middle-aged, would set off a full collection every round: about a fifth of a
    million-agent round. Reference counting still frees what is not in a cycle; cycles wait
    for the work's end. A program that paused the collector itself keeps it paused."""
    global _pauses
    with _pauses_lock:
        took = _pauses > 0 or gc.isenabled()
        if took:
            _pauses += 1
            gc.disable()
    try:
        yield
    finally:
        if took:
            with _pauses_lock:
                _pauses -= 1
                if not _pauses:
                    gc.enable()


def _reason(exc: BaseException) -> str:
    """What an agent's failure is counted as; what must stop the round is raised instead: a
    budget reached (work stopped on purpose), a cancellation, an interpreter exit."""
    if isinstance(exc, BudgetExceeded) or not isinstance(exc, Exception):
        raise exc
    cause = exc.__cause__ if isinstance(exc, ReplyError) and exc.__cause__ else exc
    text = str(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


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
        answers = await self._answers(msg)
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

    async def _answers(self, msg: Msg | str | None) -> list[Replies]:
        """Every pool's replies. A round stopped in one pool (a budget reached, a cancellation)
        stops the others' too before it is raised: no reply of the round runs on after it."""
        running = [asyncio.ensure_future(self._reply_all(p, msg)) for p in self.pools]
        try:
            return await asyncio.gather(*running)
        except BaseException:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise

    async def _reply_all(self, pool: Pool, msg: Msg | str | None) -> Replies:
        answer = await pool.reply_all(msg)
        if not isinstance(pool, AgentPool):  # a remote pool's agents are counted when it ends
            self.kernel.progress.advanced(len(answer) + len(answer.failures))
        return answer
