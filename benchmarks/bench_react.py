"""ReAct agents: reply overhead without model time, and the cost of making many agents.

- A scripted model answers at once (one tool call, then the answer), so what is measured is
  the framework: formatting the history, the tool call, memory, events, hooks. The floor is the
  same work done by hand: call the tool function and build the three messages.
- 10,000 ReActAgents sharing one model and one toolkit, each with its own memory.
- A ReAct step with a long history (100, 400, 800 messages) through the OpenAI provider, the
  request body encoded as the HTTP client encodes it (only the socket is left out), beside
  ``json.dumps`` of the same body: formatted messages are kept on the messages, so a step
  should cost about what encoding its body costs, and grow no faster.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import tracemalloc
from collections.abc import Mapping
from typing import Any

from _util import best_of, report

import aopkit
from aopkit.models import ChatResponse, Usage
from aopkit_openai import OpenAIModel

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


HISTORIES = (100, 400, 800)
STEPS = 40
ANSWER_BODY = {
    "id": "chatcmpl-1",
    "model": "bench",
    "choices": [{"message": {"role": "assistant", "content": "done"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 1},
}


class _Sent:
    """A request that encodes its body as the kernel's wire does, and answers at once."""

    def __init__(self, payload: Mapping[str, Any], bodies: list[Any]) -> None:
        self.payload = payload
        bodies.append(payload)

    async def send(self) -> dict[str, Any]:
        encode(self.payload)
        return ANSWER_BODY


def encode(body: Any) -> bytes:
    """A request body as ``aopkit.wire`` sends it: compact JSON."""
    return json.dumps(body, separators=(",", ":")).encode()


class _Offline(OpenAIModel):
    """The OpenAI provider up to the socket."""

    bodies: list[Any]

    def request(self, path: str, payload: Mapping[str, Any]) -> Any:
        return _Sent(payload, self.bodies)


def long_history(size: int) -> list[aopkit.Msg]:
    """A ReAct agent's memory: questions, and steps of a tool call, its result and an answer."""
    messages: list[aopkit.Msg] = []
    turn = 0
    while len(messages) < size:
        turn += 1
        messages.append(aopkit.Msg("user", f"Question {turn}: what is {turn} times 7?", "user"))
        use = aopkit.ToolUseBlock(f"call_{turn}", "multiply", {"a": turn, "b": 7})
        messages.append(aopkit.Msg("helper", [use], "assistant"))
        result = aopkit.ToolResultBlock(f"call_{turn}", "multiply", str(turn * 7))
        messages.append(aopkit.Msg("tools", [result], "user"))
        messages.append(aopkit.Msg("helper", f"{turn} times 7 is {turn * 7}.", "assistant"))
    return messages[:size]


async def step(size: int) -> tuple[float, float]:
    """Seconds of one model call of a ReAct agent with ``size`` messages of history (its
    answer ends the reply), and of ``json.dumps`` of the same request body."""
    kernel = aopkit.Kernel(environ={})
    model = _Offline("bench", kernel=kernel, api_key="sk-bench")
    model.bodies = []
    agent = aopkit.ReActAgent(
        "helper", model, tools=[multiply], sys_prompt="You multiply.", kernel=kernel
    )
    agent.memory.extend(long_history(size))
    question = aopkit.Msg("user", "What is 6 times 7?", "user")
    await agent(question)  # the history is formatted once
    agent.memory.remove(question.id)
    count = len(agent.memory)
    start = time.process_time()
    for _ in range(STEPS):
        answer = await agent.reply(question)
        assert answer.text == "done"
    spent = (time.process_time() - start) / STEPS
    assert len(agent.memory) == count
    body = model.bodies[-1]
    start = time.process_time()
    for _ in range(STEPS):
        encode(body)
    floor = (time.process_time() - start) / STEPS
    await kernel.aclose()
    return spent, floor


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
    per_size = {}
    for size in HISTORIES:
        runs = [asyncio.run(step(size)) for _ in range(5)]
        spent, floor = min(r[0] for r in runs), min(r[1] for r in runs)
        per_size[size] = (spent, floor)
        report(
            f"ReAct step, {size} messages of history (format, request body encoded)",
            spent * 1e6,
            "µs",
            floor=floor * 1e6,
            floor_name="json.dumps of the same body",
            target="<= 3x" if size == HISTORIES[-1] else "",
        )
    (small, small_floor), (large, large_floor) = per_size[HISTORIES[0]], per_size[HISTORIES[-1]]
    print(
        f"ReAct step growth {HISTORIES[0]} -> {HISTORIES[-1]} messages: {large / small:.2f}x, "
        f"json.dumps of the body: {large_floor / small_floor:.2f}x  | target: no faster",
        flush=True,
    )


if __name__ == "__main__":
    main()
