from __future__ import annotations

import base64

import attrs
import pytest
from aiohttp import web

from aopkit import (
    AudioBlock,
    Base64Source,
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
    VideoBlock,
)
from aopkit.testing.fakes.anthropic import text, validate_request
from aopkit_anthropic import AnthropicModel

CAPS = AnthropicModel.capabilities
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def fmt(kernel, messages, name="anthropic", capabilities=CAPS):
    """Format, then check the result the way the API would (official request types)."""
    out = await kernel.formatters[name].format(
        messages, capabilities=capabilities, pool=kernel.pool
    )
    validate_request({"model": "claude-test", "max_tokens": 16, **out})
    return out


def user(content, name="user"):
    return Msg(name, content, "user")


def assistant(content, name="claude"):
    return Msg(name, content, "assistant")


async def test_system_is_lifted_and_turns_of_one_role_are_merged(kernel):
    out = await fmt(
        kernel,
        [
            Msg("sys", "Be brief.", "system"),
            user("hi"),
            user([TextBlock(""), TextBlock("there")]),
            assistant("hello"),
            Msg("sys", "Answer in French.", "system"),
            user("bye"),
        ],
    )
    assert out["system"] == [text("Be brief."), text("Answer in French.")]
    assert out["messages"] == [
        {"role": "user", "content": [text("hi"), text("there")]},
        {"role": "assistant", "content": [text("hello")]},
        {"role": "user", "content": [text("bye")]},
    ]


async def test_no_system_field_without_system_messages(kernel):
    assert "system" not in await fmt(kernel, [user("hi")])


async def test_parallel_tool_results_share_one_user_turn_and_come_first(kernel):
    calls = [
        ToolUseBlock("t1", "weather", {"city": "Paris"}),
        ToolUseBlock("t2", "weather", {"city": "Rome"}),
    ]
    out = await fmt(
        kernel,
        [
            user("Weather in Paris and Rome?"),
            assistant([TextBlock("Checking."), *calls]),
            Msg("tool", [ToolResultBlock("t1", "weather", "sunny")], "assistant"),
            user("hurry up"),
            Msg("tool", [ToolResultBlock("t2", "weather", "down", is_error=True)], "user"),
        ],
    )
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][1]["content"][1:] == [
        {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "t2", "name": "weather", "input": {"city": "Rome"}},
    ]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "t2", "content": "down", "is_error": True},
        text("hurry up"),
    ]


async def test_tool_results_with_blocks_keep_text_and_images(kernel):
    output = [
        TextBlock("chart:"),
        ImageBlock(URLSource("https://example.test/c.png")),
        AudioBlock(URLSource("https://example.test/a.mp3")),
    ]
    out = await fmt(
        kernel,
        [
            user("plot it"),
            assistant([ToolUseBlock("t1", "plot", {})]),
            user([ToolResultBlock("t1", "plot", output)]),
        ],
    )
    content = out["messages"][2]["content"][0]["content"]
    assert content[:2] == [
        text("chart:"),
        {"type": "image", "source": {"type": "url", "url": "https://example.test/c.png"}},
    ]
    assert content[2]["type"] == "text" and "audio not shown" in content[2]["text"]


async def test_thinking_goes_back_unchanged_and_unsigned_thinking_is_not_sent(kernel):
    signed = ThinkingBlock("let me see", extra={"signature": "c2lnbmVk=="})
    hidden = ThinkingBlock("", extra={"data": "EncRypted=="})
    foreign = ThinkingBlock("another model's thoughts")
    out = await fmt(
        kernel,
        [
            user("q"),
            assistant([signed, hidden, foreign, ToolUseBlock("t", "f", {})]),
            user([ToolResultBlock("t", "f", "1")]),
        ],
    )
    assert out["messages"][1]["content"][:2] == [
        {"type": "thinking", "thinking": "let me see", "signature": "c2lnbmVk=="},
        {"type": "redacted_thinking", "data": "EncRypted=="},
    ]
    assert len(out["messages"][1]["content"]) == 3  # the unsigned block is left out


async def test_images_by_url_inline_and_local_files_read_at_format_time(kernel, tmp_path):
    path = tmp_path / "dot.png"
    msg = user(
        [
            TextBlock("what are these?"),
            ImageBlock(URLSource("https://example.test/cat.jpg")),
            ImageBlock(URLSource(str(path))),
            ImageBlock(Base64Source("image/gif", "R0lGOD==")),
        ]
    )
    path.write_bytes(PNG)  # written after the message was made: read only when formatting
    content = (await fmt(kernel, [msg]))["messages"][0]["content"]
    assert content[1]["source"] == {"type": "url", "url": "https://example.test/cat.jpg"}
    assert content[2]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": base64.b64encode(PNG).decode(),
    }
    assert content[3]["source"] == {"type": "base64", "media_type": "image/gif", "data": "R0lGOD=="}


async def test_urls_are_fetched_when_the_model_takes_no_image_urls(kernel, serve):
    async def image(request):
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/cat", image)
    base = await serve(app)
    capabilities = attrs.evolve(CAPS, media_urls=False)
    out = await fmt(
        kernel, [user([ImageBlock(URLSource(f"{base}/cat"))])], capabilities=capabilities
    )
    source = out["messages"][0]["content"][0]["source"]
    assert source == {
        "type": "base64",
        "media_type": "image/png",
        "data": base64.b64encode(PNG).decode(),
    }


async def test_media_the_api_cannot_take_become_notes(kernel, tmp_path):
    bmp = tmp_path / "x.bmp"
    bmp.write_bytes(b"BM....")
    content = (
        await fmt(
            kernel,
            [
                user(
                    [
                        AudioBlock(URLSource("https://example.test/talk.mp3")),
                        VideoBlock(Base64Source("video/mp4", "AAAA")),
                        ImageBlock(URLSource(str(bmp))),
                    ]
                )
            ],
        )
    )["messages"][0]["content"]
    notes = [c["text"] for c in content]
    assert all(c["type"] == "text" for c in content)
    assert "audio not shown to the model" in notes[0] and "talk.mp3" in notes[0]
    assert "video not shown to the model" in notes[1]
    assert "not image/bmp" in notes[2]


async def test_audio_stays_a_note_even_if_capabilities_claim_audio(kernel):
    capabilities = attrs.evolve(CAPS, media=frozenset({"image", "audio"}))
    out = await fmt(
        kernel, [user([AudioBlock(Base64Source("audio/wav", "UklG"))])], capabilities=capabilities
    )
    assert "does not take audio" in out["messages"][0]["content"][0]["text"]


async def test_system_media_become_notes(kernel):
    out = await fmt(
        kernel,
        [
            Msg(
                "sys",
                [TextBlock("Rules:"), ImageBlock(URLSource("https://e.test/r.png"))],
                "system",
            ),
            user("go"),
        ],
    )
    assert out["system"][0] == text("Rules:")
    assert "takes text only" in out["system"][1]["text"]


async def test_missing_local_file_is_a_clear_error(kernel, tmp_path):
    from aopkit.formatting import MediaError

    with pytest.raises(MediaError, match="cannot read media file"):
        await fmt(kernel, [user([ImageBlock(URLSource(str(tmp_path / "gone.png")))])])


async def test_multiagent_folds_speakers_and_keeps_tools_and_system_native(kernel):
    calls = [ToolUseBlock("t1", "roll", {"sides": 6}), ToolUseBlock("t2", "roll", {"sides": 20})]
    out = await fmt(
        kernel,
        [
            Msg("host", "You play a dice game.", "system"),
            user("Let's play.", name="alice"),
            assistant("I'm in.", name="bob"),
            user([TextBlock("Look:"), ImageBlock(URLSource("https://e.test/board.png"))], "carol"),
            assistant([TextBlock("Rolling."), *calls], name="bob"),
            Msg("tool", [ToolResultBlock("t1", "roll", "4")], "user"),
            Msg("tool", [ToolResultBlock("t2", "roll", "17")], "user"),
            assistant("bob rolled 4", name="dealer"),
            user("nice", name="alice"),
        ],
        name="anthropic-multiagent",
    )
    assert out["system"] == [text("You play a dice game.")]
    first, second, third = out["messages"][0], out["messages"][1], out["messages"][2]
    assert first == {
        "role": "user",
        "content": [
            text("alice: Let's play.\nbob: I'm in.\ncarol: Look:"),
            {"type": "image", "source": {"type": "url", "url": "https://e.test/board.png"}},
        ],
    }
    assert second == {
        "role": "assistant",
        "content": [
            text("Rolling."),
            {"type": "tool_use", "id": "t1", "name": "roll", "input": {"sides": 6}},
            {"type": "tool_use", "id": "t2", "name": "roll", "input": {"sides": 20}},
        ],
    }
    assert third == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "4"},
            {"type": "tool_result", "tool_use_id": "t2", "content": "17"},
            text("dealer: bob rolled 4\nalice: nice"),
        ],
    }
    assert len(out["messages"]) == 3
