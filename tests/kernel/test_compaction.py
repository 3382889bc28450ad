"""Compaction: histories near their token budget shrink, never splitting a tool call from its
result and never losing the task message, for every strategy and every provider."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aopkit import (
    Compaction,
    ConfigurationError,
    Msg,
    ReActAgent,
    ReplyError,
    Toolkit,
    ToolResultBlock,
    ToolUseBlock,
)
from aopkit.compaction import CompactionError, compact, exchanges, flat, task_message
from aopkit.events import Compacted
from aopkit.usage import estimate_tokens
from tests.kernel.helpers import Recorder
from tests.tool_history import assert_answered

STRATEGIES = ["truncate", "drop-tool-outputs", "summarise"]


def tool_exchange(n: int, calls: int, size: int) -> list[Msg]:
    uses = [ToolUseBlock(f"c{n}-{i}", "lookup", {"q": f"item {i}"}) for i in range(calls)]
    results = [
        ToolResultBlock(u.id, u.name, f"result {n}.{i} " + "x" * size) for i, u in enumerate(uses)
    ]
    return [Msg("helper", uses, "assistant"), Msg("tools", results, "user")]


def history_of(parts: list[tuple[str, int, int]]) -> list[Msg]:
    """A task message, then turns: ("text", size, _) or ("tools", calls, size)."""
    history = [Msg("user", "The task: find every item.", "user")]
    for n, (kind, a, b) in enumerate(parts):
        if kind == "text":
            role = "assistant" if n % 2 else "user"
            history.append(Msg("helper" if n % 2 else "user", "t" * a, role))
        else:
            history += tool_exchange(n, a, b)
    return history


PARTS = st.lists(
    st.one_of(
        st.tuples(st.just("text"), st.integers(1, 400), st.just(0)),
        st.tuples(st.just("tools"), st.integers(1, 3), st.integers(0, 800)),
    ),
    max_size=14,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=PARTS,
    chain=st.lists(st.sampled_from(STRATEGIES), min_size=1, max_size=3),
    budget=st.integers(20, 2000),
    recent=st.integers(0, 3),
)
def test_any_compaction_leaves_a_history_every_provider_accepts(
    kernel, parts, chain, budget, recent
):
    history = history_of(parts)
    task = history[0]
    model = kernel.model("scripted:summariser", responses=["they looked things up"] * 10)
    policy = Compaction(budget, strategies=tuple(chain), start=0.5, target=0.4, recent=recent)

    async def run() -> list[Msg] | None:
        return await compact(kernel, "helper", history, policy, model=model)

    compacted = asyncio.run(run())
    if compacted is None:
        assert estimate_tokens(history) < 0.5 * budget
        return
    assert task in compacted
    assert estimate_tokens(compacted) <= estimate_tokens(history)
    asyncio.run(assert_answered(kernel, compacted))
    units = exchanges(history)
    tail = flat(units[len(units) - recent :]) if recent else []
    assert compacted[len(compacted) - len(tail) :] == tail, "a recent exchange was changed"


async def test_truncate_drops_the_oldest_exchanges_first(kernel):
    history = history_of([("text", 400, 0), ("tools", 2, 400), ("text", 40, 0), ("text", 40, 0)])
    policy = Compaction(300, strategies=("truncate",), recent=1)
    compacted = await compact(kernel, "a", history, policy, model=kernel.model("scripted:x"))
    assert compacted == [history[0], history[-2], history[-1]]


async def test_drop_tool_outputs_keeps_the_calls_and_a_note(kernel):
    history = history_of([("tools", 2, 2000), ("text", 10, 0)])
    policy = Compaction(1000, strategies=("drop-tool-outputs",), recent=1)
    compacted = await compact(kernel, "a", history, policy, model=kernel.model("scripted:x"))
    assert compacted[1] is history[1]
    notes = compacted[2].blocks(ToolResultBlock)
    assert [b.id for b in notes] == ["c0-0", "c0-1"]
    assert notes[0].output == "[output of lookup dropped to save context: 2011 characters]"
    assert compacted[2].metadata["compacted"] == history[2].id
    again = await compact(kernel, "a", compacted, policy, model=kernel.model("scripted:x"))
    assert again is None or again[2].blocks(ToolResultBlock) == notes  # a note stays a note


async def test_summarise_puts_one_summary_message_in_place_of_the_oldest(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    history = history_of([("tools", 1, 1500), ("text", 300, 0), ("text", 20, 0)])
    model = kernel.model("scripted:s", responses=["They looked up item 0."])
    policy = Compaction(500, strategies=("summarise",), recent=1)
    compacted = await compact(kernel, "a", history, policy, model=model)
    summary = compacted[1]
    assert compacted == [history[0], summary, *history[3:]]
    assert summary.name == "summary" and summary.role == "user"
    assert summary.text == "Summary of the earlier conversation: They looked up item 0."
    assert summary.metadata["replaces"] == [m.id for m in history[1:3]]
    shown = model.calls[0]["messages"][1].text
    assert (
        "helper called lookup({'q': 'item 0'})" in shown and "lookup returned: result 0.0" in shown
    )
    [event] = [e for e in recorder.events if isinstance(e, Compacted)]
    assert event.added == (summary,) and event.removed == tuple(m.id for m in history[1:3])
    assert event.strategies == ("summarise",) and event.tokens_after < event.tokens_before


async def test_the_task_message_can_be_marked(kernel):
    first = Msg("user", "hi", "user")
    task = Msg("user", "the real task", "user", metadata={"task": True})
    assert task_message([first, task]) is task
    tools = tool_exchange(0, 1, 10)
    assert task_message([*tools, first]) is first


class Splitter:
    async def compact(self, history, goal):
        return [m for m in history if not m.blocks(ToolResultBlock)]


class TaskDropper:
    async def compact(self, history, goal):
        return history[1:]


@pytest.mark.parametrize(
    ("compactor", "match"),
    [(Splitter(), "separated tool call 'c0-0' from its result"), (TaskDropper(), "task message")],
)
async def test_a_compactor_that_breaks_the_rules_changes_nothing(kernel, compactor, match):
    history = history_of([("tools", 1, 2000), ("text", 10, 0)])
    agent = ReActAgent(
        "helper",
        kernel.model("scripted:x", responses=["done"]),
        kernel=kernel,
        compaction=Compaction(100, strategies=(compactor,)),
    )
    agent.memory.extend(history)
    with pytest.raises(ReplyError, match=match) as caught:
        await agent("go on")
    assert isinstance(caught.value.__cause__, CompactionError)
    assert agent.memory.messages()[: len(history)] == history


class Marker:
    """A compactor a plugin registers: it keeps the task and the recent exchanges."""

    async def compact(self, history, goal):
        keep = {goal.task} | {m.id for u in exchanges(history)[-goal.recent :] for m in u}
        return [m for m in history if m.id in keep]


async def test_a_registered_compactor_is_used_by_name(kernel):
    from aopkit import hookimpl

    class Plugin:
        @hookimpl
        def register_compactors(self, register):
            register("marker", Marker())

    kernel.register(Plugin(), "marker-plugin")
    assert kernel.compactors.owners["marker"] == "marker-plugin"
    assert {"truncate", "summarise", "drop-tool-outputs"} <= set(kernel.compactors)
    history = history_of([("text", 900, 0), ("text", 900, 0), ("text", 5, 0)])
    policy = Compaction(200, strategies=("marker",), recent=1)
    assert await compact(kernel, "a", history, policy, model=kernel.model("scripted:x")) == [
        history[0],
        history[-1],
    ]


async def test_a_react_agent_compacts_between_steps_and_answers(kernel):
    """A long tool loop under a small budget: every call the model gets fits, stays valid,
    and the task message is in each."""

    def fetch(page: int) -> str:
        """Fetch a page."""
        return f"page {page} " + "words " * 300

    steps = [[ToolUseBlock(f"c{i}", "fetch", {"page": i})] for i in range(6)]
    model = kernel.model("scripted:brain", responses=[*steps, "All pages read."])
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    agent = ReActAgent(
        "reader",
        model,
        toolkit=Toolkit([fetch], kernel=kernel),
        kernel=kernel,
        sys_prompt="You read pages.",
        compaction=Compaction(1500, recent=1),
    )
    task = Msg("user", "Read pages 0 to 5.", "user")
    reply = await agent(task)
    assert reply.text == "All pages read."
    for call in model.calls:
        sent = call["messages"]
        assert task in sent
        await assert_answered(kernel, [m for m in sent if m.role != "system"])
        assert estimate_tokens(sent) <= 1500
    assert any(isinstance(e, Compacted) for e in recorder.events)
    assert task in agent.memory


@pytest.mark.parametrize(
    "options",
    [
        {"budget": 0},
        {"budget": 10, "target": 0.95},
        {"budget": 10, "recent": -1},
        {"budget": 10, "strategies": ()},
        {"budget": 10, "strategies": "truncate"},
    ],
)
def test_bad_policies_are_refused(options):
    with pytest.raises(ConfigurationError, match="Compaction"):
        Compaction(**options)


async def test_a_resumed_durable_run_replays_its_summary_without_asking_again(tmp_path):
    """The summary's model call is journaled: run again, the memory is the same and neither
    model is asked anything."""
    from aopkit import Kernel, SQLiteStore, durable

    store = SQLiteStore(tmp_path / "runs.db")

    def fetch(page: int) -> str:
        """Fetch a page."""
        return f"page {page} " + "words " * 300

    async def run(answers, summaries, run_id="read-1"):
        async with Kernel() as kernel:
            model = kernel.model("scripted:brain", responses=answers)
            summariser = kernel.model("scripted:sum", responses=summaries)
            policy = Compaction(1200, strategies=("summarise",), recent=1, model=summariser)
            agent = ReActAgent("reader", model, tools=[fetch], kernel=kernel, compaction=policy)
            async with durable(store, run_id):
                reply = await agent(Msg("user", "Read pages 0 to 3.", "user"))
            memory = [(m.name, m.role, m.text) for m in agent.memory]
            return reply.text, memory, len(model.calls), len(summariser.calls)

    steps = [[ToolUseBlock(f"c{i}", "fetch", {"page": i})] for i in range(4)]
    first = await run([*steps, "Read."], [f"summary {n}" for n in range(5)])
    assert first[0] == "Read." and first[3] >= 1
    assert any(name == "summary" for name, _, _ in first[1])
    again = await run([], [])
    assert again[:2] == first[:2] and again[2:] == (0, 0)

    broken = run(steps[:3], ["summary 0"] * 5, "read-2")  # the model fails after 3 steps
    with pytest.raises(ReplyError, match="ScriptExhausted"):
        await broken
    resumed = await run([steps[3], "Read."], ["summary 0"] * 5, "read-2")
    assert resumed[:2] == first[:2]
