import base64

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
from aopkit.models import Capabilities
from aopkit_gemini import DEFAULT_BASE_URL, GeminiModel

CAPS = GeminiModel.capabilities
PNG = b"\x89PNG\r\n\x1a\nfake"


def user(content):
    return Msg("user", content, "user")


def bot(content):
    return Msg("bot", content, "assistant")


async def fmt(kernel, messages, name="gemini", capabilities=CAPS):
    return await kernel.formatters[name].format(
        messages, capabilities=capabilities, pool=kernel.pool
    )


async def test_system_is_lifted_and_roles_map_and_same_role_turns_merge(kernel):
    out = await fmt(
        kernel,
        [
            Msg("sys", "Be brief.", "system"),
            user("hi"),
            user("are you there?"),
            bot("yes"),
            Msg("sys", "Answer in French.", "system"),
            user("ok"),
        ],
    )
    assert out["systemInstruction"] == {
        "parts": [{"text": "Be brief."}, {"text": "Answer in French."}]
    }
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}, {"text": "are you there?"}]},
        {"role": "model", "parts": [{"text": "yes"}]},
        {"role": "user", "parts": [{"text": "ok"}]},
    ]


async def test_no_system_instruction_without_system_messages_and_empty_text_is_skipped(kernel):
    out = await fmt(kernel, [user([TextBlock(""), TextBlock("q")])])
    assert out == {"contents": [{"role": "user", "parts": [{"text": "q"}]}]}


async def test_parallel_calls_and_their_results_stay_contiguous_in_call_order(kernel):
    calls = bot(
        [
            TextBlock("Checking both."),
            ToolUseBlock(
                "id-paris", "weather", {"city": "Paris"}, extra={"thoughtSignature": "s1"}
            ),
            ToolUseBlock("id-rome", "weather", {"city": "Rome"}),
        ]
    )
    # results arrive in separate messages, in the other order
    out = await fmt(
        kernel,
        [
            user("weather?"),
            calls,
            Msg("tool", [ToolResultBlock("id-rome", "weather", "18C")], "user"),
            Msg("tool", [ToolResultBlock("id-paris", "weather", "12C")], "user"),
        ],
    )
    model, answers = out["contents"][1:]
    assert model == {
        "role": "model",
        "parts": [
            {"text": "Checking both."},
            {
                "functionCall": {"name": "weather", "args": {"city": "Paris"}, "id": "id-paris"},
                "thoughtSignature": "s1",
            },
            {"functionCall": {"name": "weather", "args": {"city": "Rome"}, "id": "id-rome"}},
        ],
    }
    assert answers == {
        "role": "user",
        "parts": [
            {
                "functionResponse": {
                    "name": "weather",
                    "response": {"output": "12C"},
                    "id": "id-paris",
                }
            },
            {
                "functionResponse": {
                    "name": "weather",
                    "response": {"output": "18C"},
                    "id": "id-rome",
                }
            },
        ],
    }


async def test_made_up_ids_are_not_sent_and_results_still_pair(kernel):
    out = await fmt(
        kernel,
        [
            user("go"),
            bot(
                [
                    ToolUseBlock("gemini-call-1", "search", {"q": "x"}),
                    ToolUseBlock("gemini-call-2", "fetch", {}),
                ]
            ),
            Msg(
                "tool",
                [
                    ToolResultBlock("gemini-call-2", "fetch", "page"),
                    ToolResultBlock("gemini-call-1", "search", "hits"),
                ],
                "user",
            ),
        ],
    )
    model, answers = out["contents"][1:]
    assert [p["functionCall"] for p in model["parts"]] == [
        {"name": "search", "args": {"q": "x"}},
        {"name": "fetch", "args": {}},
    ]
    assert [p["functionResponse"] for p in answers["parts"]] == [
        {"name": "search", "response": {"output": "hits"}},
        {"name": "fetch", "response": {"output": "page"}},
    ]


async def test_results_match_by_name_when_ids_differ_and_orphans_become_text(kernel):
    out = await fmt(
        kernel,
        [
            user("go"),
            bot([ToolUseBlock("abc", "lookup", {"k": 1})]),
            Msg(
                "tool",
                [
                    ToolResultBlock("other-id", "lookup", "found"),
                    ToolResultBlock("zzz", "unknown_tool", "stray"),
                ],
                "user",
            ),
        ],
    )
    parts = out["contents"][2]["parts"]
    assert parts[0] == {
        "functionResponse": {"name": "lookup", "response": {"output": "found"}, "id": "abc"}
    }
    assert parts[1] == {"text": "[result of tool unknown_tool (call zzz)]: stray"}


async def test_error_results_and_results_with_media_and_later_user_text(kernel, tmp_path):
    image = tmp_path / "shot.png"
    image.write_bytes(PNG)
    out = await fmt(
        kernel,
        [
            user("go"),
            bot([ToolUseBlock("a", "shoot", {}), ToolUseBlock("b", "fail", {})]),
            Msg(
                "tool",
                [
                    ToolResultBlock(
                        "a", "shoot", [TextBlock("done"), ImageBlock(URLSource(str(image)))]
                    )
                ],
                "user",
            ),
            user("and?"),
            Msg("tool", [ToolResultBlock("b", "fail", "boom", is_error=True)], "user"),
        ],
    )
    parts = out["contents"][2]["parts"]
    assert [list(p) for p in parts] == [
        ["functionResponse"],
        ["functionResponse"],
        ["inlineData"],
        ["text"],
    ]
    assert parts[0]["functionResponse"]["response"] == {"output": "done"}
    assert parts[1]["functionResponse"]["response"] == {"error": "boom"}
    assert parts[2]["inlineData"] == {
        "mimeType": "image/png",
        "data": base64.b64encode(PNG).decode(),
    }


async def test_thought_signatures_and_thinking_go_back_on_their_own_parts(kernel):
    out = await fmt(
        kernel,
        [
            user("hi"),
            bot(
                [
                    ThinkingBlock("pondering", extra={"thoughtSignature": "t-sig"}),
                    TextBlock("hello", extra={"thoughtSignature": "x-sig"}),
                    TextBlock("", extra={"thoughtSignature": "tail-sig"}),
                ]
            ),
        ],
    )
    assert out["contents"][1]["parts"] == [
        {"text": "pondering", "thought": True, "thoughtSignature": "t-sig"},
        {"text": "hello", "thoughtSignature": "x-sig"},
        {"text": "", "thoughtSignature": "tail-sig"},
    ]


async def test_media_local_inline_remote_fetched_and_file_uris_by_reference(
    kernel, serve, tmp_path
):
    async def image(request):
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/cat", image)
    base = await serve(app)
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFFdata")
    file_uri = f"{DEFAULT_BASE_URL}/v1beta/files/abc123"
    out = await fmt(
        kernel,
        [
            user(
                [
                    TextBlock("look"),
                    ImageBlock(URLSource(f"{base}/cat")),
                    AudioBlock(URLSource(clip.as_uri(), "audio/wav")),
                    VideoBlock(URLSource(file_uri, "video/mp4")),
                    ImageBlock(Base64Source("image/jpeg", "AAAA")),
                ]
            )
        ],
    )
    parts = out["contents"][0]["parts"]
    encoded = base64.b64encode(PNG).decode()
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": encoded}}
    assert parts[2] == {
        "inlineData": {"mimeType": "audio/wav", "data": base64.b64encode(b"RIFFdata").decode()}
    }
    assert parts[3] == {"fileData": {"fileUri": file_uri, "mimeType": "video/mp4"}}
    assert parts[4] == {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}}


async def test_media_the_model_cannot_take_becomes_a_note(kernel):
    caps = Capabilities(media=frozenset({"image"}))
    out = await fmt(kernel, [user([VideoBlock(URLSource("/nowhere/v.mp4"))])], capabilities=caps)
    assert out["contents"][0]["parts"] == [
        {
            "text": "[video not shown to the model (this model does not accept video): "
            "/nowhere/v.mp4]"
        }
    ]


async def test_unreadable_local_media_fails_clearly(kernel, tmp_path):
    from aopkit.formatting import MediaError

    with pytest.raises(MediaError, match="cannot read media file"):
        await fmt(kernel, [user([ImageBlock(URLSource(str(tmp_path / "missing.png")))])])


async def test_multiagent_folds_speakers_and_keeps_tools_and_system_native(kernel):
    out = await fmt(
        kernel,
        [
            Msg("host", "You are Bob in a group chat.", "system"),
            Msg("alice", "Hi Bob!", "user"),
            Msg(
                "carol",
                [TextBlock("Look at this"), ImageBlock(Base64Source("image/png", "QQ=="))],
                "assistant",
            ),
            Msg("bob", [ToolUseBlock("c1", "roll", {"sides": 6})], "assistant"),
            Msg("tool", [ToolResultBlock("c1", "roll", "4")], "user"),
            Msg("alice", "Nice roll.", "user"),
        ],
        name="gemini-multiagent",
    )
    assert out["systemInstruction"] == {"parts": [{"text": "You are Bob in a group chat."}]}
    assert out["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "alice: Hi Bob!\ncarol: Look at this"},
                {"inlineData": {"mimeType": "image/png", "data": "QQ=="}},
            ],
        },
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "roll", "args": {"sides": 6}, "id": "c1"}}],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "roll", "response": {"output": "4"}, "id": "c1"}},
                {"text": "alice: Nice roll."},
            ],
        },
    ]


async def test_multiagent_parallel_results_stay_contiguous(kernel):
    out = await fmt(
        kernel,
        [
            Msg("alice", "roll twice", "user"),
            Msg(
                "bob", [ToolUseBlock("r1", "roll", {}), ToolUseBlock("r2", "roll", {})], "assistant"
            ),
            Msg("tool", [ToolResultBlock("r2", "roll", "5")], "user"),
            Msg("tool", [ToolResultBlock("r1", "roll", "2")], "user"),
        ],
        name="gemini-multiagent",
    )
    last = out["contents"][-1]["parts"]
    assert [p["functionResponse"]["id"] for p in last] == ["r1", "r2"]
