"""Turns: at most ``limit`` holders at once, first come first served."""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType
from typing import Any


class Turns:
    """What a request holds while it is in flight: ``limit`` turns, handed out in the order
    they were asked for. ``await turns.acquire()`` ... ``turns.release()``, or ``async with``.
    A model call waits for its turn before it starts and lends it to its task
    (:meth:`lend`), until the call's first request takes it (:meth:`take`).

    It does what an :class:`asyncio.Semaphore` does, but a release hands its turn straight to
    the longest waiter. The semaphore of Python 3.10 to 3.12 instead marks a waiter woken and
    leaves it queued until it runs, so each release in a burst walks past every waiter woken
    before it: with 1,024 calls answered at once and 100,000 waiting, that walk cost more
    than a request's own work. Here a release is constant time, and a waiter that was
    cancelled is passed over when its turn comes.

    Bound to the event loop it is first used in, as the session it goes with."""

    __slots__ = ("_free", "_lent", "_waiting")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._lent: set[asyncio.Task[Any]] = set()  # tasks holding a turn none of theirs took

    def __repr__(self) -> str:
        return f"<Turns free={self._free} waiting={len(self._waiting)}>"

    async def acquire(self) -> None:
        """Wait for a turn. A turn is free only while nobody waits (a release hands its turn
        to a waiter), so a newcomer never passes one who came first."""
        if self._free:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a turn as it was cancelled
                self.release()
            raise

    def lend(self) -> asyncio.Task[Any] | None:
        """Lend the turn just acquired to the current task: its next :meth:`take` has it at
        once. Give what this returns to :meth:`take_back` when the task is done with the
        turn's purpose. A model call waits for its turn before anything else, so that while
        it waits it holds nothing but its place in the queue. The task itself is the token:
        no object more per call. Outside a task there is nothing to lend to: the turn goes
        back at once."""
        task = asyncio.current_task()
        if task is None:
            self.release()
        else:
            self._lent.add(task)
        return task

    async def take(self) -> None:
        """Take the turn lent to the current task if it still has one, else wait for one."""
        lent = self._lent
        if lent:
            task = asyncio.current_task()
            if task in lent:
                lent.remove(task)
                return
        await self.acquire()

    def take_back(self, task: asyncio.Task[Any] | None) -> None:
        """Give back the turn lent to ``task`` if it was never taken (a call refused by a
        budget, or failing before it sent anything)."""
        if task in self._lent:
            self._lent.remove(task)
            self.release()

    def release(self) -> None:
        """Give the turn back: to the longest waiter still waiting, or to the free ones."""
        waiting = self._waiting
        while waiting:
            waiter = waiting.popleft()
            if not waiter.done():  # a cancelled waiter is done: pass it over
                waiter.set_result(None)
                return
        self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
