"""Usage accounting per model call: a scripted model called in an agent's reply scope, with no
budget and with a token budget (which estimates every call's input before it is made), beside
the floor: the same model's own work (``_complete``) with no kernel bookkeeping around it.
The budgeted call is measured on a 10- and a 1,000-message history: each message is counted
once, so the larger history costs an addition per message, not a recount."""

from __future__ import annotations

import asyncio
import time

from _util import best_of, report

import aopkit
from aopkit.models import ChatResponse, Usage
from aopkit.usage import SCOPE

N = 5_000
ANSWER = ChatResponse([aopkit.TextBlock("ok")], Usage(12, 1), "stop")


def history(size: int) -> list[aopkit.Msg]:
    return [aopkit.Msg("user", f"message number {i} " * 8, "user") for i in range(size)]


async def calls(budget: aopkit.Budget | None, size: int) -> float:
    kernel = aopkit.Kernel(environ={})
    model = kernel.model("scripted:bench")
    kernel.usage.budget = budget
    messages = history(size)
    entered = SCOPE.set(kernel.usage.enter("bench", []))
    try:
        start = time.perf_counter()
        for _ in range(N):
            model.responses = [ANSWER]
            model.calls.clear()
            await model(messages)
        return (time.perf_counter() - start) / N
    finally:
        SCOPE.reset(entered)


async def floor() -> float:
    kernel = aopkit.Kernel(environ={})
    model = kernel.model("scripted:bench")
    messages = history(10)
    start = time.perf_counter()
    for _ in range(N):
        model.responses = [ANSWER]
        model.calls.clear()
        await model._complete(messages=messages, tools=[], tool_choice=None, structured=None)
    return (time.perf_counter() - start) / N


def main() -> None:
    base = best_of(5, lambda: asyncio.run(floor())) * 1e6
    budget = aopkit.Budget(calls=10**9, tokens=10**12)
    for label, chosen, size in (
        ("model call, no budget", None, 10),
        ("model call, calls and tokens budget", budget, 10),
        ("model call, calls and tokens budget, 1,000-message history", budget, 1000),
    ):
        value = best_of(5, lambda c=chosen, s=size: asyncio.run(calls(c, s))) * 1e6
        report(label, value, "µs", floor=base, floor_name="the model's own _complete")


if __name__ == "__main__":
    main()
