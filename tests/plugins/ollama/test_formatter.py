from __future__ import annotations

import base64

import attrs
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
from aopkit.testing.fakes.ollama import validate_request
from aopkit_ollama import OllamaModel

CAPS = OllamaModel.capabilities
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
B64 = base64.b64encode(PNG).decode()


async def fmt(kernel, messages, name="ollama", capabilities=CAPS):
    """Format, then check the result the way the server would."""
    out = await kernel.formatters[name].format(
        messages, capabilities=capabilities, pool=kernel.pool
    )
    validate_request({"model": "llama3.2", **out})
    return out["messages"]


def user(content, name="user"):
    return Msg(name, content, "user")


def assistant(content, name="llama"):
    return Msg(name, content, "assistant")


async def test_messages_keep_their_roles_and_thinking_goes_back(kernel):
    out = await fmt(
        kernel,
        [
            Msg("sys", "Be brief.", "system"),
            user([TextBlock("hi"), TextBlock(""), TextBlock("there")]),
            assistant([ThinkingBlock("they greet me"), TextBlock("hello")]),
            Msg("sys", "Answer in French.", "system"),
        ],
    )
    assert out == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi\nthere"},
        {"role": "assistant", "content": "hello", "thinking": "they greet me"},
        {"role": "system", "content": "Answer in French."},
    ]


async def test_tool_calls_and_parallel_results_stay_native_and_contiguous(kernel):
    out = await fmt(
        kernel,
        [
            user("weather and time?"),
            assistant(
                [
                    ToolUseBlock("call_1", "weather", {"city": "Paris"}),
                    ToolUseBlock("call_2", "time", {}),
                ]
            ),
            Msg(
                "tools",
                [
                    ToolResultBlock("call_1", "weather", "sunny"),
                    ToolResultBlock("call_2", "time", "clock broken", is_error=True),
                    TextBlock("Anything else?"),
                ],
                "user",
            ),
        ],
    )
    assert out[1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "time", "arguments": {}}},
            ],
        },
        {"role": "tool", "content": "sunny", "tool_name": "weather"},
        {"role": "tool", "content": "Error: clock broken", "tool_name": "time"},
        {"role": "user", "content": "Anything else?"},
    ]


async def test_images_are_read_at_format_time_and_other_media_become_notes(kernel, tmp_path):
    photo = tmp_path / "photo.png"
    messages = [
        user(
            [
                TextBlock("What are these?"),
                ImageBlock(URLSource(photo.as_uri())),
                ImageBlock(Base64Source("image/png", "aGVsbG8=")),
                AudioBlock(URLSource("https://snd.test/a.wav")),
                VideoBlock(URLSource("https://vid.test/v.mp4")),
            ]
        )
    ]
    photo.write_bytes(PNG)  # written after the message was made: read when formatting
    everything = attrs.evolve(CAPS, media=frozenset({"image", "audio", "video"}))
    out = await fmt(kernel, messages, capabilities=everything)
    assert out == [
        {
            "role": "user",
            "content": "What are these?\n"
            "[audio not shown to the model (Ollama does not take audio): https://snd.test/a.wav]\n"
            "[video not shown to the model (Ollama does not take video): https://vid.test/v.mp4]",
            "images": [B64, "aGVsbG8="],
        }
    ]


async def test_http_images_are_fetched_through_the_kernels_pool(kernel, serve):
    app = web.Application()

    async def image(request):
        return web.Response(body=PNG, content_type="image/png")

    app.router.add_get("/dog.png", image)
    base_url = await serve(app)
    out = await fmt(kernel, [user([ImageBlock(URLSource(f"{base_url}/dog.png"))])])
    assert out == [{"role": "user", "content": "", "images": [B64]}]


async def test_images_for_a_text_only_model_become_notes(kernel):
    text_only = attrs.evolve(CAPS, media=frozenset())
    out = await fmt(
        kernel,
        [user([TextBlock("look"), ImageBlock(URLSource("https://img.test/cat.png"))])],
        capabilities=text_only,
    )
    assert out == [
        {
            "role": "user",
            "content": "look\n[image not shown to the model (this model does not accept image): "
            "https://img.test/cat.png]",
        }
    ]


async def test_media_in_system_messages_and_tool_results_are_notes(kernel):
    out = await fmt(
        kernel,
        [
            Msg("sys", [ImageBlock(URLSource("https://img.test/x.png"))], "system"),
            assistant([ToolUseBlock("call_1", "render", {})]),
            user(
                [
                    ToolResultBlock(
                        "call_1",
                        "render",
                        [TextBlock("done"), ImageBlock(URLSource("https://img.test/a.png"))],
                    )
                ]
            ),
        ],
    )
    assert out[0] == {
        "role": "system",
        "content": "[image not shown to the model (the system prompt takes text only): "
        "https://img.test/x.png]",
    }
    assert out[2] == {
        "role": "tool",
        "content": "done\n[image not shown to the model (an Ollama tool result holds text only): "
        "https://img.test/a.png]",
        "tool_name": "render",
    }


async def test_multiagent_speakers_are_folded_into_a_transcript(kernel):
    out = await fmt(
        kernel,
        [
            Msg("host", "You are in a debate.", "system"),
            Msg("alice", "Cats are best.", "user"),
            Msg(
                "bob",
                [TextBlock("Dogs are:"), ImageBlock(Base64Source("image/png", B64))],
                "assistant",
            ),
            Msg("bob", [ToolUseBlock("call_1", "poll", {"q": "pets"})], "assistant"),
            Msg("tools", [ToolResultBlock("call_1", "poll", "dogs 60%")], "user"),
            Msg("carol", "Interesting.", "user"),
        ],
        name="ollama-multiagent",
    )
    assert out == [
        {"role": "system", "content": "You are in a debate."},
        {"role": "user", "content": "alice: Cats are best.\nbob: Dogs are:", "images": [B64]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "poll", "arguments": {"q": "pets"}}}],
        },
        {"role": "tool", "content": "dogs 60%", "tool_name": "poll"},
        {"role": "user", "content": "carol: Interesting."},
    ]
