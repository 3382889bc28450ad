"""The Service every protocol adapter builds on: conversations, their store, their events."""

from __future__ import annotations

import asyncio

import pytest

import aopkit
from aopkit.events import ReplyChunk, ReplyFinished
from aopkit_serve import ConversationBusy, InvalidConversation, Service, UnknownAgent

from .agents import Recall, held


async def ask(service: Service, conversation: str | None, text: str, name: str = "a") -> str:
    async with service.conversation(conversation) as conv:
        reply = await conv.agent(name)(text)
        return reply.text


def test_names_and_descriptions(kernel):
    class Plain(aopkit.Agent):
        async def reply(self, msg):
            return "hi"

    prompted = aopkit.ModelAgent(
        "b", "scripted:x", sys_prompt="Answers in verse.\nMore rules.", kernel=kernel
    )
    service = Service([Recall("a", kernel=kernel), prompted, Plain("c", kernel=kernel)])
    assert service.names() == ["a", "b", "c"]
    assert service.describe("a") == "Recalls what you said."
    assert service.describe("b") == "Answers in verse."
    assert service.describe("c") == "An aopkit agent."
    with pytest.raises(UnknownAgent, match=r"'nobody'.*served: a, b, c"):
        service.describe("nobody")
    assert service.kernel is kernel


@pytest.mark.parametrize(
    "target", [[], "agent", [object()], lambda: 3, None], ids=["empty", "str", "obj", "f", "none"]
)
def test_a_bad_target_is_refused(target):
    with pytest.raises(aopkit.ConfigurationError, match=r"must be an aopkit\.Agent"):
        Service(target)


def test_two_agents_of_one_name_are_refused(kernel):
    with pytest.raises(aopkit.ConfigurationError, match="share a name"):
        Service([Recall("a", kernel=kernel), Recall("a", kernel=kernel)])


async def test_a_conversation_continues_from_the_store_and_others_stay_apart(kernel, tmp_path):
    store = aopkit.SQLiteStore(tmp_path / "s.db")
    service = Service(Recall("a", kernel=kernel), store=store)
    assert await ask(service, "one", "x") == "x"
    assert await ask(service, "two", "y") == "y"
    assert await ask(service, "one", "z") == "x|z"
    restarted = Service(Recall("a", kernel=kernel), store=store)  # a new server, same store
    assert await ask(restarted, "one", "w") == "x|z|w"
    assert await ask(restarted, None, "fresh") == "fresh"


async def test_a_fresh_conversation_gets_an_id_it_can_be_continued_by(kernel):
    service = Service(Recall("a", kernel=kernel))
    async with service.conversation(None) as conv:
        await conv.agent("a")("first")
        made = conv.id
    assert await ask(service, made, "second") == "first|second"


async def test_unknown_agent_and_bad_conversation_ids(kernel):
    service = Service(Recall("a", kernel=kernel))
    async with service.conversation("c") as conv:
        with pytest.raises(UnknownAgent, match="'b'"):
            conv.agent("b")
    for bad in ("../etc", "", ".hidden", "x" * 200, "a b"):
        with pytest.raises(InvalidConversation, match="invalid conversation id"):
            async with service.conversation(bad):
                pass


async def test_a_callable_target_makes_agents_per_conversation(kernel):
    made = []

    def agents():
        made.append(Recall("a", kernel=kernel))
        return made[-1]

    service = Service(agents)
    assert await ask(service, "c", "x") == "x"
    assert await ask(service, "c", "y") == "x|y"
    assert len(made) == 3  # one to learn the names, one per turn
    assert made[-1].session_id == "c"

    names = iter(["a", "b"])
    changing = Service(lambda: Recall(next(names), kernel=kernel))
    with pytest.raises(aopkit.AopkitError, match="must return the same names"):
        await ask(changing, "c", "x")


async def test_turns_of_one_conversation_run_one_at_a_time(kernel):
    service = Service(Recall("a", kernel=kernel))
    replies = await asyncio.gather(*(ask(service, "same", f"m{i}") for i in range(10)))
    assert sorted(r.count("|") for r in replies) == list(range(10))  # each saw all before it
    assert sorted(max(replies, key=len).split("|")) == sorted(f"m{i}" for i in range(10))
    assert not service._locks  # nobody waits: no lock kept for the id


async def test_many_conversations_at_once_never_mix(kernel, tmp_path):
    service = Service(Recall("a", kernel=kernel), store=aopkit.SQLiteStore(tmp_path / "s.db"))

    async def talk(n: int) -> None:
        for turn in range(3):
            assert await ask(service, f"c{n}", f"{n}.{turn}") == "|".join(
                f"{n}.{t}" for t in range(turn + 1)
            )

    await asyncio.gather(*(talk(n) for n in range(20)))


async def test_a_cancelled_turn_keeps_what_was_answered_and_frees_the_conversation(kernel):
    service = Service(Recall("a", kernel=kernel))
    assert await ask(service, "c", "one") == "one"
    turn = asyncio.create_task(ask(service, "c", "sleep:30"))
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(ask(service, "c", "two"))
    await asyncio.sleep(0.05)
    turn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await turn
    assert await asyncio.wait_for(waiting, 5) == "one|sleep:30|two"


async def test_a_failed_turn_keeps_its_input_and_the_error_goes_to_the_caller(kernel):
    class Failing(aopkit.Agent):
        async def reply(self, msg):
            if self.memory[-1].text == "fail":
                raise RuntimeError("boom")
            return "|".join(m.text for m in self.memory if m.role == "user")

    service = Service(Failing("a", kernel=kernel))
    with pytest.raises(aopkit.ReplyError, match="boom"):
        await ask(service, "c", "fail")
    assert await ask(service, "c", "ok") == "fail|ok"


async def test_events_show_each_stream_its_own_run_only(kernel):
    service = Service(Recall("a", kernel=kernel))

    async def stream(conversation: str) -> list[object]:
        async with service.conversation(conversation) as conv, conv.events() as events:
            seen = [e async for e in events.during(conv.agent("a")(conversation))]
            assert events.task is not None
            assert events.task.result().text == conversation
            return seen

    runs = await asyncio.gather(*(stream(f"c{n}") for n in range(10)))
    for n, seen in enumerate(runs):
        chunks = [e.text for e in seen if isinstance(e, ReplyChunk)]
        assert chunks == [f"c{n}"[:1], f"c{n}"], chunks
        assert sum(isinstance(e, ReplyFinished) for e in seen) == 1
    async with service.conversation("quiet") as conv, conv.events() as events:
        await conv.agent("a")("outside during()")  # still inside the block: seen
        assert isinstance(await asyncio.wait_for(events.__anext__(), 1), aopkit.events.Event)


async def test_events_are_built_only_while_a_stream_is_open(kernel):
    service = Service(Recall("a", kernel=kernel))
    assert not kernel.observed
    gate = asyncio.Event()

    async def stream(conversation: str, wait: bool) -> None:
        async with service.conversation(conversation) as conv, conv.events() as events:
            assert kernel.observed
            if wait:
                await gate.wait()
            [e async for e in events.during(conv.agent("a")(conversation))]

    slow = asyncio.ensure_future(stream("slow", True))
    await asyncio.sleep(0.05)
    await stream("quick", False)
    assert kernel.observed, "the other stream is still open: it keeps its events"
    gate.set()
    await slow
    assert not kernel.observed, "no stream open: events cost nothing again"
    with pytest.raises(asyncio.CancelledError):  # a cancelled stream gives its place back too
        async with service.conversation("c") as conv, conv.events():
            raise asyncio.CancelledError
    assert not kernel.observed


async def test_cancelling_a_stream_cancels_its_work(kernel):
    service = Service(Recall("a", kernel=kernel))
    async with service.conversation("c") as conv, conv.events() as events:
        seen = events.during(conv.agent("a")("sleep:30"))
        await asyncio.wait_for(seen.__anext__(), 5)  # the run began
        await seen.aclose()
        assert events.task is not None and events.task.cancelled()


async def test_a_stream_loses_no_event_and_keeps_their_order(kernel):
    class Chatty(aopkit.Agent):
        async def reply(self, msg):
            for i in range(500):
                self.kernel.emit(ReplyChunk(agent=self.name, text=str(i)))
                if i % 7 == 0:
                    await asyncio.sleep(0)
            return "done"

    service = Service(Chatty("a", kernel=kernel))

    async def stream(conversation: str) -> list[str]:
        async with service.conversation(conversation) as conv, conv.events() as events:
            seen = events.during(conv.agent("a")("go"))
            return [e.text async for e in seen if isinstance(e, ReplyChunk)]

    for chunks in await asyncio.gather(*(stream(f"c{n}") for n in range(5))):
        assert chunks == [str(i) for i in range(500)]


async def test_cancelled_again_while_saving_the_turn_still_saves_before_the_next(kernel):
    saving = asyncio.Event()

    class SlowStore:
        def __init__(self) -> None:
            self.states: dict[str, dict] = {}

        async def save(self, session_id, states):
            saving.set()
            await asyncio.sleep(0.3)
            self.states.setdefault(session_id, {}).update(states)

        async def load(self, session_id):
            return dict(self.states.get(session_id, {}))

    service = Service(Recall("a", kernel=kernel), store=SlowStore())
    turn = asyncio.create_task(ask(service, "c", "one"))
    await asyncio.wait_for(saving.wait(), 5)
    for _ in range(3):  # a client, a server shutdown, a timeout...
        turn.cancel()
        await asyncio.sleep(0.01)
    with pytest.raises(asyncio.CancelledError):
        await turn
    assert await ask(service, "c", "two") == "one|two"


async def test_two_services_on_one_store_keep_both_turns_of_one_conversation(kernel, tmp_path):
    """Two server processes on one SQLite file (two services, two store objects: their claims
    exclude each other as two processes' do): neither turn is lost to the other's save."""
    store = aopkit.SQLiteStore(tmp_path / "s.db")
    first, second = (
        Service(Recall("a", kernel=kernel), store=aopkit.SQLiteStore(tmp_path / "s.db"))
        for _ in range(2)
    )
    slow = asyncio.create_task(ask(first, "c", "sleep:0.2"))
    await held(store, "session:c")  # the first turn is loading or running
    assert await ask(second, "c", "x") == "sleep:0.2|x", "the second turn waited for the first"
    assert await slow == "sleep:0.2"
    assert await ask(first, "c", "y") == "sleep:0.2|x|y"
    second.claim_wait = 0.05
    slow = asyncio.create_task(ask(first, "c", "sleep:0.5"))
    await held(store, "session:c")
    with pytest.raises(ConversationBusy, match="conversation 'c' is busy: another server"):
        await ask(second, "c", "z")
    await slow
    assert await ask(second, "c", "w") == "sleep:0.2|x|y|sleep:0.5|w", "nothing of z was kept"
