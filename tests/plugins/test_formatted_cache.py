"""Messages keep what each formatter made of them, so a model call formats only what is new.
A cache is only worth it if it is never stale: with it, every provider's payload must be what
formatting fresh copies of the same messages gives, whatever else was formatted before (other
formatters, other options and capabilities, the message at another place, a history edited),
and media are read again at each call."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import pickle
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aopkit
from aopkit import (
    Base64Source,
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from aopkit.blocks import UnknownBlock
from aopkit.formatting import keep, kept
from aopkit.models import Capabilities

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(16))).decode()
CAPABILITIES = (
    Capabilities(),
    Capabilities(media=frozenset({"image", "audio"})),
    Capabilities(media=frozenset({"image"}), media_urls=True),
)
NAMES = ("alice", "bob", "helper", "Dr. Who", "tools", "ünï")


@pytest.fixture(scope="module")
def kernel() -> aopkit.Kernel:
    return aopkit.Kernel(environ={})


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "pic.png"
    path.write_bytes(base64.b64decode(PNG))
    return path


def formatters(kernel: aopkit.Kernel) -> list[Any]:
    """Every first-party formatter, and the OpenAI one with each of its options."""
    found = [kernel.formatters[name] for name in kernel.formatters if name != "acme"]
    openai = kernel.formatters["openai"]
    found += [
        openai.configured(strict=True, send_reasoning=False),
        openai.configured(strict=False, send_reasoning=True),
    ]
    return found


texts = st.text(alphabet="ab €\n{}\"'", max_size=12)
names = st.sampled_from(NAMES)


@st.composite
def steps(draw: st.DrawFn, image: str) -> list[Msg]:
    """One stretch of a history: a message, or a tool exchange (the calls, then their results
    in one message), a few of them with media."""
    kind = draw(st.sampled_from(["text", "blocks", "system", "thinking", "tools", "media"]))
    name = draw(names)
    if kind == "text":
        return [Msg(name, draw(texts), draw(st.sampled_from(["user", "assistant"])))]
    if kind == "system":
        return [Msg("system", draw(texts), "system")]
    if kind == "blocks":
        blocks = [TextBlock(t) for t in draw(st.lists(texts, min_size=1, max_size=3))]
        if draw(st.booleans()):
            blocks.append(UnknownBlock("future", {"x": 1}))
        return [Msg(name, blocks, draw(st.sampled_from(["user", "assistant"])))]
    if kind == "thinking":
        extra = {"signature": "sig"} if draw(st.booleans()) else {}
        thought = ThinkingBlock(draw(texts), extra=extra)
        return [Msg(name, [thought, TextBlock(draw(texts))], "assistant")]
    source = draw(
        st.sampled_from(
            [
                Base64Source("image/png", PNG),
                URLSource(image),
                URLSource("https://example.test/a.png", "image/png"),
            ]
        )
    )
    if kind == "media":
        role = draw(st.sampled_from(["user", "assistant", "system"]))
        return [Msg(name, [TextBlock(draw(texts)), ImageBlock(source)], role)]
    count = draw(st.integers(1, 3))
    ids = [f"call_{draw(st.integers(0, 10**6))}_{i}" for i in range(count)]
    uses: list[Any] = [
        ToolUseBlock(i, "lookup", {"q": draw(texts), "n": draw(st.integers(-5, 5))})
        if draw(st.booleans())
        else ToolUseBlock(i, "lookup", {}, raw_input="{'q': broken")
        for i in ids
    ]
    results: list[Any] = []
    for i in ids:
        output: Any = draw(texts)
        if draw(st.integers(0, 3)) == 0:
            output = [TextBlock(draw(texts)), ImageBlock(source)]
        results.append(ToolResultBlock(i, "lookup", output, is_error=draw(st.booleans())))
    return [Msg(name, uses, "assistant"), Msg("tools", results, "user")]


def fresh(history: list[Msg]) -> list[Msg]:
    """The same messages as new objects, with nothing kept on them."""
    return copy.deepcopy(history)


LOOP = asyncio.new_event_loop()  # one for every example: a loop each would be most of the time


def payload(formatter: Any, history: list[Msg], caps: Capabilities) -> Any:
    async def run() -> Any:
        try:
            return await formatter.format(history, capabilities=caps, pool=None)
        except aopkit.AopkitError as exc:  # e.g. an http image where nothing may fetch it
            return ("error", type(exc).__name__, str(exc))

    return LOOP.run_until_complete(run())


def encoded(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_formatter_gives_with_the_cache_what_it_gives_without(
    kernel: aopkit.Kernel, image_file: Path, data: st.DataObject
) -> None:
    history: list[Msg] = []
    for _ in range(data.draw(st.integers(1, 8))):
        history += data.draw(steps(str(image_file)))
    every = formatters(kernel)
    order = data.draw(st.permutations(range(len(every))))
    # Every formatter, options and capabilities in a random order over the same messages, each
    # twice: what one left on the messages never shows in another's payload.
    for index in order:
        formatter = every[index]
        caps = data.draw(st.sampled_from(CAPABILITIES))
        want = encoded(payload(formatter, fresh(history), caps))
        assert encoded(payload(formatter, history, caps)) == want, formatter.name
        assert encoded(payload(formatter, history, caps)) == want, formatter.name
    # The memory edited: a message removed, one replaced by a derived one, the history cut
    # at the front (compaction); the messages left are cached at other places now.
    edited = list(history)
    if len(edited) > 1:
        del edited[data.draw(st.integers(0, len(edited) - 1))]
        at = data.draw(st.integers(0, len(edited) - 1))
        edited[at] = attrs.evolve(edited[at], name=data.draw(names))
        edited = edited[data.draw(st.integers(0, len(edited) - 1)) :]
    for formatter in every:
        caps = data.draw(st.sampled_from(CAPABILITIES))
        want = encoded(payload(formatter, fresh(edited), caps))
        assert encoded(payload(formatter, edited, caps)) == want, formatter.name


async def test_a_message_at_two_places_and_for_two_speaker_names(kernel: aopkit.Kernel) -> None:
    """The same message after media held for a user message, and alone; the OpenAI formatter
    with names and without (``strict``)."""
    answer = Msg("helper", "Here it is.", "assistant")
    shown = Msg(
        "helper", [TextBlock("a picture"), ImageBlock(Base64Source("image/png", PNG))], "assistant"
    )
    openai = kernel.formatters["openai"]
    caps = Capabilities(media=frozenset({"image"}))
    alone = await openai.format([answer], capabilities=caps)
    after = await openai.format([shown, answer], capabilities=caps)
    assert alone["messages"] == [{"role": "assistant", "content": "Here it is.", "name": "helper"}]
    assert after["messages"][1]["role"] == "user"  # the held picture comes before it
    assert after["messages"][2] == alone["messages"][0]
    strict = await openai.configured(strict=True, send_reasoning=False).format(
        [answer], capabilities=caps
    )
    assert strict["messages"] == [{"role": "assistant", "content": "Here it is."}]
    renamed = attrs.evolve(answer, name="other")
    again = await openai.format([renamed], capabilities=caps)
    assert again["messages"][0]["name"] == "other"


async def test_media_are_read_again_at_each_call(kernel: aopkit.Kernel, tmp_path: Path) -> None:
    path = tmp_path / "pic.png"
    path.write_bytes(b"\x89PNG first")
    msg = Msg("user", [TextBlock("see"), ImageBlock(URLSource(str(path)))], "user")
    caps = Capabilities(media=frozenset({"image"}))
    for name in kernel.formatters:
        if name == "acme":
            continue
        formatter = kernel.formatters[name]
        first = encoded(await formatter.format([msg], capabilities=caps))
        path.write_bytes(b"\x89PNG second")
        second = encoded(await formatter.format([msg], capabilities=caps))
        path.write_bytes(b"\x89PNG first")
        assert base64.b64encode(b"\x89PNG second").decode() in second, name
        assert first != second, name


@pytest.mark.parametrize("name", ["openai", "openai-responses"])
async def test_past_tool_calls_are_not_serialised_again(
    kernel: aopkit.Kernel, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    use = ToolUseBlock("c1", "lookup", {"q": "weather", "deep": {"a": [1, 2]}})
    history = [
        Msg("user", "hi", "user"),
        Msg("helper", [use], "assistant"),
        Msg("tools", [ToolResultBlock("c1", "lookup", "sunny")], "user"),
    ]
    openai = kernel.formatters[name]
    first = await openai.format(history, capabilities=Capabilities())
    import aopkit_openai.formatter as module

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("json.dumps called again for a message formatted before")

    monkeypatch.setattr(module.json, "dumps", refuse)
    assert await openai.format(history, capabilities=Capabilities()) == first


async def test_images_the_model_fetches_by_url_are_formatted_once(
    kernel: aopkit.Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's text-and-images message whose images go as http URLs holds nothing read at
    format time: the OpenAI formatter keeps it like text. An image in an assistant's message
    (shown in the next user message) is formatted at each call, as media read from a file are
    (see test_media_are_read_again_at_each_call)."""
    linked = Msg("user", [TextBlock("see"), ImageBlock(URLSource("https://x.test/a.png"))], "user")
    said = Msg("bot", [ImageBlock(URLSource("https://x.test/b.png"))], "assistant")
    history = [linked, said, Msg("user", "and?", "user")]
    openai = kernel.formatters["openai"]
    caps = Capabilities(media=frozenset({"image"}), media_urls=True)
    first = await openai.format(history, capabilities=caps)
    import aopkit_openai.formatter as module

    formatted: list[Msg] = []
    real = module._Converter.message

    async def counted(self: Any, msg: Msg) -> None:
        formatted.append(msg)
        await real(self, msg)

    monkeypatch.setattr(module._Converter, "message", counted)
    assert await openai.format(history, capabilities=caps) == first
    assert formatted == [said]


def test_a_message_made_any_way_starts_with_nothing_kept(kernel: aopkit.Kernel) -> None:
    """Every way a message is made (pickles of every protocol, a subclass, the codec)
    starts with the slot formatters read, so their first look at it raises nothing."""

    @attrs.frozen
    class Tagged(Msg):
        tag: str = attrs.field(default="t", kw_only=True)

    msg = Msg("user", "hi", "user")
    keep(msg, "key", ["formatted"])
    made = [
        Tagged("user", "hi", "user", tag="x"),
        kernel.codec.load(kernel.codec.dump(msg)),
        *(pickle.loads(pickle.dumps(msg, protocol)) for protocol in range(6)),
    ]
    for other in made:
        assert other._formatted is None and kept(other, "key") is None, type(other)
        assert other == msg or isinstance(other, Tagged)


def a_tool_history() -> list[Msg]:
    thought = ThinkingBlock(
        "hmm", extra={"reasoning_item": {"id": "rs_1", "type": "reasoning", "summary": []}}
    )
    return [
        Msg("system", "Be brief.", "system"),
        Msg("user", "What is the weather?", "user"),
        Msg("helper", [thought, ToolUseBlock("c1", "lookup", {"q": "weather"})], "assistant"),
        Msg("tools", [ToolResultBlock("c1", "lookup", "sunny")], "user"),
        Msg("helper", "Sunny.", "assistant"),
    ]


BUILDERS = {  # each formatter's builder class, whose message() formats one message
    "gemini": "aopkit_gemini.formatter",
    "gemini-multiagent": "aopkit_gemini.formatter",
    "openai-responses": "aopkit_openai.responses_formatter",
    "openai-responses-multiagent": "aopkit_openai.responses_formatter",
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
async def test_each_message_is_formatted_once_across_calls(
    kernel: aopkit.Kernel, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The Gemini and Responses formatters keep what they made of a message: a second call
    formats nothing again, a longer history only what is new, and what another formatter
    left on the messages is not taken for theirs."""
    import importlib

    history = a_tool_history()
    caps = Capabilities()
    await kernel.formatters["openai"].format(history, capabilities=caps)  # its forms kept
    formatter = kernel.formatters[name]
    first = await formatter.format(history, capabilities=caps)
    assert encoded(first) == encoded(await formatter.format(fresh(history), capabilities=caps))
    builder = importlib.import_module(BUILDERS[name])._Builder
    real = builder.message
    formatted: list[Msg] = []

    async def counted(self: Any, msg: Msg) -> None:
        formatted.append(msg)
        await real(self, msg)

    monkeypatch.setattr(builder, "message", counted)
    assert encoded(await formatter.format(history, capabilities=caps)) == encoded(first)
    assert formatted == []
    new = Msg("tools", [ToolResultBlock("c2", "lookup", "rain")], "user")
    await formatter.format([*history, new], capabilities=caps)
    assert formatted == [new]


async def test_a_changed_responses_option_is_not_served_from_the_cache(
    kernel: aopkit.Kernel,
) -> None:
    """``stored`` decides whether a reasoning item without ``encrypted_content`` goes back:
    what one setting made of a message is never what the other one sends."""
    history = a_tool_history()
    caps = Capabilities()
    plain = kernel.formatters["openai-responses"]
    stored = plain.configured(stored=True)
    for formatter, sent in [(plain, False), (stored, True), (plain, False), (stored, True)]:
        items = (await formatter.format(history, capabilities=caps))["input"]
        assert any(item.get("id") == "rs_1" for item in items) is sent


def test_nothing_kept_on_a_message_travels_with_copies_pickles_or_saves(
    kernel: aopkit.Kernel,
) -> None:
    msg = Msg("user", "hi", "user")
    keep(msg, "key", ["formatted"])
    assert kept(msg, "key") == ["formatted"]
    for other in (
        copy.copy(msg),
        copy.deepcopy(msg),
        pickle.loads(pickle.dumps(msg)),
        attrs.evolve(msg),
        attrs.evolve(msg, content="changed"),
    ):
        assert kept(other, "key") is None
    assert "formatted" not in json.dumps(kernel.codec.dump(msg))


def test_the_system_prompt_is_one_message_while_it_is_unchanged(kernel: aopkit.Kernel) -> None:
    """So it is formatted once too; a new prompt is a new message."""
    agent = aopkit.ModelAgent("judge", "scripted:x", sys_prompt="Be fair.", kernel=kernel)
    first = agent.messages()[0]
    assert agent.messages()[0] is first and first.text == "Be fair."
    agent.sys_prompt = "Be brief."
    assert agent.messages()[0].text == "Be brief."
    agent.sys_prompt = None
    assert agent.messages() == []
