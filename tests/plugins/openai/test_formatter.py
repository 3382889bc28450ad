from __future__ import annotations

import base64

import attrs
import pytest
from aiohttp import web

from aopkit import Msg, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock, UnknownBlock
from aopkit.blocks import AudioBlock, Base64Source, ImageBlock, URLSource, VideoBlock
from aopkit.testing.fakes.openai import check_request
from aopkit_openai import OpenAIFormatter, OpenAIModel, OpenAIMultiAgentFormatter, wire_name

CAPS = OpenAIModel.capabilities
PNG = b"\x89PNG\r\n\x1a\n fake png bytes"
PNG64 = base64.b64encode(PNG).decode()
WAV64 = base64.b64encode(b"RIFF fake wav").decode()
CAT = "https://example.test/cat.png"
REASONING = frozenset({"reasoning_content"})


async def fmt(messages, formatter=None, *, capabilities=CAPS, pool=None, allow=frozenset()):
    """The messages a formatter makes, checked against the official request types."""
    formatter = formatter or OpenAIFormatter()
    payload = await formatter.format(messages, capabilities=capabilities, pool=pool)
    check_request({"model": "gpt-test", **payload}, allow=allow)
    return payload["messages"]


def text(value):
    return {"type": "text", "text": value}


def image_url(url):
    return {"type": "image_url", "image_url": {"url": url}}


def call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_the_validator_catches_what_pydantic_alone_lets_through():
    """Nested lists are validated only when consumed, and unknown keys are dropped silently:
    the check must see both, or the tests below would prove nothing."""
    bad_part = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 1}}]}]
    with pytest.raises(ValueError):
        check_request({"model": "m", "messages": bad_part})
    unknown_key = [{"role": "user", "content": "hi", "speaker": "Al"}]
    with pytest.raises(ValueError, match="unknown or coerced"):
        check_request({"model": "m", "messages": unknown_key})
    bad_format = {"type": "input_audio", "input_audio": {"data": "x", "format": "ogg"}}
    with pytest.raises(ValueError):
        check_request({"model": "m", "messages": [{"role": "user", "content": [bad_format]}]})


async def test_text_messages_are_plain_with_names_the_api_accepts():
    messages = [
        Msg("sys", "Be brief.", "system"),
        Msg("Alice Smith", "hi", "user"),
        Msg("bot-1", "hello", "assistant"),
        Msg("小明", "你好", "user"),
    ]
    assert await fmt(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi", "name": "Alice_Smith"},
        {"role": "assistant", "content": "hello", "name": "bot-1"},
        {"role": "user", "content": "你好"},  # nothing of the name fits the API's pattern
    ]


def test_wire_names_match_the_apis_pattern():
    assert wire_name("Dr. Who?") == "Dr_Who"
    assert wire_name("x" * 100) == "x" * 64
    assert wire_name("a_b-C9") == "a_b-C9"


async def test_text_blocks_become_one_string_or_text_parts():
    one = Msg("u", [TextBlock("just this")], "user")
    two = Msg("u", [TextBlock("first"), TextBlock("second")], "user")
    assert await fmt([one, two]) == [
        {"role": "user", "content": "just this", "name": "u"},
        {"role": "user", "content": [text("first"), text("second")], "name": "u"},
    ]


async def test_images_by_url_and_inlined_files_and_base64(tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    msg = Msg(
        "u",
        [
            TextBlock("Which is nicer?"),
            ImageBlock(URLSource(CAT)),
            ImageBlock(URLSource(str(path))),
            ImageBlock(URLSource(path.as_uri())),
            ImageBlock(Base64Source("image/png", PNG64)),
        ],
        "user",
    )
    data_url = f"data:image/png;base64,{PNG64}"
    assert await fmt([msg]) == [
        {
            "role": "user",
            "name": "u",
            "content": [
                text("Which is nicer?"),
                image_url(CAT),
                image_url(data_url),
                image_url(data_url),
                image_url(data_url),
            ],
        }
    ]


async def test_image_urls_are_fetched_when_the_model_takes_no_urls(kernel, serve):
    async def png(request):
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/cat", png)
    url = await serve(app) + "/cat"
    capabilities = attrs.evolve(CAPS, media_urls=False)
    msg = Msg("u", [ImageBlock(URLSource(url))], "user")
    messages = await fmt([msg], capabilities=capabilities, pool=kernel.pool)
    assert messages[0]["content"] == [image_url(f"data:image/png;base64,{PNG64}")]


async def test_audio_goes_as_input_audio_and_what_cannot_go_becomes_a_note(tmp_path):
    mp3 = tmp_path / "hello.mp3"
    mp3.write_bytes(b"ID3 fake mp3")
    msg = Msg(
        "u",
        [
            AudioBlock(Base64Source("audio/wav", WAV64)),
            AudioBlock(URLSource(str(mp3))),
            AudioBlock(Base64Source("audio/ogg", "T2dnUw==")),
            VideoBlock(URLSource("https://example.test/clip.mp4")),
            ImageBlock(Base64Source("image/bmp", "Qk0=")),
        ],
        "user",
    )
    parts = (await fmt([msg]))[0]["content"]
    mp3_data = base64.b64encode(b"ID3 fake mp3").decode()
    assert parts[:2] == [
        {"type": "input_audio", "input_audio": {"data": WAV64, "format": "wav"}},
        {"type": "input_audio", "input_audio": {"data": mp3_data, "format": "mp3"}},
    ]
    notes = [p["text"] for p in parts[2:]]
    assert "audio not shown" in notes[0] and "WAV and MP3" in notes[0]
    assert "video not shown" in notes[1] and "clip.mp4" in notes[1]
    assert "image not shown" in notes[2] and "image/bmp" in notes[2]


async def test_media_the_model_does_not_take_becomes_a_note():
    capabilities = attrs.evolve(CAPS, media=frozenset())
    msg = Msg("u", [TextBlock("hear this"), AudioBlock(URLSource("/no/such/file.wav"))], "user")
    parts = (await fmt([msg], capabilities=capabilities))[0]["content"]
    assert parts[0] == text("hear this")
    assert "does not accept audio" in parts[1]["text"] and "/no/such/file.wav" in parts[1]["text"]


async def test_tool_calls_and_parallel_results():
    calls = Msg(
        "bot",
        [
            TextBlock("Checking both."),
            ToolUseBlock("c1", "weather", {"city": "Paris"}),
            ToolUseBlock("c2", "weather", {}, raw_input='{"city": "Rome"'),
        ],
        "assistant",
    )
    results = Msg(
        "tools",
        [
            ToolResultBlock("c1", "weather", "sunny"),
            ToolResultBlock("c2", "weather", [TextBlock("no such city")], is_error=True),
        ],
        "user",
    )
    only_call = Msg("bot", [ToolUseBlock("c3", "clock", {})], "assistant")
    assert await fmt([calls, results, only_call]) == [
        {
            "role": "assistant",
            "name": "bot",
            "content": "Checking both.",
            "tool_calls": [
                call("c1", "weather", '{"city": "Paris"}'),
                call("c2", "weather", '{"city": "Rome"'),  # as the model wrote it
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "Error: no such city"},
        {
            "role": "assistant",
            "name": "bot",
            "content": "",
            "tool_calls": [call("c3", "clock", "{}")],
        },
    ]


async def test_images_in_tool_results_follow_the_run_of_results_in_a_user_message():
    calls = Msg(
        "bot",
        [ToolUseBlock("c1", "snap", {}), ToolUseBlock("c2", "snap", {})],
        "assistant",
    )
    first = Msg(
        "tools",
        [ToolResultBlock("c1", "snap", [TextBlock("got it"), ImageBlock(URLSource(CAT))])],
        "user",
    )
    second = Msg("tools", [ToolResultBlock("c2", "snap", "nothing")], "user")
    messages = await fmt([calls, first, second, Msg("user", "thanks", "user")])
    assert [m["role"] for m in messages] == ["assistant", "tool", "tool", "user", "user"]
    assert messages[1]["content"] == "got it\n[image shown in the next user message]"
    assert messages[3]["content"] == [
        text("image returned by tool snap (call c1):"),
        image_url(CAT),
    ]
    assert messages[4] == {"role": "user", "content": "thanks", "name": "user"}
    at_the_end = await fmt([calls, first, second])
    assert at_the_end[-1] == messages[3]


async def test_media_in_assistant_and_system_messages():
    said = Msg("painter", [TextBlock("Here it is."), ImageBlock(URLSource(CAT))], "assistant")
    system = Msg("sys", [TextBlock("Rules."), ImageBlock(URLSource(CAT))], "system")
    messages = await fmt([system, said])
    assert messages[0]["role"] == "system" and messages[0]["content"][0] == text("Rules.")
    assert "system prompt takes text only" in messages[0]["content"][1]["text"]
    assert messages[1]["content"] == [
        text("Here it is."),
        text("[image shown in the next user message]"),
    ]
    assert messages[2] == {
        "role": "user",
        "content": [text("image from painter:"), image_url(CAT)],
    }


async def test_blocks_the_api_has_no_form_for_become_notes():
    msg = Msg("u", [UnknownBlock("poll", fields={"q": "?"})], "user")
    assert await fmt([msg]) == [
        {"role": "user", "name": "u", "content": "[poll block not shown to the model]"}
    ]


async def test_thinking_goes_back_as_reasoning_content_only_when_asked():
    msg = Msg(
        "bot",
        [ThinkingBlock("Weather needs a tool."), ToolUseBlock("c1", "weather", {"city": "Oslo"})],
        "assistant",
    )
    plain = await fmt([msg])
    assert "reasoning_content" not in plain[0]
    sent = await fmt([msg], OpenAIFormatter(send_reasoning=True), allow=REASONING)
    assert sent[0]["reasoning_content"] == "Weather needs a tool."
    assert sent[0]["tool_calls"] == [call("c1", "weather", '{"city": "Oslo"}')]


async def test_strict_mode_sends_strings_only_and_no_names():
    strict = OpenAIFormatter(strict=True)
    messages = [
        Msg("Alice", "hi", "user"),
        Msg("Alice", [TextBlock("look"), ImageBlock(URLSource(CAT)), TextBlock("nice?")], "user"),
        Msg("bot", [ToolUseBlock("c1", "snap", {})], "assistant"),
        Msg("tools", [ToolResultBlock("c1", "snap", [ImageBlock(URLSource(CAT))])], "user"),
    ]
    out = await fmt(messages, strict)
    assert all("name" not in m for m in out)
    assert all(isinstance(m["content"], str) for m in out)
    assert out[0] == {"role": "user", "content": "hi"}
    lines = out[1]["content"].split("\n")
    assert lines[0] == "look" and lines[2] == "nice?"
    assert "image not shown" in lines[1] and "text content only" in lines[1] and CAT in lines[1]
    assert out[2]["content"] == "" and out[2]["tool_calls"] == [call("c1", "snap", "{}")]
    assert out[3]["role"] == "tool" and "image not shown" in out[3]["content"]
    assert len(out) == 4  # no user message carrying media: a note stands in


async def test_configured_returns_a_formatter_with_the_options():
    base = OpenAIMultiAgentFormatter()
    assert base.configured(strict=False, send_reasoning=False) is base
    strict = base.configured(strict=True, send_reasoning=True)
    assert isinstance(strict, OpenAIMultiAgentFormatter) and strict.strict
    assert strict.send_reasoning


async def test_multi_agent_folds_speakers_and_keeps_tools_and_system_native():
    messages = [
        Msg("host", "Plan a trip.", "system"),
        Msg("Alice", "Paris?", "user"),
        Msg("Bob", "Rome!", "assistant"),
        Msg("Carol", [TextBlock("Look at this"), ImageBlock(URLSource(CAT))], "user"),
        Msg("Bob", [ToolUseBlock("c1", "weather", {"city": "Rome"})], "assistant"),
        Msg("tools", [ToolResultBlock("c1", "weather", "hot")], "user"),
        Msg("Alice", "Too hot.", "user"),
    ]
    out = await fmt(messages, OpenAIMultiAgentFormatter())
    assert out == [
        {"role": "system", "content": "Plan a trip."},
        {
            "role": "user",
            "content": [text("Alice: Paris?\nBob: Rome!\nCarol: Look at this"), image_url(CAT)],
        },
        {
            "role": "assistant",
            "name": "Bob",
            "content": "",
            "tool_calls": [call("c1", "weather", '{"city": "Rome"}')],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "hot"},
        {"role": "user", "content": "Alice: Too hot."},
    ]
    strict = await fmt(messages, OpenAIMultiAgentFormatter(strict=True))
    assert strict[1]["content"].startswith("Alice: Paris?\nBob: Rome!\nCarol: Look at this\n[")


async def test_the_formatters_are_registered(kernel):
    assert isinstance(kernel.formatters["openai"], OpenAIFormatter)
    assert isinstance(kernel.formatters["openai-multiagent"], OpenAIMultiAgentFormatter)
    assert kernel.formatters["openai-multiagent"].multi_agent
