"""Seeing the conversation: one call (``aopkit.show_chat``), loguru's CHAT level usable before
``import aopkit`` by its number, and a terminal user shown what the others said."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import aopkit
from aopkit import Agent, Msg, MsgHub, UserAgent


class Parrot(Agent):
    async def reply(self, msg):
        return Msg(self.name, f"{self.name} heard {self.memory[-1].text}", "assistant")


async def test_show_chat_shows_each_message_once_and_stops(kernel):
    out = io.StringIO()
    stop = aopkit.show_chat(kernel, file=out)
    assert aopkit.show_chat(kernel, file=out) is not None  # again: still once per message
    kernel.secrets.add("sk-very-secret-value")
    ada, bob = Parrot("ada", kernel=kernel), Parrot("bob", kernel=kernel)
    async with MsgHub([ada, bob], announcement="topic: sk-very-secret-value"):
        await aopkit.sequential([ada, bob])
    assert out.getvalue().splitlines() == [
        "user: topic: ***",
        "ada: ada heard topic: ***",
        "bob: bob heard ada heard topic: ***",
    ]
    stop()
    stop()  # twice is harmless
    await ada("more")
    assert len(out.getvalue().splitlines()) == 3


async def test_show_chat_defaults_to_stderr_at_call_time(kernel, capsys):
    stop = aopkit.show_chat(kernel)
    await Parrot("ada", kernel=kernel)("hi")
    stop()
    assert capsys.readouterr().err == "user: hi\nada: ada heard hi\n"  # text given is shown too


async def test_show_chat_without_a_kernel_shows_the_default_one(capsys):
    stop = aopkit.show_chat()
    try:
        await Parrot("ada")("hi")
    finally:
        stop()
    assert "ada: ada heard hi" in capsys.readouterr().err


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"AOPKIT_PLUGINS": "scripted", "PATH": ""},
    )


def test_a_chat_sink_added_before_import_by_the_level_number_works():
    done = run(
        """
        import sys
        from loguru import logger

        logger.remove()
        logger.add(sys.stdout, level=22, format="{level}|{message}")  # before import aopkit

        import asyncio
        import aopkit

        async def main():
            async with aopkit.Kernel() as kernel:
                kernel.register(aopkit.ChatLog(), "chat")
                model = kernel.model("scripted:m", responses=["pong"])
                await aopkit.ModelAgent("bot", model)("ping")

        asyncio.run(main())
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["CHAT|user: ping", "CHAT|bot: pong"]


def test_a_chat_level_defined_before_import_is_kept():
    done = run(
        """
        import sys
        from loguru import logger

        logger.remove()
        logger.level("CHAT", no=22, color="<green>")
        logger.add(sys.stdout, level="CHAT", format="{level.no}|{message}")

        import aopkit

        logger.log(aopkit.CHAT, "hello")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "22|hello\n"


def test_the_chat_level_name_before_import_is_loguru_s_error_which_the_docs_explain():
    done = run(
        """
        import sys
        from loguru import logger

        logger.add(sys.stdout, level="CHAT")
        """
    )
    assert "Level 'CHAT' does not exist" in done.stderr  # why docs say level=22


async def test_a_terminal_user_sees_what_the_others_said_since_its_last_turn(
    kernel, monkeypatch, capsys
):
    answers = iter(["I prefer tea.", "Agreed."])

    async def ask(prompt):
        return next(answers)

    monkeypatch.setattr("aopkit.terminal.ask", ask)
    you = UserAgent("you", kernel=kernel)
    ada, bob = Parrot("ada", kernel=kernel), Parrot("bob", kernel=kernel)
    async with MsgHub([ada, bob, you], announcement="Tea or coffee?"):
        await aopkit.sequential([ada, bob, you])
        first = capsys.readouterr().out.splitlines()
        await aopkit.sequential([ada, you])
        second = capsys.readouterr().out.splitlines()
    assert first == [
        "user: Tea or coffee?",
        "ada: ada heard Tea or coffee?",
        "bob: bob heard ada heard Tea or coffee?",
    ]
    assert second == ["ada: ada heard I prefer tea."]  # its own words are not repeated


async def test_unseen_is_scrubbed_and_survives_a_cleared_memory(kernel):
    kernel.secrets.add("sk-very-secret-value")
    you = UserAgent("you", input=lambda agent, msg: None, kernel=kernel)
    await you.observe("key sk-very-secret-value")
    assert you.unseen() == ["user: key ***"]
    assert you.unseen() == []
    you.memory.clear()
    await you.observe("again")
    assert you.unseen() == ["user: again"]
