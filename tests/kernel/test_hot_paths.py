"""Work the hot paths must not do per reply or per call (docs/benchmarks.md): each check fails
if the work comes back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import aopkit
from aopkit import message as message_module
from aopkit.errors import MessageTypeError
from aopkit.usage import current_scope, estimate_tokens


def test_estimate_counts_each_message_once(monkeypatch: pytest.MonkeyPatch) -> None:
    history = [
        aopkit.Msg("a", [aopkit.ToolUseBlock(f"c{i}", "f", {"x": i})], "assistant")
        for i in range(50)
    ]
    first = estimate_tokens(history)
    counted = []
    real = json.dumps
    monkeypatch.setattr(
        message_module.json, "dumps", lambda *a, **k: counted.append(1) or real(*a, **k)
    )
    assert estimate_tokens(history) == first
    assert estimate_tokens([*history, aopkit.Msg("u", "more", "user")]) >= first
    assert counted == []  # nothing serialised again: the counts were kept


def test_an_evolved_message_is_counted_afresh() -> None:
    msg = aopkit.Msg("u", "abcd", "user")
    assert estimate_tokens([msg]) == 1
    import attrs

    assert estimate_tokens([attrs.evolve(msg, content="abcd" * 10)]) == 10


async def test_a_reply_without_model_calls_makes_no_account() -> None:
    seen = []

    class Echo(aopkit.Agent):
        async def reply(self, msg: object) -> aopkit.Msg:
            seen.append(current_scope())
            return aopkit.Msg(self.name, "ok", "assistant")

    kernel = aopkit.Kernel(environ={})
    reply = await Echo("e", kernel=kernel)("hi")
    assert seen[0] is not None and seen[0].reply is None
    assert "usage" not in reply.metadata


async def test_overrides_still_take_text_and_name_the_argument() -> None:
    class Echo(aopkit.Agent):
        async def reply(self, msg: object) -> aopkit.Msg:
            assert isinstance(msg, aopkit.Msg)
            return aopkit.Msg(self.name, msg.text, "assistant")

    agent = Echo("echo", kernel=aopkit.Kernel(environ={}))
    assert (await agent.reply("hi")).text == "hi"
    assert (await agent.reply(aopkit.Msg("u", "x", "user"))).text == "x"
    with pytest.raises(MessageTypeError, match=r"^echo\.reply\(msg\)"):
        await agent.reply(5)  # type: ignore[arg-type]
    hub_error = r"^hub 'h\{0\}': broadcast\(msg\)"
    async with aopkit.MsgHub([agent], name="h{0}") as hub:
        with pytest.raises(MessageTypeError, match=hub_error):
            await hub.broadcast(5)  # type: ignore[arg-type]


def test_kernel_does_not_load_command_modules() -> None:
    code = (
        "import sys, aopkit; aopkit.Kernel()\n"
        "loaded = [m for m in ('aopkit.cli', 'aopkit.cli_run', 'aopkit.cli_chat', "
        "'aopkit.run_options', 'aopkit.terminal', 'aopkit.testing', 'aopkit_replay.run', "
        "'aopkit_serve._command', 'aopkit_serve._app', 'aiohttp.web') "
        "if m in sys.modules]\n"
        "print(loaded)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


def test_run_options_still_load_when_used() -> None:
    kernel = aopkit.Kernel(environ={})
    import argparse

    parser = argparse.ArgumentParser()
    options = [kernel.run_options[name] for name in kernel.run_options]
    assert {"chat", "trace", "usage", "cassette"} <= {o.name for o in options}
    for option in options:
        option.arguments(parser)
    args = parser.parse_args([])
    assert all(option.start(args) is None for option in options)


async def test_a_formatter_asks_whether_its_builder_replays_once_per_class(monkeypatch) -> None:
    """A protocol check costs microseconds, more than formatting a short message: it is made
    once per builder class, not on every model call."""
    from typing import Any, Protocol, runtime_checkable

    from aopkit import formatting
    from aopkit.models import Capabilities

    checks = []

    class Counting(type(Protocol)):  # type: ignore[misc]
        def __instancecheck__(cls, other: object) -> bool:
            checks.append(other)
            return super().__instancecheck__(other)

        def __subclasscheck__(cls, other: type) -> bool:
            checks.append(other)
            return super().__subclasscheck__(other)

    @runtime_checkable
    class Replaying(Protocol, metaclass=Counting):
        async def recorded(self, msg: aopkit.Msg) -> Any: ...
        def replay(self, made: Any) -> None: ...

    monkeypatch.setattr(formatting, "Replaying", Replaying)
    formatting._replaying.cache_clear()
    try:
        async with aopkit.Kernel(environ={}) as kernel:
            formatter = kernel.formatters["anthropic"]
            msgs = [aopkit.Msg("u", "hi", "user")]
            first = await formatter.format(msgs, capabilities=Capabilities())
            for _ in range(3):
                assert await formatter.format(msgs, capabilities=Capabilities()) == first
    finally:
        formatting._replaying.cache_clear()
    assert len(checks) == 1
