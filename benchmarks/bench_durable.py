"""Durable runs: what the journal costs per message. A hub of 3 ReAct agents (scripted model,
one tool call then an answer per reply) for 20 rounds, plain and durable on each embedded store;
the floor is one fsync'd append of a small line to a file, measured in the same run."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from _util import best_of, report

import aopkit
from aopkit.blocks import ToolUseBlock

AGENTS, ROUNDS = 3, 20


def look(topic: str) -> str:
    """Facts about a topic."""
    return f"facts about {topic}"


async def run(store: aopkit.JSONFileStore | aopkit.SQLiteStore | None) -> tuple[float, int]:
    """Seconds per message entering the conversation (each step, tool result and reply)."""
    async with aopkit.Kernel(environ={}) as kernel:
        agents = []
        for i in range(AGENTS):
            model = kernel.model("scripted:bench")
            for turn in range(ROUNDS):
                model.add([ToolUseBlock(f"a{i}-{turn}", "look", {"topic": "x"})], f"answer {turn}")
            agents.append(
                aopkit.ReActAgent(f"a{i}", model, tools=[aopkit.Tool(look, idempotent=True)])
            )
        durable = {} if store is None else {"durable": store, "run": "bench"}
        start = time.perf_counter()
        async with aopkit.MsgHub(agents, "go", name="bench", **durable):
            for _ in range(ROUNDS):
                for agent in agents:
                    await agent()
        elapsed = time.perf_counter() - start
    messages = AGENTS * ROUNDS * 3  # the tool call, its result, the reply
    entries = len(await store.journal("bench")) if store is not None else 0
    return elapsed / messages, entries


def timed(make: type[aopkit.JSONFileStore] | type[aopkit.SQLiteStore] | None) -> float:
    with tempfile.TemporaryDirectory() as root:
        store = None if make is None else make(Path(root) / "store")
        seconds, _ = asyncio.run(run(store))
        return seconds


def fsync_append(n: int) -> float:
    """Seconds per fsync'd append of a 100-byte line (what any durable append must pay)."""
    with tempfile.TemporaryDirectory() as root:
        fd = os.open(Path(root) / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        line = b"x" * 99 + b"\n"
        start = time.perf_counter()
        for _ in range(n):
            os.write(fd, line)
            os.fsync(fd)
        elapsed = time.perf_counter() - start
        os.close(fd)
        return elapsed / n


def main() -> None:
    floor = best_of(3, lambda: fsync_append(200)) * 1e3
    plain = best_of(3, lambda: timed(None)) * 1e3
    with tempfile.TemporaryDirectory() as root:
        _, entries = asyncio.run(run(aopkit.SQLiteStore(Path(root) / "count")))
    per_message = entries / (AGENTS * ROUNDS * 3)
    report("plain run", plain, "ms/message")
    for name, make in (
        ("JSONFileStore", aopkit.JSONFileStore),
        ("SQLiteStore", aopkit.SQLiteStore),
    ):
        value = best_of(3, lambda make=make: timed(make)) * 1e3
        report(
            f"durable run ({name}, {per_message:.2f} entries/message)",
            value,
            "ms/message",
            floor=floor * per_message,
            floor_name="that many fsync'd appends",
            target="<= 3x floor",
        )


if __name__ == "__main__":
    main()
