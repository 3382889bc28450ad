"""A deterministic multi-agent run with tools: the program the durable tests run, kill and
resume, each time in a process of its own.

Its model answers from the conversation (not from a list, which a replay would shift) and logs
each call; ``charge`` has a side effect (a line in a file) and is not idempotent; ``lookup`` is.
A SIGKILL comes at the n-th journal append of a process, just before or just after it.
Importing this module loads aopkit's plugins once (a kernel made and dropped), so that child
processes forked from a server that imported it start at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import aopkit
from aopkit.blocks import TextBlock, ToolUseBlock
from aopkit.faults import Resolution
from aopkit.models import ChatResponse
from aopkit_scripted import ScriptedModel

aopkit.Kernel()  # imports every plugin now, see above

AGENTS = ("alice", "bob", "carol")
ROUNDS = 2


class RuleModel(ScriptedModel):
    """Even turns call both tools, odd turns answer; ``id`` names the turn (agent/n)."""

    def __init__(self, model: str, *, kernel: aopkit.Kernel, calls: Path) -> None:
        super().__init__(model, kernel=kernel)
        self.calls_file = calls

    def _next(self, request: dict[str, Any]) -> ChatResponse:
        messages = request["messages"]
        agent = messages[0].text.split()[-1]
        n = sum(1 for m in messages if m.role == "assistant" and m.name == agent)
        with self.calls_file.open("a") as log:
            log.write(f"{os.getpid()} {agent}/{n}\n")
        if n % 2 == 0:
            content: list[Any] = [
                TextBlock("checking"),
                ToolUseBlock(f"{agent}-{n}-look", "lookup", {"topic": f"{agent}{n}"}),
                ToolUseBlock(f"{agent}-{n}-pay", "charge", {"amount": n + 1, "who": agent}),
            ]
        else:
            content = [TextBlock(f"{agent} answers turn {n} after {len(messages)} messages")]
        return ChatResponse(content, finish_reason="stop", id=f"{agent}/{n}", model=self.model)


class Files:
    def __init__(self, root: Path) -> None:
        self.calls = root / "calls.log"
        self.effects = root / "effects.log"
        self.incidents = root / "incidents.jsonl"


def tools(files: Files) -> aopkit.Toolkit:
    def lookup(topic: str) -> str:
        """Facts about a topic (no side effect)."""
        return f"facts about {topic}"

    def charge(amount: int, who: str) -> str:
        """Charge someone (a side effect: must not happen twice)."""
        with files.effects.open("a") as log:
            log.write(f"{who}:{amount}\n")
        return f"charged {who} {amount}"

    return aopkit.Toolkit([aopkit.Tool(lookup, idempotent=True), aopkit.Tool(charge)])


class Human:
    """Decides about an interrupted charge as a person would: looks at the effects."""

    def __init__(self, files: Files) -> None:
        self.files = files

    @aopkit.hookimpl
    def escalate(self, incident: Any) -> Resolution:
        arguments = json.loads(incident.request)["arguments"]
        done = self.files.effects.read_text().split() if self.files.effects.exists() else []
        if f"{arguments['who']}:{arguments['amount']}" in done:
            return Resolution("answer", f"charged {arguments['who']} {arguments['amount']}")
        return Resolution("retry")


class Killing:
    """A store that SIGKILLs its process at its ``at``-th append, ``when`` before or after."""

    def __init__(self, store: Any, at: int, when: str) -> None:
        self.store, self.at, self.when, self.count = store, at, when, 0

    async def append(self, run: str, entries: Any) -> None:
        self.count += 1
        number = self.count  # appends of parallel tool calls overlap
        if number == self.at and self.when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        await self.store.append(run, entries)
        if number == self.at and self.when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    async def journal(self, run: str) -> Any:
        return await self.store.journal(run)

    async def save(self, session_id: str, states: Any) -> None:
        await self.store.save(session_id, states)

    async def load(self, session_id: str) -> Any:
        return await self.store.load(session_id)

    def claim(self, name: str, *, wait: float = 0.0) -> Any:
        return self.store.claim(name, wait=wait)  # each resume must find the killed one's freed


async def program(store: Any, run: str | None, root: Path) -> dict[str, list[Any]]:
    """The run; the agents' final memories (as data)."""
    files = Files(root)
    async with aopkit.Kernel(environ={"AOPKIT_INCIDENTS": str(files.incidents)}) as kernel:
        kernel.register(Human(files), "human")
        model = RuleModel("rules", kernel=kernel, calls=files.calls)
        toolkit = tools(files)
        agents = [
            aopkit.ReActAgent(name, model, toolkit=toolkit, sys_prompt=f"You are {name}")
            for name in AGENTS
        ]
        durable = {} if run is None else {"durable": store, "run": run}
        async with aopkit.MsgHub(agents, "Plan the trip.", name="trip", **durable):
            for _ in range(ROUNDS):
                for agent in agents:
                    await agent()
        return {a.name: [kernel.codec.dump(m) for m in a.memory] for a in agents}


def run_in_child(store: Any, run: str | None, root: Path, kill_at: int, when: str) -> None:
    """A child process's work: the program, killed at an append (0: never); the memories are
    written to ``memories.json`` when it finishes."""
    if kill_at:
        store = Killing(store, kill_at, when)
    memories = asyncio.run(program(store, run, root))
    (root / "memories.json").write_text(json.dumps(memories))


class BuyerModel(ScriptedModel):
    """Asks to buy a boat, then reports what the tool said."""

    def _next(self, request: dict[str, Any]) -> ChatResponse:
        messages = request["messages"]
        self.calls.append(request)
        if messages[-1].role != "user" or messages[-1].name != "tools":
            return ChatResponse([ToolUseBlock("b1", "buy", {"item": "boat"})])
        result = messages[-1].content[0]
        return ChatResponse([TextBlock(f"done: {result.output} (error: {result.is_error})")])


async def buying(store: Any, run: str, root: Path) -> str:
    """A one-agent run whose only tool needs approval; what the agent finally says."""
    files = Files(root)
    async with aopkit.Kernel(environ={"AOPKIT_INCIDENTS": str(files.incidents)}) as kernel:

        def buy(item: str) -> str:
            """Buy something."""
            with files.effects.open("a") as log:
                log.write(f"bought {item}\n")
            return f"bought a {item}"

        model = BuyerModel("buyer", kernel=kernel)
        agent = aopkit.ReActAgent(
            "buyer", model, tools=[aopkit.Tool(buy, approve=True)], sys_prompt="You buy."
        )
        reply = await aopkit.sequential([agent], "buy a boat", durable=store, run=run)
        assert reply is not None
        return reply.text


def buy_in_child(store: Any, run: str, root: Path) -> None:
    """A child process's work: the buying run; its outcome in ``outcome.txt``."""
    try:
        outcome = asyncio.run(buying(store, run, root))
    except aopkit.AwaitingApproval as paused:
        outcome = f"paused: {paused.request.describe()}"
    (root / "outcome.txt").write_text(outcome)


def answer_in_child(store: Any, run: str, decision: aopkit.Decision) -> None:
    """A child process's work: answer the approval the run waits for."""
    asyncio.run(aopkit.answer_approval(store, run, decision))
