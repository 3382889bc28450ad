"""The agent base: an actor that replies to messages and observes others'."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import inspect
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, overload

from .durable import (
    AwaitingApproval,
    Call,
    DurableError,
    current_run,
    enter_call,
    read,
)
from .errors import AopkitError, ConfigurationError, DecodeError, ReplyError
from .events import MessageSent, Observed, ReplyFailed, ReplyFinished, ReplyStarted
from .kernel import Kernel
from .memory import Memory
from .message import Msg, as_input, with_metadata
from .structured import Target
from .usage import (
    SCOPE,
    BudgetExceeded,
    ScopeCell,
    Where,
    checked_budget,
    current_scope,
    new_where,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from .durable import Run
    from .hub import MsgHub
    from .usage import Account, Budget

T = TypeVar("T")
Incoming = Msg | Sequence[Msg] | None  # what reply() and observe() receive
Input = Msg | str | Sequence[Msg | str] | None  # what they may be given (a str: a user message)
HookKind = Literal["pre_reply", "post_reply", "pre_observe", "post_observe"]
HOOK_KINDS: tuple[str, ...] = ("pre_reply", "post_reply", "pre_observe", "post_observe")


def _accepting_text(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    where = "{}(msg)" if name == "__call__" else f"{{}}.{name}(msg)"  # filled on error only

    async def converting(self: Agent, msg: Input, *args: Any, **kwargs: Any) -> Any:
        given = as_input(msg, where, self.name) if name == "reply" else self._given(msg, where)
        return await method(self, given, *args, **kwargs)

    @functools.wraps(method)
    def accepting(self: Agent, msg: Input = None, *args: Any, **kwargs: Any) -> Any:
        if msg is None or type(msg) is Msg:  # the common case: no coroutine of its own
            return method(self, msg, *args, **kwargs)
        return converting(self, msg, *args, **kwargs)

    accepting.accepts_text = True  # type: ignore[attr-defined]
    accepting.given_messages = method  # type: ignore[attr-defined]  # for callers giving messages
    if hasattr(inspect, "markcoroutinefunction"):  # Python 3.12+: still an async method
        inspect.markcoroutinefunction(accepting)
    return accepting


def _announce_made(kernel: Kernel, given: Incoming, original: object) -> None:
    """Messages made from text enter the conversation here: observers (the chat view, the
    Studio) see them as sent, as they see a hub's announcement."""
    originals = original if isinstance(original, (list, tuple)) else [original]
    for made in [given] if isinstance(given, Msg) else given or ():
        if not any(made is item for item in originals):
            kernel.emit(MessageSent(msg=made))


_FIRST: Any = object()  # no step of the coroutine has run yet


@types.coroutine
def _stepped(
    context: contextvars.Context,
    coro: Coroutine[Any, Any, Any] | Generator[Any, Any, Any],
    pending: Any = _FIRST,
) -> Generator[Any, Any, Any]:
    """Run ``coro`` to its end with each step in ``context``, as a task of its own would run
    it, but in the task awaiting this, which waits on what ``coro`` waits on (a reply costs no
    task of its own). ``coro`` may be the :func:`_runner` awaiting a reply's coroutine.
    ``pending``: what ``coro`` yielded, if its first step ran already."""
    if pending is _FIRST:
        try:
            pending = context.run(coro.send, None)
        except StopIteration as done:
            return done.value
    while True:
        thrown: BaseException | None = None
        try:
            value = yield pending
        except GeneratorExit:
            context.run(coro.close)
            raise
        except BaseException as exc:  # a cancellation thrown in by the task: pass it on
            thrown = exc
        try:
            if thrown is None:
                pending = context.run(coro.send, value)
            else:
                pending = context.run(coro.throw, thrown)
        except StopIteration as done:
            return done.value


_DONE: Any = object()  # a runner's answer: the reply sent to it ran to its end


@types.coroutine
def _runner(box: list[Any]) -> Generator[Any, Any, Any]:
    """Runs the first step of each reply coroutine sent to it, in the caller's context. A
    reply that ends is answered ``_DONE``, its value in ``box[0]``: the interpreter hands the
    value over directly, where ``coroutine.send`` would raise it in a StopIteration (about
    1,400 instructions, a fifteenth of a rule-based pooled reply). A reply that suspends
    leaves the runner awaiting it: the runner is then the reply's rest, and ends with its
    value (``box[1]`` set: handed on)."""
    while True:
        coro = yield _DONE
        reply = yield from coro
        if box[1]:
            return reply
        box[0] = reply


def _started_runner(box: list[Any]) -> Generator[Any, Any, Any]:
    """A new :func:`_runner` of ``box``, ready for its first reply."""
    runner = _runner(box)
    runner.send(None)
    return runner


async def _awaiting(awaitable: Awaitable[T]) -> T:
    """An awaitable that is not a coroutine (an unusual ``reply()``), as one."""
    return await awaitable


def _enter_reply(cell: ScopeCell, call: Call | None) -> None:
    """What a reply's context holds: its usage scope, its place in a durable run."""
    SCOPE.set(cell)
    enter_call(call)


def _uncancel(task: asyncio.Task[Any]) -> int:
    """Take back one request to cancel ``task``: how many remain (Python 3.10 does not count
    them, nor need them taken back)."""
    uncancel = getattr(task, "uncancel", None)
    return 0 if uncancel is None else int(uncancel())


_COUNTED = hasattr(asyncio.Task, "cancelling")  # Python 3.11 and later count cancellations


def cancelling(task: asyncio.Task[Any] | None) -> int:
    """How many requests to cancel ``task`` are pending (Python 3.10 does not count them)."""
    if _COUNTED and task is not None:
        count: int = task.cancelling()  # type: ignore[attr-defined]  # 3.11 and later
        return count
    return 0


def still_wanted(task: asyncio.Task[Any] | None, before: int) -> None:
    """Raise the cancellation that a reply running in ``task`` swallowed (it caught
    ``CancelledError`` and answered): its caller stops all the same, as it would had the
    reply run in a task of its own that it awaited under a task group."""
    if cancelling(task) > before:
        raise asyncio.CancelledError


def check_name(name: object, what: str) -> str:
    """A non-empty ``str`` name, or a :class:`ConfigurationError` saying so."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{what}: name must be a non-empty str, got {name!r:.80}")
    return name


def check_instance(value: T, kind: type, argument: str, *, optional: bool = False) -> T:
    """``value`` if it is a ``kind`` (or None when ``optional``), else a clear error."""
    if (value is None and optional) or isinstance(value, kind):
        return value
    raise ConfigurationError(
        f"{argument} must be a {kind.__name__}"
        f"{' or None' if optional else ''}, got {type(value).__name__} {value!r:.80}"
    )


def _check_kernel(kernel: Kernel | None) -> Kernel | None:
    return check_instance(kernel, Kernel, "kernel", optional=True)


def _ids(msg: Incoming) -> tuple[str, ...]:
    if msg is None:
        return ()
    if isinstance(msg, Msg):
        return (msg.id,)
    return tuple(m.id for m in msg)


def first_steps(
    agents: Sequence[Agent],
    given: Msg | None,
    start: int,
    stop: int,
    replies: list[Msg | None],
    failed: Callable[[Agent, Exception], None],
    *,
    usual: bool = False,
) -> tuple[int, Awaitable[Msg] | None]:
    """The bulk path of pools: agents ``start`` to ``stop`` reply to ``given`` as ``await
    agent(given)`` would, each reply's first step run right here, so a reply that never
    suspends (most rule-based ones) costs no task and no call of its own. Replies go to
    ``replies[i]``, failures to ``failed``. The first reply that suspends ends the stretch:
    (its index, the rest of it), to be awaited in the task that ran this, which its first step
    bound; else (``stop``, None). Agents with hooks, hubs or their own ``__call__``, and every
    agent if ``usual`` (a durable run's), take the usual path: ``agent(given)`` is that rest.
    A reply begun while its kernel had no observer counts its seconds (should events want
    them) from the stretch's start."""
    started = time.perf_counter()
    outer, copy, enter = current_scope(), contextvars.copy_context, SCOPE.set
    coroutine = types.CoroutineType
    box: list[Any] = [None, False]  # see _runner
    runner = _started_runner(box)
    run = runner.send
    kind: type[Agent] | None = None
    method: Callable[..., Any] | None = None
    where_kernel: Kernel | None = None  # the replies of one kernel's agents share a Where
    where: Where = None  # type: ignore[assignment]  # set with where_kernel, before any use
    for i in range(start, stop):
        agent = agents[i]
        if type(agent) is not kind:
            kind = type(agent)
            method = None if usual else _plain_reply(kind)
        try:
            if method is None or agent._hooks or agent._hubs:
                return i, agent(given)
            kernel = agent._kernel or agent.kernel
            if kernel.observed or given is None:
                began = agent._reply_begun(given)
            else:  # the common case of a simulation, inlined: it runs a million times a round
                began = started
                agent.memory.add(given)
            if kernel is not where_kernel:
                where, where_kernel = new_where(kernel.usage, (), outer), kernel
            cell = [agent.name, where, None]  # a ScopeCell
            context = copy()  # as a task would run it: in a copy
            context.run(enter, cell)
            coro = method(agent, given)
            if type(coro) is not coroutine:
                coro = _awaiting(coro)
            try:
                pending = context.run(run, coro)
            except Exception as exc:
                runner = _started_runner(box)  # the exception ended the last one
                run = runner.send
                raise agent._reply_error(exc, began) from exc
            if pending is _DONE:
                reply = box[0]
                if type(reply) is Msg and cell[2] is None and not kernel.observed:
                    agent.memory.add(reply)  # no model call, no observer
                    replies[i] = reply
                else:
                    reply = agent._reply_msg(reply, began)
                    replies[i] = agent._reply_done(reply, cell, began, False)
                continue
        except Exception as exc:
            failed(agent, exc)
            continue
        box[1] = True  # the runner is this reply's rest now
        return i, agent._reply_rest(_stepped(context, runner, pending), given, cell, began)
    return stop, None


def _plain_reply(kind: type[Agent]) -> Callable[..., Any] | None:
    """``kind.reply`` as given messages are passed to it (without the wrapper that converts
    text), or None if ``kind`` has its own ``__call__``."""
    if kind.__call__ is not Agent.__call__:
        return None
    reply = kind.reply
    method: Callable[..., Any] = getattr(reply, "given_messages", reply)
    return method


class Agent:
    """Subclass and implement :meth:`reply`; call the agent (``await agent(msg)``) to use it.

    Calling stores the input and the reply in :attr:`memory`, runs the agent's hooks, emits
    events, and broadcasts the reply to the hubs the agent is in.
    """

    concurrent_observe: ClassVar[bool] = False
    """True for agents whose observe does I/O (remote actors): hubs deliver to them
    concurrently instead of one after another."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every override of a method that takes messages accepts a ``str`` (a user message)
        and rejects what is not a message with an error naming the argument."""
        super().__init_subclass__(**kwargs)
        for method in ("__call__", "reply", "observe"):
            found = cls.__dict__.get(method)
            if inspect.iscoroutinefunction(found) and not getattr(found, "accepts_text", False):
                setattr(cls, method, _accepting_text(found, method))

    def __init__(self, name: str, *, memory: Memory | None = None, kernel: Kernel | None = None):
        self.name = check_name(name, type(self).__name__)
        # an empty Memory is falsy: test for None, or a given window would be lost
        self.memory = Memory() if memory is None else check_instance(memory, Memory, "memory")
        self._kernel = _check_kernel(kernel)
        self._hooks: dict[str, list[tuple[Callable[..., Any], bool]]] | None = None
        self._hubs: tuple[MsgHub, ...] = ()  # a tuple: a million agents hold no list each
        # the tasks running this agent's replies, each with whether interrupt() cancelled it
        self._replies: dict[asyncio.Task[Any], bool] = {}
        self._sessions: dict[str, Self] | None = None
        self.session_id: str | None = None  # set on the agents :meth:`session` returns

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @property
    def kernel(self) -> Kernel:
        if self._kernel is None:
            from .kernel import default_kernel

            self._kernel = default_kernel()
        return self._kernel

    @property
    def usage(self) -> Account:
        """What this agent's replies used (all agents of this name in its kernel share it)."""
        return self.kernel.usage.agent(self.name)

    @property
    def budget(self) -> Budget | None:
        """Limits on this agent's model calls; a call that would exceed them is refused with
        :class:`~aopkit.BudgetExceeded` before it is made."""
        return self.usage.budget

    @budget.setter
    def budget(self, budget: Budget | None) -> None:
        self.usage.budget = checked_budget(budget)

    # -- what subclasses implement ----------------------------------------------------------
    async def reply(self, msg: Incoming) -> Msg:
        """Produce the reply to ``msg`` (already stored in memory by :meth:`__call__`, which is
        what programs call). Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement reply()")

    async def handle_interrupt(self, msg: Incoming) -> Msg:
        """The reply given when :meth:`interrupt` cancels a running reply."""
        return Msg(self.name, "I was interrupted.", "assistant", metadata={"interrupted": True})

    # -- hooks ------------------------------------------------------------------------------
    def add_hook(self, kind: HookKind, hook: Callable[..., Any]) -> None:
        """Add a hook, sync or async: ``pre_reply(agent, msg)`` and ``pre_observe(agent, msg)``
        may return a replacement input; ``post_reply(agent, msg, reply)`` a replacement reply;
        ``post_observe(agent, msg)`` only watches. Returning None keeps the value."""
        if kind not in HOOK_KINDS:
            raise AopkitError(
                f"unknown hook kind {kind!r}; expected one of {', '.join(HOOK_KINDS)}"
            )
        if self._hooks is None:
            self._hooks = {}
        self._hooks.setdefault(kind, []).append((hook, inspect.iscoroutinefunction(hook)))

    def remove_hook(self, kind: HookKind, hook: Callable[..., Any]) -> None:
        hooks = (self._hooks or {}).get(kind, [])
        hooks[:] = [(h, a) for h, a in hooks if h is not hook]

    async def _run_hooks(self, kind: str, value: Any, *args: Any) -> Any:
        for hook, is_async in (self._hooks or {}).get(kind, ()):
            result = hook(self, *args, value)
            if is_async:
                result = await result
            if result is not None:
                value = result
        return value

    # -- acting -----------------------------------------------------------------------------
    async def reply_structured(self, msg: Incoming, target: Target[T]) -> tuple[Msg, T]:
        """The reply and the value it carries for ``target``. By default the reply's text goes
        through fault tiers 2 and 4; agents with a model override this to use every tier."""
        from .faults import resolve_output

        reply = await self.reply(msg)
        return reply, await resolve_output(self.kernel, self.name, reply.text, target)

    @overload
    async def __call__(self, msg: Input = None, *, structured: None = None) -> Msg: ...
    @overload
    async def __call__(self, msg: Input = None, *, structured: type[T]) -> T: ...
    async def __call__(self, msg: Input = None, *, structured: type[T] | None = None) -> Any:
        """Reply to ``msg`` (a message, a ``str`` — a user message —, a list, or None): the
        reply is stored, broadcast to this agent's hubs, and returned. With
        ``structured=SomeClass`` (attrs, dataclass, pydantic model) an instance of it is
        returned instead."""
        given = msg if msg is None or type(msg) is Msg else self._given(msg, "{}(msg)")
        task = asyncio.current_task()
        before = cancelling(task)  # a request to cancel the caller the reply swallows: raised
        kernel = self.kernel
        if self._hooks:
            hooked = await self._run_hooks("pre_reply", given)
            given = as_input(hooked, "{}: what a pre_reply hook returned", self.name)
        call = None
        if (run := current_run()) is not None:
            call = self._durable_call(run, structured)
            given = await run.messages(call.key, given, kernel)
        started = self._reply_begun(given)
        if call is not None and (done := call.run.journaled("reply", call.key)) is not None:
            reply = await self._replayed(call, done)
            for hub in self._hubs:
                await hub.broadcast(reply, sender=self)
            return reply
        cell = kernel.usage.enter(self.name, self._hubs)
        context = contextvars.copy_context()  # the reply runs in a copy, as a task would
        context.run(_enter_reply, cell, call)
        coro: Coroutine[Any, Any, Any]
        if structured is None:
            coro = self.reply(given)
        else:
            coro = self.reply_structured(given, Target.of(structured, kernel))
        if type(coro) is not types.CoroutineType:
            coro = _awaiting(coro)
        stepped = _stepped(context, coro)
        reply, interrupted = await self._reply_outcome(stepped, given, started, task)
        value = None
        if structured is not None and not interrupted:
            reply, value = reply
        reply = self._reply_msg(reply, started)
        if self._hooks:
            reply = await self._run_hooks("post_reply", reply, given)
        noted: ScopeCell | None = cell
        if call is not None:  # journaled before anyone sees it
            reply = self._with_usage(reply, cell)
            reply = await call.run.message("reply", call.key, reply, kernel, check=False)
            noted = None
        reply = self._reply_done(reply, noted, started, interrupted)
        for hub in self._hubs:
            await hub.broadcast(reply, sender=self)
        still_wanted(task, before)  # after the reply is kept: nothing it made is lost
        return reply if structured is None or interrupted else value

    async def _reply_rest(
        self, rest: Awaitable[Any], given: Incoming, cell: ScopeCell, started: float
    ) -> Msg:
        """The rest of a reply that suspended in its first step."""
        task = asyncio.current_task()
        reply, interrupted = await self._reply_outcome(rest, given, started, task)
        return self._reply_done(self._reply_msg(reply, started), cell, started, interrupted)

    def _reply_begun(self, given: Incoming) -> float:
        """A reply begins: observers are told, the input is remembered."""
        started = time.perf_counter()
        kernel = self.kernel
        if kernel.observed:
            kernel.emit(
                ReplyStarted(agent=self.name, inputs=_ids(given), conversation=self.conversation)
            )
        self._remember(given)
        return started

    async def _reply_outcome(
        self,
        reply: Awaitable[Any],
        given: Incoming,
        started: float,
        task: asyncio.Task[Any] | None,
    ) -> tuple[Any, bool]:
        """(what ``reply`` returned, interrupted?), awaited in ``task``, the current one, which
        :meth:`interrupt` cancels meanwhile: an interrupt gives :meth:`handle_interrupt`'s
        reply, an error becomes a :class:`ReplyError`."""
        replies = self._replies
        # a reply of this agent inside another of its replies, in one task, shares its entry
        own = task is not None and task not in replies
        if own:
            replies[task] = False  # type: ignore[index]
        try:
            return await reply, False
        except asyncio.CancelledError:
            if not self._interrupt_taken(task):
                raise
            return await self.handle_interrupt(given), True
        except Exception as exc:
            raise self._reply_error(exc, started) from exc
        finally:
            if own and replies.pop(task):  # type: ignore[arg-type]  # the reply outlived one
                _uncancel(task)  # type: ignore[arg-type]

    def _interrupt_taken(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether the cancellation raised in ``task`` is :meth:`interrupt`'s alone; if so,
        it is taken back, and the task goes on with the interrupt reply."""
        if task is None or not self._replies.get(task):
            return False
        self._replies[task] = False
        return _uncancel(task) == 0

    @property
    def _interrupting(self) -> bool:
        """Whether :meth:`interrupt` cancelled the reply the current task runs (a cancellation
        from elsewhere is no interrupt)."""
        task = asyncio.current_task()
        return task is not None and bool(self._replies.get(task))

    def _reply_error(self, exc: Exception, started: float) -> Exception:
        """The error a failed reply raises (observers are told first): a
        :class:`ReplyError`, or work stopped on purpose as it is (a budget, an approval to wait
        for, a durable run's refusal: the caller catches it by its own name)."""
        kernel = self.kernel
        if kernel.observed:
            kernel.emit(
                ReplyFailed(
                    agent=self.name,
                    error=kernel.secrets.redact(f"{type(exc).__name__}: {exc}"),
                    seconds=time.perf_counter() - started,
                )
            )
        stopped = isinstance(exc, (BudgetExceeded, AwaitingApproval, DurableError))
        return exc if stopped else ReplyError(self.name, exc)

    def _reply_msg(self, reply: Any, started: float) -> Msg:
        """``reply`` as a message (a custom agent may reply with plain text)."""
        if isinstance(reply, Msg):
            return reply
        if isinstance(reply, str):
            return Msg(self.name, reply, "assistant")
        problem = TypeError(f"reply() must return a Msg or a str, got {reply!r:.80}")
        raise self._reply_error(problem, started)

    def _with_usage(self, reply: Msg, cell: ScopeCell) -> Msg:
        """``reply`` with its usage noted on it, if its scope made model calls."""
        scope = cell[2]
        usage = None if scope is None else scope.used()
        if usage is None:
            return reply
        return with_metadata(reply, "usage", usage)

    def _reply_done(
        self, reply: Msg, cell: ScopeCell | None, started: float, interrupted: bool
    ) -> Msg:
        """A reply ends: its usage is noted on it (unless ``cell`` is None: noted already),
        it is remembered, observers are told."""
        if cell is not None:
            reply = self._with_usage(reply, cell)
        self.memory.add(reply)
        kernel = self._kernel or self.kernel
        if kernel.observed:
            kernel.emit(MessageSent(msg=reply, hubs=tuple(h.name for h in self._hubs)))
            kernel.emit(
                ReplyFinished(
                    agent=self.name,
                    msg_id=reply.id,
                    seconds=time.perf_counter() - started,
                    interrupted=interrupted,
                )
            )
        return reply

    def _durable_call(self, run: Run, structured: object) -> Call:
        """This call's place in a durable run."""
        if structured is not None:
            raise DurableError(
                f"agent {self.name!r}: structured replies are not durable; call the agent "
                "without structured= in a durable run"
            )
        return Call(run, run.next_key(self.name))

    async def _replayed(self, call: Call, done: dict[str, Any]) -> Msg:
        """A call the journal saw finish: its steps and reply come back without running."""
        kernel = self.kernel
        call.replay(self.memory, kernel)
        journaled = read(call.run.id, done, lambda e: kernel.codec.load(e["msg"], Msg))
        return self._reply_done(journaled, None, time.perf_counter(), False)

    def interrupt(self) -> None:
        """Cancel the running reply; the call returns :meth:`handle_interrupt`'s reply instead,
        and memory keeps the input and that reply."""
        replies = self._replies
        for task, interrupted in replies.items():
            if not interrupted:  # cancelled once: a second request would outlive the reply
                replies[task] = True
                task.cancel()

    async def observe(self, msg: Input) -> None:
        """Take in messages without replying (hubs deliver others' replies here)."""
        given = msg if type(msg) is Msg else self._given(msg, "{}.observe(msg)")
        if self._hooks:
            hooked = await self._run_hooks("pre_observe", given)
            given = as_input(hooked, "{}: what a pre_observe hook returned", self.name)
        self._remember(given)
        kernel = self.kernel
        if kernel.observed:
            for msg_id in _ids(given):
                kernel.emit(Observed(agent=self.name, msg_id=msg_id))
        if self._hooks:
            await self._run_hooks("post_observe", given)

    def _given(self, msg: Input, where: str) -> Incoming:
        """``msg`` as messages (``where`` names the argument in an error); messages made from
        text are announced to observers as sent."""
        given = as_input(msg, where, self.name)
        if given is not msg and self.kernel.observed:
            _announce_made(self.kernel, given, msg)
        return given

    def _remember(self, msg: Incoming) -> None:
        if msg is None:
            return
        if isinstance(msg, Msg):
            self.memory.add(msg)
        else:
            self.memory.extend(msg)

    def to_dist(self, *, runtime: str = "ray", **options: Any) -> Agent:
        """This agent in a remote runtime (by default Ray's, which needs ``aopkit[ray]``): the
        returned proxy is used exactly as the agent. Options: the runtime's (for Ray, see
        ``aopkit_ray.AgentPool``)."""
        from .pool import runtime_of

        to_dist = getattr(runtime_of(self.kernel, runtime), "to_dist", None)
        if to_dist is None:
            raise AopkitError(f"runtime {runtime!r} cannot run one agent remotely (no to_dist)")
        remote: Agent = to_dist(self, **options)
        return remote

    # -- conversations ----------------------------------------------------------------------
    def session(self, session_id: str, *, keep: bool = True) -> Self:
        """This agent for one conversation: the same definition (model, tools, hooks), its own
        memory and state. The same id returns the same agent, so concurrent conversations with
        one definition never share memory. ``keep=False`` makes a new one each time and keeps
        no reference to it (a server that loads each conversation from a store)."""
        if self._sessions is None:
            self._sessions = {}
        found = self._sessions.get(session_id) if keep else None
        if found is None:
            found = copy.copy(self)
            found._sessions = None
            found.session_id = session_id
            found._reset()
            if keep:
                self._sessions[session_id] = found
        return found

    @property
    def conversation(self) -> str | None:
        """The conversation this agent speaks in: its innermost hub's name, else its session id
        (what traces correlate replies by)."""
        return self._hubs[-1].name if self._hubs else self.session_id

    def _reset(self) -> None:
        """Start conversation state afresh (subclasses with more state extend this)."""
        self.memory = Memory(window=self.memory.window)
        self._hubs = ()
        self._replies = {}
        if self._hooks:
            self._hooks = {kind: list(hooks) for kind, hooks in self._hooks.items()}

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The agent's state as JSON-ready data; subclasses add their own keys."""
        return {"name": self.name, "memory": self.memory.state_dict(self.kernel.codec)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; bad state raises and leaves the agent unchanged."""
        memory = state.get("memory")
        if not isinstance(memory, list):
            raise DecodeError("memory", "expected a list of messages")
        try:
            self.memory.load_state_dict(memory, self.kernel.codec)
        except DecodeError as exc:
            raise exc.under("memory") from None
