"""A ``str`` is a user message wherever a message is expected; anything else that is not a
message is an error naming the argument, never ``'str' object has no attribute 'id'``."""

from __future__ import annotations

import pytest

import aopkit
from aopkit import Agent, MessageTypeError, Msg, MsgHub, ReActAgent, UserAgent


class Echo(Agent):
    """Replies with the text of the last message it holds."""

    async def reply(self, msg):
        last = self.memory[-1] if len(self.memory) else None
        return Msg(self.name, f"echo: {last.text if last else ''}", "assistant")


class Raw(Agent):
    """Keeps what its reply() and observe() were given, to check what they receive."""

    def __init__(self, name, **kwargs):
        super().__init__(name, **kwargs)
        self.got = []

    async def reply(self, msg):
        self.got.append(msg)
        return Msg(self.name, "ok", "assistant")

    async def observe(self, msg):
        self.got.append(msg)
        await super().observe(msg)


def is_user_text(msg, text):
    return isinstance(msg, Msg) and (msg.name, msg.role, msg.text) == ("user", "user", text)


async def test_agent_call_reply_and_observe_take_a_str(kernel):
    echo = Echo("echo", kernel=kernel)
    said = await echo("hello")
    assert said.text == "echo: hello"
    assert is_user_text(echo.memory[0], "hello")
    await echo.observe("noted")
    assert is_user_text(echo.memory[-1], "noted")
    raw = Raw("raw", kernel=kernel)
    await raw.reply("direct")
    await raw.observe("seen")
    await raw(["one", Msg("bob", "two", "assistant")])
    assert is_user_text(raw.got[0], "direct") and is_user_text(raw.got[1], "seen")
    assert is_user_text(raw.got[2][0], "one") and raw.got[2][1].name == "bob"


async def test_overrides_of_call_in_subclasses_take_a_str_too(kernel):
    class Wrapped(Echo):
        async def __call__(self, msg=None, **kwargs):
            self.seen = msg
            return await super().__call__(msg, **kwargs)

    agent = Wrapped("w", kernel=kernel)
    await agent("hi")
    assert is_user_text(agent.seen, "hi")


async def test_hub_announcement_broadcast_and_pipelines_take_a_str(kernel):
    a, b = Echo("a", kernel=kernel), Echo("b", kernel=kernel)
    async with MsgHub([a, b], announcement="Topic: tea") as hub:
        await hub.broadcast("a word from outside")
        assert is_user_text(a.memory[0], "Topic: tea")
        assert is_user_text(b.memory[1], "a word from outside")
        last = await aopkit.sequential([a, b], "go")
        assert last.name == "b"
        replies = await aopkit.fanout([a, b], "all of you")
        assert [r.name for r in replies] == ["a", "b"]
    async with MsgHub([a, b], announcement=["one", "two"]):
        assert [m.text for m in b.memory][-2:] == ["one", "two"]


async def test_memory_and_models_take_a_str(kernel):
    memory = aopkit.Memory()
    memory.add("remember me")
    assert is_user_text(memory[0], "remember me")
    memory.extend("whole")  # not five messages of one letter
    assert is_user_text(memory[1], "whole") and len(memory) == 2
    model = kernel.model("scripted:x", responses=["fine", "also fine"])
    assert (await model("how are you?")).text == "fine"
    assert is_user_text(model.calls[0]["messages"][0], "how are you?")
    await model(["first", Msg("bot", "second", "assistant")])
    assert is_user_text(model.calls[1]["messages"][0], "first")


async def test_standard_agents_take_a_str(kernel):
    react = ReActAgent("r", kernel.model("scripted:r", responses=["done"]), kernel=kernel)
    assert (await react("do it")).text == "done"

    async def typed(agent, msg):
        return "typed by a human"

    user = UserAgent("you", input=typed, kernel=kernel)
    assert (await user("your turn")).text == "typed by a human"


WRONG = [42, 3.5, object(), b"bytes", {"text": "hi"}]


@pytest.mark.parametrize("value", WRONG, ids=lambda v: type(v).__name__)
async def test_what_is_not_a_message_is_an_error_naming_the_argument(kernel, value):
    echo = Echo("echo", kernel=kernel)
    checks = [
        (lambda: echo(value), "echo(msg)"),
        (lambda: echo.reply(value), "echo.reply(msg)"),
        (lambda: echo.observe(value), "echo.observe(msg)"),
        (lambda: echo([Msg("u", "fine", "user"), value]), "echo(msg)[1]"),
        (lambda: aopkit.sequential([echo], value), "sequential(msg)"),
        (lambda: aopkit.fanout([echo], value), "fanout(msg)"),
        (lambda: kernel.model("scripted:x")(value), "messages"),
        (lambda: kernel.model("scripted:x")(["ok", value]), "messages[1]"),
    ]
    for call, where in checks:
        with pytest.raises(MessageTypeError) as info:
            await call()
        assert str(info.value).startswith(where), str(info.value)
        assert type(value).__name__ in str(info.value)
        assert isinstance(info.value, TypeError)  # what a Python developer expects
    with pytest.raises(MessageTypeError, match=r"^MsgHub\(announcement\)"):
        MsgHub([echo], announcement=value)
    with pytest.raises(MessageTypeError, match=r"^Memory.add\(msg\)"):
        aopkit.Memory().add(value)
    async with MsgHub([echo], name="room") as hub:
        with pytest.raises(MessageTypeError, match=r"hub 'room': broadcast\(msg\)"):
            await hub.broadcast(value)
    assert len(echo.memory) == 0, "nothing was stored on the way"


async def test_none_is_no_message_where_one_is_required(kernel):
    echo = Echo("echo", kernel=kernel)
    async with MsgHub([echo]) as hub:
        with pytest.raises(MessageTypeError, match="broadcast"):
            await hub.broadcast(None)
    with pytest.raises(MessageTypeError, match=r"Memory\.add"):
        aopkit.Memory().add(None)
    assert (await echo(None)).text == "echo: "  # an agent may be asked with no input


async def test_a_pre_reply_hook_may_return_a_str(kernel):
    echo = Echo("echo", kernel=kernel)
    echo.add_hook("pre_reply", lambda agent, msg: "rewritten")
    assert (await echo("original")).text == "echo: rewritten"
    echo.add_hook("pre_reply", lambda agent, msg: 7)
    with pytest.raises(MessageTypeError, match="pre_reply hook"):
        await echo("original")


async def test_pipelines_and_hubs_name_what_is_not_an_agent(kernel):
    echo = Echo("echo", kernel=kernel)
    with pytest.raises(aopkit.ConfigurationError, match=r"sequential\(agents\)\[1\]"):
        await aopkit.sequential([echo, "bob"], "hi")
    with pytest.raises(aopkit.ConfigurationError, match=r"fanout\(agents\)"):
        await aopkit.fanout(echo, "hi")
    with pytest.raises(aopkit.ConfigurationError, match=r"MsgHub\(participants\)\[0\]"):
        MsgHub(["alice"])
    hub = MsgHub([echo])
    with pytest.raises(aopkit.ConfigurationError, match=r"MsgHub.add\(\)\[0\]"):
        hub.add(42)


async def test_text_given_to_an_agent_is_announced_once(kernel):
    from aopkit.events import MessageSent

    class Sent:
        def __init__(self):
            self.texts = []

        @aopkit.hookimpl
        def event(self, event):
            if isinstance(event, MessageSent):
                self.texts.append(event.msg.text)

    class Overriding(Echo):
        async def __call__(self, msg=None, **kwargs):
            return await super().__call__(msg, **kwargs)

    sent = Sent()
    kernel.register(sent, "sent")
    await Echo("e", kernel=kernel)("plain")
    await Overriding("o", kernel=kernel)("overridden")
    await Echo("e2", kernel=kernel).observe("seen")
    given = Msg("host", "a message object", "user")
    await Echo("e3", kernel=kernel)(given)  # a message the program made is its own to announce
    assert sent.texts == [
        "plain",
        "echo: plain",
        "overridden",
        "echo: overridden",
        "seen",
        "echo: a message object",
    ]


async def test_text_given_to_overrides_is_announced_only_where_it_enters(kernel):
    """An observe override announces text once; reply() is not an entry into the conversation
    and announces nothing; of a list, only the messages made from text are announced."""
    from aopkit.events import MessageSent

    class Sent:
        def __init__(self):
            self.texts = []

        @aopkit.hookimpl
        def event(self, event):
            if isinstance(event, MessageSent):
                self.texts.append(event.msg.text)

    class Watching(Echo):
        async def observe(self, msg):
            await super().observe(msg)

    sent = Sent()
    kernel.register(sent, "sent")
    watcher = Watching("w", kernel=kernel)
    await watcher.observe("watched")
    own = Msg("host", "made by the program", "user")
    await watcher.observe([own, "typed"])
    await Echo("r", kernel=kernel).reply("direct")  # not stored, not announced
    assert sent.texts == ["watched", "typed"]
    assert [m.text for m in watcher.memory.messages()] == ["watched", own.text, "typed"]
