"""The Ray host's saved state, read back without Ray: a foreign or damaged state is a clear
StoreError, and the host's own state restores."""

import pytest

from aopkit import JSONFileStore, Msg, StoreError
from aopkit_ray._host import AgentHost, KernelSpec

from ...kernel.helpers import Echo


def host(store):
    return AgentHost(KernelSpec(), {"a": lambda k: Echo("a", kernel=k)}, store, "s", 5.0)


@pytest.mark.parametrize(
    "saved",
    [
        {"name": "a", "memory": []},  # a plain agent state, saved by save_session
        {"agent": [], "next": 1, "last_reply": None},
        {"agent": {"name": "a", "memory": []}, "next": "1", "last_reply": None},
        {"agent": {"name": "a", "memory": []}, "next": 1, "last_reply": [1]},
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


async def test_a_pool_host_counts_each_failing_agent_and_answers_for_the_others():
    """The actor side of ``reply_all``, without Ray: one failing agent is named in the
    failures, the others' replies come back in order."""
    from .agents import Failing, Guesser

    recipes = {
        "g0": lambda k: Guesser("g0", 1, k),
        "bad": lambda k: Failing("bad", kernel=k),
        "g1": lambda k: Guesser("g1", 2, k),
    }
    actor = AgentHost(KernelSpec(), recipes, None, "s", 5.0)
    question = actor.kernel.codec.dump(Msg("host", "q", "user", metadata={"average": 9.0}))
    dumped, failures, events = await actor.reply_all({"g0": 0, "bad": 0, "g1": 0}, question, False)
    assert [d["name"] for d in dumped] == ["g0", "g1"]
    assert failures == {"bad": "ValueError: no answer today"} and events == []
