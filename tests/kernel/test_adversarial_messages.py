"""Strings as messages, made hostile: text that could never be stored or sent is refused where
it is given, naming the argument, before anything is stored; odd but valid text goes through
and survives a save and a load."""

from __future__ import annotations

import asyncio

import pytest

import aopkit
from aopkit import Agent, JSONFileStore, ModelAgent, Msg, MsgHub, load_session, save_session
from aopkit.errors import AopkitError, EncodeError


class Echo(Agent):
    async def reply(self, msg):
        return Msg(self.name, "echo", "assistant")


LONE = ["\ud800", "before \udfff after", "x" * 1000 + "\udbff"]


@pytest.mark.parametrize("text", LONE, ids=["high", "low", "late"])
async def test_a_str_holding_a_lone_surrogate_is_refused_where_it_is_given(kernel, text):
    echo = Echo("echo", kernel=kernel)
    checks = [
        (lambda: echo(text), "echo(msg)"),
        (lambda: echo.observe(text), "echo.observe(msg)"),
        (lambda: echo(["fine", text]), "echo(msg)[1]"),
        (lambda: aopkit.sequential([echo], text), "sequential(msg)"),
        (lambda: aopkit.fanout([echo], text), "fanout(msg)"),
        (lambda: kernel.model("scripted:x")(text), "messages"),
    ]
    for call, where in checks:
        with pytest.raises(EncodeError, match="lone surrogate") as info:
            await call()
        assert str(info.value).startswith(where), str(info.value)
    with pytest.raises(AopkitError, match=r"^MsgHub\(announcement\): lone surrogate"):
        MsgHub([echo], announcement=text)
    with pytest.raises(AopkitError, match=r"^Memory.add\(msg\): lone surrogate"):
        aopkit.Memory().add(text)
    async with MsgHub([echo], name="room") as hub:
        with pytest.raises(AopkitError, match="lone surrogate"):
            await hub.broadcast(text)
    assert len(echo.memory) == 0, "nothing was stored on the way"


ODD = ["", " ", "\x00nul", "😀 and \u202e reversed", "\n" * 100, "x" * 2_000_000]


async def test_odd_but_valid_text_is_stored_and_loaded_back_whole(kernel, tmp_path):
    model = kernel.model("scripted:m", responses=["ok"] * len(ODD))
    agent = ModelAgent("a", model, kernel=kernel)
    for text in ODD:
        await agent(text)
    store = JSONFileStore(tmp_path / "sessions")
    await save_session(store, "s", agent)
    again = ModelAgent("a", kernel.model("scripted:m"), kernel=kernel)
    await load_session(store, "s", again)
    assert [m.text for m in again.memory] == [m.text for m in agent.memory]
    assert [m.text for m in again.memory if m.role == "user"] == ODD


async def test_a_msg_subclass_is_a_message(kernel):
    class Note(Msg):
        pass

    echo = Echo("echo", kernel=kernel)
    note = Note("user", "hi", "user")
    await echo(note)
    assert echo.memory[0] is note


async def test_many_tasks_giving_strs_to_one_agent_store_each_once(kernel):
    echo = Echo("echo", kernel=kernel)
    await asyncio.gather(*(echo(f"message {i}") for i in range(50)))
    texts = [m.text for m in echo.memory if m.role == "user"]
    assert sorted(texts) == sorted(f"message {i}" for i in range(50))
