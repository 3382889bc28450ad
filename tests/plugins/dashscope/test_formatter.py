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
from aopkit.testing.fakes.dashscope import validate_request
from aopkit_dashscope import DashScopeModel
from aopkit_dashscope.model import MULTIMODAL

TEXT = DashScopeModel.capabilities
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def fmt(kernel, messages, name="dashscope", capabilities=TEXT):
    """Format, then check the result the way the service would."""
    out = await kernel.formatters[name].format(
        messages, capabilities=capabilities, pool=kernel.pool
    )
    body = {"model": "qwen", "input": out, "parameters": {"result_format": "message"}}
    validate_request(body, multimodal=bool(capabilities.media), sse=False)
    return out["messages"]


def user(content, name="user"):
    return Msg(name, content, "user")


def assistant(content, name="qwen"):
    return Msg(name, content, "assistant")


async def test_text_models_get_string_contents_in_their_roles(kernel):
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
        {"role": "assistant", "content": "hello"},  # thinking is not sent back
        {"role": "system", "content": "Answer in French."},
    ]


async def test_tool_calls_and_parallel_results_stay_native_and_contiguous(kernel):
    garbled = '{"city": "Rome", '
    out = await fmt(
        kernel,
        [
            user("weather?"),
            assistant(
                [
                    TextBlock("Checking."),
                    ToolUseBlock("call_1", "weather", {"city": "Paris"}),
                    ToolUseBlock("call_2", "weather", {}, raw_input=garbled),
                ]
            ),
            Msg(
                "tools",
                [
                    ToolResultBlock("call_1", "weather", "sunny"),
                    ToolResultBlock("call_2", "weather", "bad arguments", is_error=True),
                    TextBlock("Anything else?"),
                ],
                "user",
            ),
        ],
    )
    assert out[1] == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
            },
            {  # what the model wrote goes back as it wrote it
                "id": "call_2",
                "type": "function",
                "function": {"name": "weather", "arguments": garbled},
            },
        ],
    }
    assert out[2:] == [
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
        {"role": "tool", "content": "Error: bad arguments", "tool_call_id": "call_2"},
        {"role": "user", "content": "Anything else?"},
    ]


async def test_a_tool_result_with_media_keeps_a_note_of_it(kernel):
    out = await fmt(
        kernel,
        [
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
    assert out[1]["content"] == (
        "done\n[image not shown to the model (a DashScope tool result holds text only): "
        "https://img.test/a.png]"
    )


async def test_media_for_a_text_model_become_notes(kernel):
    out = await fmt(
        kernel,
        [user([TextBlock("look"), ImageBlock(URLSource("https://img.test/cat.png"))])],
    )
    assert out == [
        {
            "role": "user",
            "content": "look\n[image not shown to the model (this model does not accept image): "
            "https://img.test/cat.png]",
        }
    ]


async def test_multimodal_models_get_parts_urls_and_data_urls(kernel, tmp_path):
    photo = tmp_path / "photo.png"
    messages = [
        Msg("sys", "Describe.", "system"),
        user(
            [
                ImageBlock(URLSource("https://img.test/dog.jpeg")),
                ImageBlock(URLSource(str(photo))),
                ImageBlock(Base64Source("image/png", "aGVsbG8=")),
                VideoBlock(URLSource("https://vid.test/clip.mp4")),
                AudioBlock(URLSource("https://snd.test/a.wav")),
                TextBlock("What are these?"),
            ]
        ),
        assistant("Animals."),
    ]
    photo.write_bytes(PNG)  # written after the message was made: read when formatting
    out = await fmt(kernel, messages, capabilities=MULTIMODAL)
    png = base64.b64encode(PNG).decode()
    assert out == [
        {"role": "system", "content": [{"text": "Describe."}]},
        {
            "role": "user",
            "content": [
                {"image": "https://img.test/dog.jpeg"},
                {"image": f"data:image/png;base64,{png}"},
                {"image": "data:image/png;base64,aGVsbG8="},
                {"video": "https://vid.test/clip.mp4"},
                {
                    "text": "[audio not shown to the model (this model does not accept audio): "
                    "https://snd.test/a.wav]"
                },
                {"text": "What are these?"},
            ],
        },
        {"role": "assistant", "content": [{"text": "Animals."}]},
    ]


async def test_an_omni_model_declared_with_audio_gets_it(kernel):
    omni = attrs.evolve(MULTIMODAL, media=frozenset({"image", "audio", "video"}))
    out = await fmt(
        kernel, [user([AudioBlock(URLSource("https://snd.test/a.wav"))])], capabilities=omni
    )
    assert out == [{"role": "user", "content": [{"audio": "https://snd.test/a.wav"}]}]


async def test_media_in_a_system_message_is_a_note(kernel):
    out = await fmt(
        kernel,
        [Msg("sys", [ImageBlock(URLSource("https://img.test/x.png"))], "system"), user("hi")],
        capabilities=MULTIMODAL,
    )
    assert out[0]["content"] == [
        {
            "text": "[image not shown to the model (the system prompt takes text only): "
            "https://img.test/x.png]"
        }
    ]


async def test_urls_are_fetched_and_inlined_when_the_model_takes_no_urls(kernel, serve):
    app = web.Application()

    async def image(request):
        return web.Response(body=PNG, content_type="image/png")

    app.router.add_get("/dog.png", image)
    base_url = await serve(app)
    no_urls = attrs.evolve(MULTIMODAL, media_urls=False)
    out = await fmt(
        kernel, [user([ImageBlock(URLSource(f"{base_url}/dog.png"))])], capabilities=no_urls
    )
    assert out[0]["content"] == [
        {"image": f"data:image/png;base64,{base64.b64encode(PNG).decode()}"}
    ]


async def test_multiagent_speakers_are_folded_into_a_transcript(kernel):
    out = await fmt(
        kernel,
        [
            Msg("host", "You are in a debate.", "system"),
            Msg("alice", "Cats are best.", "user"),
            Msg("bob", "Dogs are.", "assistant"),
            Msg("bob", [ToolUseBlock("call_1", "poll", {"q": "pets"})], "assistant"),
            Msg("tools", [ToolResultBlock("call_1", "poll", "dogs 60%")], "user"),
            Msg("carol", "Interesting.", "user"),
        ],
        name="dashscope-multiagent",
    )
    assert out == [
        {"role": "system", "content": "You are in a debate."},
        {"role": "user", "content": "alice: Cats are best.\nbob: Dogs are."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "poll", "arguments": '{"q": "pets"}'},
                }
            ],
        },
        {"role": "tool", "content": "dogs 60%", "tool_call_id": "call_1"},
        {"role": "user", "content": "carol: Interesting."},
    ]


async def test_multiagent_media_go_beside_the_transcript(kernel):
    out = await fmt(
        kernel,
        [
            Msg(
                "alice",
                [TextBlock("Look:"), ImageBlock(URLSource("https://img.test/a.png"))],
                "user",
            ),
            Msg("bob", "Nice.", "assistant"),
        ],
        name="dashscope-multiagent",
        capabilities=MULTIMODAL,
    )
    assert out == [
        {
            "role": "user",
            "content": [{"text": "alice: Look:\nbob: Nice."}, {"image": "https://img.test/a.png"}],
        }
    ]
