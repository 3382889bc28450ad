"""Human approval of tool calls: approve, reject with a reason, edit; pausing; a paused run
answered from another process after a restart."""

import multiprocessing

import pytest

import aopkit
from aopkit import (
    ApprovalRequest,
    AwaitingApproval,
    Decision,
    JSONFileStore,
    ReActAgent,
    SQLiteStore,
    Tool,
    Toolkit,
    ToolResultBlock,
    ToolUseBlock,
)
from aopkit.durable import approve, edit, reject

from . import durable_program


class Person:
    """An escalate hook that answers approval requests with ``answer`` and keeps them."""

    def __init__(self, answer):
        self.answer, self.asked = answer, []

    @aopkit.hookimpl
    def escalate(self, incident):
        if isinstance(incident, ApprovalRequest):
            self.asked.append(incident)
            return self.answer(incident) if callable(self.answer) else self.answer
        return None


def _shop(kernel, ran, **toolkit_options):
    def buy(item: str, quantity: int = 1) -> str:
        """Buy something."""
        ran.append((item, quantity))
        return f"bought {quantity} {item}"

    def look(item: str) -> str:
        """Look at something."""
        return f"a fine {item}"

    tools = Toolkit([Tool(buy, approve=not toolkit_options), look], **toolkit_options)
    agent = ReActAgent("shopper", "scripted:x", toolkit=tools, kernel=kernel)
    return agent


def _results(agent):
    return [b for m in agent.memory for b in m.blocks(ToolResultBlock)]


async def test_an_approved_call_runs_and_the_person_saw_its_arguments(kernel):
    person = Person(approve())
    kernel.register(person, "person")
    ran = []
    agent = _shop(kernel, ran)
    agent.model.add([ToolUseBlock("c1", "buy", {"item": "boat", "quantity": 2})], "ok")
    await agent("buy two boats")
    assert ran == [("boat", 2)]
    (request,) = person.asked
    assert request.agent == "shopper" and request.run is None
    assert [(c.id, c.tool, dict(c.arguments)) for c in request.calls] == [
        ("c1", "buy", {"item": "boat", "quantity": 2})
    ]
    assert "buy(" in request.describe() and '"quantity": 2' in request.describe()


async def test_a_rejected_call_does_not_run_and_the_model_reads_the_reason(kernel):
    kernel.register(Person(reject("over budget")), "person")
    ran = []
    agent = _shop(kernel, ran)
    agent.model.add(
        [ToolUseBlock("c1", "buy", {"item": "boat"}), ToolUseBlock("c2", "look", {"item": "car"})],
        "fine",
    )
    await agent("buy a boat")
    assert ran == []
    rejected, looked = _results(agent)
    assert rejected.is_error and rejected.output == "rejected by a person: over budget"
    assert looked.output == "a fine car", "a call needing no approval runs as usual"
    sent = agent.model.calls[-1]["messages"]
    assert any(
        b.output == "rejected by a person: over budget"
        for m in sent
        for b in m.blocks(ToolResultBlock)
    )


async def test_an_edited_call_runs_with_the_new_arguments_which_the_history_shows(kernel):
    kernel.register(Person(edit({"item": "canoe"})), "person")
    ran = []
    agent = _shop(kernel, ran)
    agent.model.add([ToolUseBlock("c1", "buy", {"item": "yacht", "quantity": 3})], "ok")
    await agent("buy a yacht")
    assert ran == [("canoe", 1)]
    (use,) = [b for m in agent.memory for b in m.blocks(ToolUseBlock)]
    assert use.input == {"item": "canoe"} and use.id == "c1"


async def test_an_edit_is_checked_against_the_tool_as_the_model_arguments_were(kernel):
    """The model's arguments were checked before the person saw them; an edit replacing them
    with ones that do not fit is checked again, and the tool does not run with them."""
    kernel.register(Person(edit({"item": "canoe", "quantity": "many"})), "person")
    ran = []
    agent = _shop(kernel, ran)
    agent.model.add([ToolUseBlock("c1", "buy", {"item": "yacht", "quantity": 3})], "ok")
    await agent("buy a yacht")
    assert ran == []
    (result,) = _results(agent)
    assert result.is_error and "invalid arguments" in result.output
    assert "quantity" in result.output


async def test_a_toolkit_policy_chooses_the_calls_that_need_approval(kernel):
    person = Person(lambda request: {c.id: approve() for c in request.calls})
    kernel.register(person, "person")
    ran = []
    agent = _shop(kernel, ran, approve=lambda name, args: args.get("quantity", 1) > 5)
    agent.model.add(
        [
            ToolUseBlock("c1", "buy", {"item": "pen"}),
            ToolUseBlock("c2", "buy", {"item": "pen", "quantity": 9}),
        ],
        "ok",
    )
    await agent("buy pens")
    assert [[c.id for c in r.calls] for r in person.asked] == [["c2"]]
    assert sorted(ran) == [("pen", 1), ("pen", 9)]


async def test_with_no_one_to_answer_the_run_pauses_and_memory_holds_no_half_step(kernel):
    ran = []
    agent = _shop(kernel, ran)
    agent.model.add([ToolUseBlock("c1", "buy", {"item": "boat"})])
    with pytest.raises(AwaitingApproval, match=r"(?s)waits for approval.*buy\(") as info:
        await agent("buy a boat")
    assert [c.id for c in info.value.request.calls] == ["c1"]
    assert ran == []
    assert [m.role for m in agent.memory] == ["user"], "no tool call without its result"


@pytest.mark.parametrize(
    "answer",
    [
        {"c1": approve(), "zz": approve()},
        {},
        "yes",
        aopkit.faults.Resolution("retry"),
    ],
)
async def test_a_malformed_answer_is_a_clear_error(kernel, answer):
    kernel.register(Person(answer), "person")
    ran = []
    agent = _shop(kernel, ran)
    agent.model.add([ToolUseBlock("c1", "buy", {"item": "boat"})], "ok")
    with pytest.raises(
        aopkit.ReplyError, match=r"approval .*(must cover exactly|expected a Decision)"
    ):
        await agent("buy")
    assert ran == []


def test_decisions_are_checked_when_made():
    with pytest.raises(aopkit.AopkitError, match="approve, reject or edit"):
        Decision("maybe")
    with pytest.raises(aopkit.AopkitError, match="with edit, and only with edit"):
        Decision("edit")
    with pytest.raises(aopkit.AopkitError, match="with edit, and only with edit"):
        Decision("approve", arguments={"a": 1})


async def test_a_person_at_the_terminal_decides(kernel, monkeypatch):
    from aopkit import faults

    said = iter(["x", "e", "[1]", "e", '{"item": "raft"}'])

    async def typed(prompt):
        return next(said)

    monkeypatch.setattr("aopkit.terminal.ask", typed)
    monkeypatch.setattr(faults, "_terminal_attached", lambda: True)
    ran = []
    agent = _shop(kernel, ran)
    agent.model.add([ToolUseBlock("c1", "buy", {"item": "boat"})], "ok")
    await agent("buy")
    assert ran == [("raft", 1)]


def _processes():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([durable_program.__name__])
    return context


def _in_child(target, *args):
    child = _processes().Process(target=target, args=args)
    child.start()
    child.join(60)
    assert child.exitcode == 0, f"{target.__name__} failed ({child.exitcode})"


@pytest.mark.parametrize("kind", ["json", "sqlite"])
async def test_a_paused_run_is_answered_from_another_process_after_a_restart(tmp_path, kind):
    store = JSONFileStore(tmp_path / "store") if kind == "json" else SQLiteStore(tmp_path / "db")
    _in_child(durable_program.buy_in_child, store, "shop", tmp_path)
    assert (tmp_path / "outcome.txt").read_text().startswith("paused: agent 'buyer' asks to run")
    request = await aopkit.pending_approval(store, "shop")
    assert request is not None and request.run == "shop"
    assert [(c.tool, dict(c.arguments)) for c in request.calls] == [("buy", {"item": "boat"})]

    _in_child(durable_program.answer_in_child, store, "shop", reject("boats sink"))
    assert await aopkit.pending_approval(store, "shop") is None
    with pytest.raises(aopkit.DurableError, match="waits for no approval"):
        await aopkit.answer_approval(store, "shop", approve())

    _in_child(durable_program.buy_in_child, store, "shop", tmp_path)
    outcome = (tmp_path / "outcome.txt").read_text()
    assert outcome == "done: rejected by a person: boats sink (error: True)"
    assert not (tmp_path / "effects.log").exists(), "the rejected call never ran"


async def test_an_approved_paused_run_runs_the_call_once(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    _in_child(durable_program.buy_in_child, store, "shop", tmp_path)
    await aopkit.answer_approval(store, "shop", {"b1": approve()})
    _in_child(durable_program.buy_in_child, store, "shop", tmp_path)
    _in_child(durable_program.buy_in_child, store, "shop", tmp_path)  # finished: replays
    assert (tmp_path / "outcome.txt").read_text() == "done: bought a boat (error: False)"
    assert (tmp_path / "effects.log").read_text() == "bought boat\n"


class _Racing:
    """A store in which someone else answers the approval just before our answer lands."""

    def __init__(self, store, rival):
        self.store, self.rival = store, rival

    async def journal(self, run):
        return await self.store.journal(run)

    async def append(self, run, entries):
        if self.rival is not None:
            await aopkit.answer_approval(self.store, run, self.rival)
            self.rival = None
        await self.store.append(run, entries)


async def test_an_approval_answered_twice_at_once_tells_the_loser(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    calls = [{"id": "b1", "tool": "buy", "arguments": {"item": "boat"}}]
    request = {"agent": "buyer", "calls": calls}
    await store.append(
        "shop", [{"kind": "approval", "key": "buyer/0/approval0", "request": request}]
    )
    with pytest.raises(aopkit.AopkitError, match=r"exactly the calls \['b1'\].*unknown \['zz'\]"):
        await aopkit.answer_approval(store, "shop", {"zz": approve()})
    assert len(await store.journal("shop")) == 1, "a wrong answer appends nothing"

    with pytest.raises(aopkit.DurableError, match="answered otherwise by someone else"):
        await aopkit.answer_approval(_Racing(store, reject("no")), "shop", approve())
    assert (await aopkit.pending_approval(store, "shop")) is None
    same = _Racing(store, None)
    await store.append(
        "shop", [{"kind": "approval", "key": "buyer/1/approval0", "request": request}]
    )
    same.rival = edit({"item": ("kayak",)})  # the same answer twice is no conflict
    await aopkit.answer_approval(same, "shop", edit({"item": ("kayak",)}))


async def test_a_damaged_approval_entry_is_a_clear_error(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    await store.append("shop", [{"kind": "approval", "key": "buyer/0/approval0", "request": {}}])
    with pytest.raises(aopkit.DurableError, match="'approval' 'buyer/0/approval0' is damaged"):
        await aopkit.answer_approval(store, "shop", approve())
