"""ReAct agents: reply overhead without model time, and the cost of making many agents.

- A scripted model answers at once (one tool call, then the answer), so what is measured is
  the framework: formatting the history, the tool call, memory, events, hooks. The floor is the
  same work done by hand: call the tool function and build the three messages.
- 10,000 ReActAgents sharing one model and one toolkit, each with its own memory.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc

from _util import best_of, report

import aopkit
from aopkit.models import ChatResponse, Usage

N = 2_000
AGENTS = 10_000


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


CALL = ChatResponse(
    [aopkit.ToolUseBlock("c1", "multiply", {"a": 6, "b": 7})], Usage(10, 5), "tool_use"
)
ANSWER = ChatResponse([aopkit.TextBlock("42")], Usage(12, 1), "stop")


async def replies() -> float:
    kernel = aopkit.Kernel(environ={})
    model = kernel.model("scripted:bench")
    agent = aopkit.ReActAgent(
        "helper", model, toolkit=aopkit.Toolkit([multiply], kernel=kernel), kernel=kernel
    )
    question = aopkit.Msg("user", "What is 6 times 7?", "user")
    start = time.perf_counter()
    for _ in range(N):
        model.responses = [CALL, ANSWER]
        model.calls.clear()
        await agent(question)
        agent.memory.clear()
    return (time.perf_counter() - start) / N


async def by_hand() -> float:
    question = aopkit.Msg("user", "What is 6 times 7?", "user")
    start = time.perf_counter()
    for _ in range(N):
        history = [question, aopkit.Msg("helper", list(CALL.content), "assistant")]
        result = multiply(6, 7)
        history.append(
            aopkit.Msg("tools", [aopkit.ToolResultBlock("c1", "multiply", str(result))], "user")
        )
        history.append(aopkit.Msg("helper", list(ANSWER.content), "assistant"))
    return (time.perf_counter() - start) / N


def construction() -> tuple[float, float]:
    kernel = aopkit.Kernel(environ={})
    model = kernel.model("scripted:bench")
    toolkit = aopkit.Toolkit([multiply], kernel=kernel)
    names = [f"agent-{i}" for i in range(AGENTS)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    agents = [aopkit.ReActAgent(n, model, toolkit=toolkit, kernel=kernel) for n in names]
    size = (tracemalloc.get_traced_memory()[0] - before) / AGENTS / 1024
    tracemalloc.stop()
    del agents
    gc.collect()
    start = time.perf_counter()
    agents = [aopkit.ReActAgent(n, model, toolkit=toolkit, kernel=kernel) for n in names]
    seconds = (time.perf_counter() - start) / AGENTS
    assert len(agents) == AGENTS
    return size, seconds


def main() -> None:
    value = best_of(5, lambda: asyncio.run(replies())) * 1e6
    floor = best_of(5, lambda: asyncio.run(by_hand())) * 1e6
    report(
        "ReAct reply overhead (one tool call, then the answer)",
        value,
        "µs",
        floor=floor,
        floor_name="the same messages and tool call by hand",
        target="<= 150 µs",
    )
    size, seconds = min(construction() for _ in range(3))
    report(
        "ReActAgent memory (10,000 agents, shared model and toolkit)",
        size,
        "KB/agent",
        target="<= 3 KB",
    )
    report("ReActAgent construction", seconds * 1e6, "µs", target="<= 20 µs")


if __name__ == "__main__":
    main()
