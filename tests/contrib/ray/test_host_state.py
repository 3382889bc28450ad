"""The Ray host without Ray: its saved state (a foreign or damaged state is a clear
StoreError, the host's own state restores) and the order of each agent's calls."""

import asyncio
import pickle

import attrs
import pytest

from aopkit import JSONFileStore, Msg, StoreError
from aopkit_ray._columns import replied, unpack
from aopkit_ray._host import AgentHost, KernelSpec

from ...kernel.helpers import Echo


def host(store, run="run-1"):
    return AgentHost(KernelSpec(), {"a": lambda k: Echo("a", kernel=k)}, store, "s", 5.0, run)


def counters(names, order_timeout=5.0):
    from .agents import Counter

    recipes = {n: lambda k, n=n: Counter(n, kernel=k) for n in names}
    return AgentHost(KernelSpec(), recipes, None, "s", order_timeout, "run-1")


@pytest.mark.parametrize(
    "saved",
    [
        {"name": "a", "memory": []},  # a plain agent state, saved by save_session
        {"agent": [], "next": 1, "last_reply": None},
        {"agent": {"name": "a", "memory": []}, "next": "1", "last_reply": None},
        {"agent": {"name": "a", "memory": []}, "next": 1, "last_reply": [1]},
        {"agent": {"name": "a", "memory": []}, "next": 1, "last_reply": [1, "not a message"]},
    ],
)
async def test_a_state_the_host_did_not_save_is_a_store_error(tmp_path, saved):
    store = JSONFileStore(tmp_path)
    await store.save("s", {"a": saved})
    with pytest.raises(StoreError, match=r"session 's': the state saved for agent 'a' is not"):
        await host(store)._prepare(events=False)


async def test_the_hosts_own_state_restores(tmp_path):
    store = JSONFileStore(tmp_path)
    first = host(store)
    await first._prepare(events=False)
    await first.slots["a"].agent.observe(Msg("u", "remember me", "user"))
    first.slots["a"].next = 3
    await first._save(["a"])
    second = host(store)
    await second._prepare(events=False)
    assert second.slots["a"].next == 3
    assert [m.text for m in second.slots["a"].agent.memory.messages()] == ["remember me"]


async def test_a_new_pool_on_a_saved_session_takes_its_agents_and_numbers_its_own_calls(tmp_path):
    """A later program's pool on the same store and session: the agents go on with what they
    had, and its first call (number 0) is applied, not taken for one applied already."""
    store = JSONFileStore(tmp_path)
    first = host(store)
    codec = first.kernel.codec
    await first.observe(("a", 0, False, codec.dump(Msg("u", "remember me", "user")), False, None))
    await first.reply(("a", 1, False, codec.dump(Msg("u", "hi", "user")), False, None))
    later = host(store, run="run-2")
    dumped, _, _ = await later.reply(
        ("a", 0, False, codec.dump(Msg("u", "again", "user")), False, None)
    )
    assert codec.load(dumped).text == "a: again"
    texts = [m.text for m in later.slots["a"].agent.memory.messages()]
    assert texts == ["remember me", "hi", "a: hi", "again", "a: again"]
    assert later.slots["a"].next == 1


async def test_a_new_hosts_first_call_waits_for_the_calls_before_it():
    """An async actor may start call 1 before call 0 (both queued before it was up): call 1
    waits, and both are applied in the order they were made."""
    actor = counters(["c0"])
    codec = actor.kernel.codec
    second = asyncio.ensure_future(
        actor.observe(("c0", 1, False, codec.dump(Msg("u", "second", "user")), False, None))
    )
    await asyncio.sleep(0.01)
    assert not second.done()
    await actor.observe(("c0", 0, False, codec.dump(Msg("u", "first", "user")), False, None))
    await second
    assert [m.text for m in actor.slots["c0"].agent.memory] == ["first", "second"]


async def test_a_pool_host_counts_each_failing_agent_and_answers_for_the_others():
    """The actor side of ``reply_all``, without Ray: one failing agent is named in the
    failures, the others' replies come back in order."""
    from .agents import Failing, Guesser

    recipes = {
        "g0": lambda k: Guesser("g0", 1, k),
        "bad": lambda k: Failing("bad", kernel=k),
        "g1": lambda k: Guesser("g1", 2, k),
    }
    actor = AgentHost(KernelSpec(), recipes, None, "s", 5.0, "run-1")
    question = actor.kernel.codec.dump(Msg("host", "q", "user", metadata={"average": 9.0}))
    columns, failures, events = await actor.reply_all([0, 0, 0], question, False, [])
    agents = replied(["g0", "bad", "g1"], failures)  # as the driver works them out
    assert [m.name for m in unpack(columns, actor.kernel.codec, agents)] == ["g0", "g1"]
    assert failures == {"bad": "ValueError: no answer today"} and events == []


async def test_a_pool_host_keeps_each_agents_call_order_around_its_bulk_calls():
    """A bulk call takes the fast path only when it is every agent's next call: a later call
    that came first waits for it, and a bulk call Ray retries after a restart gets the replies
    already given."""
    actor = counters(["c0", "c1"])
    codec = actor.kernel.codec

    async def bulk(seqs: list[int], text: str) -> list[str]:
        columns, failures, _ = await actor.reply_all(
            seqs, codec.dump(Msg("host", text, "user")), False, []
        )
        assert failures == {}
        return [m.text for m in unpack(columns, codec, ["c0", "c1"])]

    assert await bulk([0, 0], "a") == ["c0#1: saw a", "c1#1: saw a"]
    later = actor.observe(("c0", 2, False, codec.dump(Msg("host", "after", "user")), False, None))
    waiting = asyncio.ensure_future(later)
    await asyncio.sleep(0)  # call 2 of c0 came first: it waits for call 1, the bulk reply
    assert await bulk([1, 1], "b") == ["c0#3: saw a,c0#1,b", "c1#3: saw a,c1#1,b"]
    await waiting
    assert [m.text.split(":")[0] for m in actor.slots["c0"].agent.memory] == [
        *("a", "c0#1", "b", "c0#3", "after")
    ]
    assert await bulk([1, 1], "b") == ["c0#3: saw a,c0#1,b", "c1#3: saw a,c1#1,b"]  # retried
    assert await bulk([3, 2], "c") == [
        "c0#6: saw a,c0#1,b,c0#3,after,c",
        "c1#5: saw a,c1#1,b,c1#3,c",
    ]


async def test_a_bulk_call_does_not_wait_for_a_call_the_driver_gave_up_on():
    """``resync`` names the agents whose earlier call the driver gave up on (it may never
    come): their bulk call is their next; the others' still wait for what they miss."""
    actor = counters(["c0", "c1"], order_timeout=0.2)
    codec = actor.kernel.codec

    async def bulk(seqs: list[int], text: str, resync: list[int]) -> tuple[list[str], dict]:
        question = codec.dump(Msg("host", text, "user"))
        columns, failures, _ = await actor.reply_all(seqs, question, False, resync)
        agents = [name for name in ("c0", "c1") if name not in failures]
        return [m.text for m in unpack(columns, codec, agents)], failures

    assert await bulk([0, 0], "a", []) == (["c0#1: saw a", "c1#1: saw a"], {})
    texts, failures = await bulk([2, 2], "b", [1])  # call 1 of each never came
    assert texts == ["c1#3: saw a,c1#1,b"]
    assert failures == {
        "c0": "RemoteAgentError: agent 'c0': call 2 waited 0.2s for call 1, which never arrived"
    }
    texts, failures = await bulk([3, 3], "c", [0])
    assert not failures and texts == ["c0#3: saw a,c0#1,c", "c1#5: saw a,c1#1,b,c1#3,c"]


def test_replies_cross_as_columns_and_come_back_equal():
    """Text and blocks, names their agents' or not: every reply comes back equal. Names that
    are the agents' do not cross (the driver's own strings are used); others do."""
    from aopkit import Kernel
    from aopkit.blocks import TextBlock, ToolUseBlock
    from aopkit_ray._columns import pack

    codec = Kernel(environ={}).codec
    names = ("alice", "bob")
    plain = [Msg(n, "x", "assistant", metadata={"guess": 1.5, "seen": [1, "x"]}) for n in names]
    mixed = [
        plain[0],
        Msg("bob", [TextBlock("hi"), ToolUseBlock("t1", "search", {"q": "x"})], "assistant"),
    ]
    agents = ["".join(["al", "ice"]), "".join(["b", "ob"])]  # equal to the names, not the same
    assert not any(a is n for a, n in zip(agents, names, strict=True))
    for replies in (plain, mixed):
        payload = pack(replies, codec, agents)
        assert pickle.loads(payload)[0] is None  # the names stayed behind
        back = unpack(payload, codec, agents)
        assert back == replies and all(m.name is a for m, a in zip(back, agents, strict=True))
        renamed = [attrs.evolve(replies[0], name="narrator"), replies[1]]
        payload = pack(renamed, codec, agents)
        assert pickle.loads(payload)[0] == ["narrator", "bob"]
        assert unpack(payload, codec, agents) == renamed


def test_columns_for_other_agents_than_the_driver_names_are_refused():
    from aopkit import AopkitError, Kernel
    from aopkit_ray._columns import pack

    codec = Kernel(environ={}).codec
    payload = pack([Msg("a", "x", "assistant"), Msg("b", "y", "assistant")], codec, ["a", "b"])
    with pytest.raises(AopkitError, match="2 replies came back for the 1 agents named"):
        unpack(payload, codec, ["a"])


def test_a_round_of_replies_is_rebuilt_with_the_collector_paused():
    """The driver rebuilds a pool's replies in bulk: no collection runs while it does (each
    would walk every reply the driver keeps), and the collector runs again afterwards (once,
    as it resumes: without the pause, 60,000 new objects set it off about 85 times)."""
    import gc

    from aopkit import Kernel
    from aopkit_ray._columns import pack

    codec = Kernel(environ={}).codec
    agents = [f"g{i}" for i in range(30_000)]
    payload = pack(
        [Msg(name, "", "assistant", metadata={"i": i}) for i, name in enumerate(agents)],
        codec,
        agents,
    )
    assert isinstance(payload, bytes)  # Ray carries bytes: they are unpickled in unpack
    started: list[int] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(watch)
    try:
        rebuilt = unpack(payload, codec, agents)
    finally:
        gc.callbacks.remove(watch)
    assert len(started) <= 1 and gc.isenabled()
    assert [m.metadata["i"] for m in rebuilt] == list(range(30_000))


def test_reply_metadata_crosses_as_ray_would_carry_it_classes_defined_in_a_function_too():
    """The columns are pickled by the actor itself: what Ray's own pickling carried (an
    instance of a class made in a function, which plain pickle refuses) still crosses."""
    from aopkit import Kernel
    from aopkit_ray._columns import pack

    class Found:
        def __init__(self, value: int) -> None:
            self.value = value

    codec = Kernel(environ={}).codec
    payload = pack([Msg("a", "x", "assistant", metadata={"found": Found(7)})], codec, ["a"])
    [back] = unpack(payload, codec, ["a"])
    assert type(back.metadata["found"]).__name__ == "Found" and back.metadata["found"].value == 7
