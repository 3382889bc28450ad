"""The turns model calls take (``aopkit.turns.Turns``): first come first served, none lost to
a cancellation, and a release that hands its turn over without walking the queue."""

import asyncio
import contextlib

import pytest

from aopkit.turns import Turns


async def holder(turns, name, order, gate):
    await turns.acquire()
    order.append(name)
    try:
        await gate.wait()
    finally:
        turns.release()


async def test_turns_are_taken_in_the_order_they_were_asked_for():
    turns, order, gate = Turns(2), [], asyncio.Event()
    tasks = [asyncio.ensure_future(holder(turns, i, order, gate)) for i in range(10)]
    await asyncio.sleep(0)
    assert order == [0, 1]
    gate.set()
    await asyncio.gather(*tasks)
    assert order == list(range(10))
    assert (turns._free, len(turns._waiting)) == (2, 0)


async def test_a_newcomer_never_passes_a_waiter():
    turns = Turns(1)
    await turns.acquire()
    waiter = asyncio.ensure_future(turns.acquire())
    await asyncio.sleep(0)
    turns.release()  # handed to the waiter, which has not run yet
    newcomer = asyncio.ensure_future(turns.acquire())
    await asyncio.sleep(0)
    assert waiter.done() and not newcomer.done()
    turns.release()
    await asyncio.wait_for(newcomer, 1)


async def two_waiting(turns):
    """(first, second): two waiters for ``turns`` (of one turn, taken here), in that order."""
    await turns.acquire()
    first = asyncio.ensure_future(turns.acquire())
    second = asyncio.ensure_future(turns.acquire())
    await asyncio.sleep(0)
    return first, second


async def test_a_cancelled_waiter_is_passed_over():
    turns = Turns(1)
    first, second = await two_waiting(turns)
    first.cancel()
    await asyncio.sleep(0)
    turns.release()
    await asyncio.wait_for(second, 1)
    turns.release()
    assert (turns._free, len(turns._waiting)) == (1, 0)


async def test_a_turn_handed_to_a_waiter_cancelled_before_it_ran_is_passed_on():
    turns = Turns(1)
    first, second = await two_waiting(turns)
    turns.release()  # handed to ``first``...
    first.cancel()  # ...which is cancelled before it runs: the turn goes on to ``second``
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)
    turns.release()
    assert (turns._free, len(turns._waiting)) == (1, 0)


async def test_a_burst_of_releases_takes_each_waiter_off_the_queue_at_once():
    """Each release hands over and dequeues one waiter: the next release does not walk past
    those woken before it (asyncio's semaphore in 3.10-3.12 did, quadratic in a burst)."""
    limit, waiting = 1_000, 5_000
    turns = Turns(limit)
    for _ in range(limit):
        await turns.acquire()
    waiters = [asyncio.ensure_future(turns.acquire()) for _ in range(waiting)]
    await asyncio.sleep(0)
    assert len(turns._waiting) == waiting
    for released in range(1, limit + 1):  # one burst: no waiter runs in between
        turns.release()
        assert len(turns._waiting) == waiting - released
    await asyncio.gather(*waiters[:limit])
    for waiter in waiters[limit:]:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    for _ in range(limit):
        turns.release()
    assert (turns._free, len(turns._waiting)) == (limit, 0)


async def test_async_with_holds_a_turn():
    turns = Turns(1)
    async with turns:
        assert turns._free == 0
    assert turns._free == 1


async def test_a_lent_turn_is_taken_once_by_its_own_task():
    turns = Turns(1)
    await turns.acquire()
    lent = turns.lend()
    assert lent is asyncio.current_task()

    async def elsewhere():  # another task waits for a turn of its own
        await turns.take()
        turns.release()

    other = asyncio.ensure_future(elsewhere())
    await asyncio.sleep(0)
    assert not other.done(), "a turn lent to one task is not another's"
    await turns.take()  # this task's: at once
    second = asyncio.ensure_future(turns.take())  # a second take in the same task waits
    await asyncio.sleep(0)
    assert not second.done()
    turns.take_back(lent)  # taken already: nothing to give back
    assert turns._free == 0
    turns.release()
    await asyncio.gather(other, second)
    turns.release()
    assert (turns._free, turns._lent) == (1, set())


async def test_a_lent_turn_never_taken_is_given_back():
    turns = Turns(1)
    await turns.acquire()
    lent = turns.lend()
    waiter = asyncio.ensure_future(turns.acquire())
    await asyncio.sleep(0)
    turns.take_back(lent)  # handed to the waiter
    await asyncio.wait_for(waiter, 1)
    turns.take_back(lent)  # twice: still once
    turns.release()
    assert (turns._free, turns._lent) == (1, set())


async def test_outside_a_task_a_turn_is_not_lent_but_given_back():
    turns, lent = Turns(1), []

    async def call():
        await turns.acquire()
        lent.append(turns.lend())

    def by_hand():  # a loop callback driving the coroutine: no task runs it
        with contextlib.suppress(StopIteration):
            call().send(None)

    asyncio.get_running_loop().call_soon(by_hand)
    await asyncio.sleep(0)
    assert lent == [None] and turns._free == 1
