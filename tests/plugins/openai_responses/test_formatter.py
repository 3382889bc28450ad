"""Messages → Responses API input items; every payload is checked against the official
request types (``check_request``), not only compared with what we expect."""

from __future__ import annotations

import base64

import pytest

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
from aopkit.blocks import UnknownBlock
from aopkit.models import Capabilities
from aopkit.testing.fakes.openai_responses import check_request

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(32))).decode()
CAPS = Capabilities(media=frozenset({"image"}))


async def formatted(kernel, messages, name="openai-responses", capabilities=CAPS):
    payload = await kernel.formatters[name].format(messages, capabilities=capabilities)
    check_request({"model": "m", **payload})
    return payload


async def test_leading_system_messages_are_the_instructions(kernel):
    payload = await formatted(
        kernel,
        [
            Msg("sys", "Be brief.", "system"),
            Msg("sys", [TextBlock("Answer in French.")], "system"),
            Msg("user", "hi", "user"),
            Msg("sys", "Now switch to English.", "system"),
        ],
    )
    assert payload["instructions"] == "Be brief.\n\nAnswer in French."
    assert payload["input"] == [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Now switch to English."},
    ]


async def test_images_by_url_and_inline_and_from_a_file(kernel, tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(base64.b64decode(PNG))
    msg = Msg(
        "user",
        [
            TextBlock("What are these?"),
            ImageBlock(URLSource("https://example.com/cat.png")),
            ImageBlock(Base64Source("image/png", PNG)),
            ImageBlock(URLSource(str(path))),
        ],
        "user",
    )
    (item,) = (await formatted(kernel, [msg]))["input"]
    assert item["content"] == [
        {"type": "input_text", "text": "What are these?"},
        {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
    ]


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (AudioBlock(Base64Source("audio/wav", "AAAA")), "does not accept audio"),
        (VideoBlock(URLSource("https://example.com/v.mp4")), "does not accept video"),
        (ImageBlock(Base64Source("image/tiff", "AAAA")), "not image/tiff"),
    ],
)
async def test_media_the_api_cannot_take_become_notes(kernel, block, why):
    (item,) = (await formatted(kernel, [Msg("user", [block], "user")]))["input"]
    assert "not shown to the model" in item["content"] and why in item["content"]


async def test_a_text_only_model_gets_notes_for_images(kernel):
    msg = Msg("user", [ImageBlock(Base64Source("image/png", PNG))], "user")
    payload = await formatted(kernel, [msg], capabilities=Capabilities(media=frozenset()))
    assert "does not accept image" in payload["input"][0]["content"]


async def test_a_history_ending_in_tool_results(kernel):
    history = [
        Msg("user", "Weather in Rome and Oslo?", "user"),
        Msg(
            "bot",
            [
                TextBlock("Checking both."),
                ToolUseBlock("c1", "weather", {"city": "Rome"}),
                ToolUseBlock("c2", "weather", {}, raw_input="{'city': Oslo"),
            ],
            "assistant",
        ),
        Msg(
            "tools",
            [
                ToolResultBlock("c1", "weather", [TextBlock("sunny")]),
                ToolResultBlock("c2", "weather", "bad arguments", is_error=True),
            ],
            "user",
        ),
    ]
    assert (await formatted(kernel, history))["input"][1:] == [
        {"role": "assistant", "content": "Checking both."},
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "weather",
            "arguments": '{"city": "Rome"}',
        },
        {
            "type": "function_call",
            "call_id": "c2",
            "name": "weather",
            "arguments": "{'city': Oslo",
        },  # unparsed arguments go back verbatim
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": "Error: bad arguments"},
    ]


async def test_an_image_a_tool_returned_follows_the_outputs_in_a_user_message(kernel):
    history = [
        Msg("user", "Snap it.", "user"),
        Msg("bot", [ToolUseBlock("c1", "snap", {}), ToolUseBlock("c2", "snap", {})], "assistant"),
        Msg(
            "tools",
            [
                ToolResultBlock(
                    "c1", "snap", [TextBlock("a cat"), ImageBlock(Base64Source("image/png", PNG))]
                ),
                ToolResultBlock("c2", "snap", "nothing"),
            ],
            "user",
        ),
    ]
    items = (await formatted(kernel, history))["input"]
    assert [i.get("type", i.get("role")) for i in items] == [
        "user",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
        "user",
    ]
    assert "shown in the next user message" in items[3]["output"]
    assert items[5]["content"][1]["image_url"].endswith(PNG)


async def test_media_a_tool_returned_that_cannot_go_are_noted_in_the_output_only(kernel):
    """An image type the API does not take, audio and video: a note in the tool output, and
    no user message after it (nothing is held back)."""
    result = ToolResultBlock(
        "c1",
        "snap",
        [
            ImageBlock(Base64Source("image/tiff", "AAAA")),
            AudioBlock(Base64Source("audio/wav", "AAAA")),
            VideoBlock(URLSource("https://example.com/v.mp4")),
            UnknownBlock("chart", fields={}),
        ],
        is_error=True,
    )
    caps = Capabilities(media=frozenset({"image", "audio", "video"}))
    history = [
        Msg("bot", [ToolUseBlock("c1", "snap", {})], "assistant"),
        Msg("tools", [result], "user"),
    ]
    items = (await formatted(kernel, history, capabilities=caps))["input"]
    assert [i.get("type") for i in items] == ["function_call", "function_call_output"]
    lines = items[1]["output"].split("\n")
    assert lines[0].startswith("Error: ") and "not image/tiff" in lines[0]
    assert "does not take audio" in lines[1] and "does not take video" in lines[2]
    assert lines[3] == "[chart block not shown to the model]"


async def test_an_assistants_image_is_shown_in_the_next_user_message(kernel):
    history = [
        Msg("user", "Draw.", "user"),
        Msg("bot", [TextBlock("Here:"), ImageBlock(Base64Source("image/png", PNG))], "assistant"),
        Msg("user", "Nice.", "user"),
    ]
    items = (await formatted(kernel, history))["input"]
    assert items[1] == {
        "role": "assistant",
        "content": "Here:\n[image shown in the next user message]",
    }
    assert items[2]["role"] == "user" and items[2]["content"][1]["type"] == "input_image"
    assert items[3] == {"role": "user", "content": "Nice."}


async def test_reasoning_goes_back_as_it_came_with_the_ids_of_its_items(kernel):
    item = {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "gAAA"}
    answer = Msg(
        "bot",
        [
            ThinkingBlock("", extra={"reasoning_item": item}),
            TextBlock("Let me check.", extra={"item_id": "msg_1"}),
            ToolUseBlock("c1", "weather", {}, extra={"item_id": "fc_1"}),
        ],
        "assistant",
    )
    history = [
        Msg("user", "hi", "user"),
        answer,
        Msg("t", [ToolResultBlock("c1", "weather", "ok")], "user"),
    ]
    items = (await formatted(kernel, history))["input"]
    assert items[1] == item
    assert items[2]["id"] == "msg_1" and items[2]["content"][0]["text"] == "Let me check."
    assert items[3]["id"] == "fc_1"


async def test_reasoning_the_api_cannot_resolve_is_left_out_with_the_ids(kernel):
    foreign = ThinkingBlock("thought", extra={"signature": "sig"})  # another provider's
    unencrypted = ThinkingBlock(
        "", extra={"reasoning_item": {"id": "rs_1", "type": "reasoning", "summary": []}}
    )
    for thought in (foreign, unencrypted):
        answer = Msg(
            "bot",
            [
                thought,
                TextBlock("Hi.", extra={"item_id": "msg_1"}),
                ToolUseBlock("c1", "t", {}, extra={"item_id": "fc_1"}),
            ],
            "assistant",
        )
        history = [
            Msg("user", "hi", "user"),
            answer,
            Msg("t", [ToolResultBlock("c1", "t", "ok")], "user"),
        ]
        items = (await formatted(kernel, history))["input"]
        assert [i.get("type") for i in items] == [
            None,
            None,
            "function_call",
            "function_call_output",
        ]
        assert "id" not in items[1] and "id" not in items[2]
    stored = kernel.formatters["openai-responses"].configured(stored=True)
    payload = await stored.format(history, capabilities=CAPS)
    assert payload["input"][1]["id"] == "rs_1" and payload["input"][3]["id"] == "fc_1"


async def test_blocks_of_other_kinds_are_noted_and_native_items_kept(kernel):
    search = {
        "id": "fs_1",
        "type": "file_search_call",
        "status": "completed",
        "queries": ["q"],
    }
    history = [
        Msg("user", [TextBlock("hi"), UnknownBlock("poll", fields={"q": 1})], "user"),
        Msg(
            "bot",
            [
                UnknownBlock(
                    "file_search_call", fields=search, extra={"provider": "openai-responses"}
                ),
                TextBlock("Found."),
            ],
            "assistant",
        ),
    ]
    items = (await formatted(kernel, history))["input"]
    assert items[0]["content"] == "hi\n[poll block not shown to the model]"
    assert items[1] == search


async def test_multi_agent_names_are_folded_into_a_transcript(kernel):
    history = [
        Msg("host", "Debate: tabs or spaces?", "system"),
        Msg("alice", "Tabs.", "assistant"),
        Msg("bob", [TextBlock("Spaces."), ImageBlock(Base64Source("image/png", PNG))], "assistant"),
        Msg("judge", [ToolUseBlock("c1", "score", {})], "assistant"),
        Msg("tools", [ToolResultBlock("c1", "score", "1:1")], "user"),
        Msg("carol", "Both.", "user"),
    ]
    payload = await formatted(kernel, history, name="openai-responses-multiagent")
    assert payload["instructions"] == "Debate: tabs or spaces?"
    first, call, output, last = payload["input"]
    assert first["content"][0] == {"type": "input_text", "text": "alice: Tabs.\nbob: Spaces."}
    assert first["content"][1]["type"] == "input_image"
    assert call["type"] == "function_call" and output["type"] == "function_call_output"
    assert last == {"role": "user", "content": [{"type": "input_text", "text": "carol: Both."}]}


async def test_reasoning_with_nothing_after_it_is_left_out(kernel):
    """An answer cut off while reasoning: the API refuses a reasoning item without the item
    that follows it."""
    item = {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "gAAA"}
    history = [
        Msg("user", "hi", "user"),
        Msg("bot", [TextBlock(""), ThinkingBlock("", extra={"reasoning_item": item})], "assistant"),
        Msg("user", "Go on.", "user"),
    ]
    items = (await formatted(kernel, history))["input"]
    assert items == [{"role": "user", "content": "hi"}, {"role": "user", "content": "Go on."}]


def _assistant_blocks():
    """Blocks an assistant message may hold: this API's text, calls and reasoning (with and
    without encrypted content), another provider's thinking, media, unknown blocks."""
    from hypothesis import strategies as st

    reasoning = st.builds(
        lambda n, enc: ThinkingBlock(
            "",
            extra={
                "reasoning_item": {
                    "id": f"rs_{n}",
                    "type": "reasoning",
                    "summary": [],
                    **({"encrypted_content": "gAAA"} if enc else {}),
                }
            },
        ),
        st.integers(0, 99),
        st.booleans(),
    )
    return st.one_of(
        reasoning,
        st.builds(
            lambda t, n: TextBlock(t, extra={"item_id": f"msg_{n}"} if n else {}),
            st.sampled_from(["", "ok", "more"]),
            st.integers(0, 2),
        ),
        st.builds(
            lambda n: ToolUseBlock(f"call_{n}", "t", {}, extra={"item_id": f"fc_{n}"}),
            st.integers(0, 99),
        ),
        st.just(ThinkingBlock("other", extra={"signature": "sig"})),
        st.just(ImageBlock(Base64Source("image/png", PNG))),
        st.just(UnknownBlock("poll", fields={})),
    )


def test_any_assistant_turn_is_a_valid_request_with_reasoning_paired(kernel):
    """Whatever an assistant message holds, the request is valid by the official types, each
    reasoning item is directly followed by an item it produced, and item ids go back only in
    a turn whose reasoning went back."""
    import asyncio

    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.lists(_assistant_blocks(), max_size=6, unique_by=lambda b: repr(b)))
    def check(blocks):
        calls = [b for b in blocks if isinstance(b, ToolUseBlock)]
        history = [Msg("user", "hi", "user"), Msg("bot", blocks, "assistant")]
        if calls:
            results = [ToolResultBlock(c.id, "t", "ok") for c in calls]
            history.append(Msg("tools", results, "user"))
        history.append(Msg("user", "next", "user"))
        payload = asyncio.run(formatted(kernel, history))
        items = payload["input"]
        turn = items[1:-1]
        sent_reasoning = any(i.get("type") == "reasoning" for i in turn)
        for n, item in enumerate(turn):
            if item.get("type") == "reasoning":
                follower = turn[n + 1] if n + 1 < len(turn) else {}
                assert follower.get("type", "message") in ("message", "function_call", "reasoning")
                assert follower.get("role", "assistant") == "assistant"
                assert "[image" not in str(follower.get("content")), "a note follows reasoning"
            if "id" in item and item.get("type") != "reasoning":
                assert sent_reasoning, f"an item id without its reasoning: {item}"
        assert sum(i.get("type") == "function_call" for i in items) == len(calls)

    check()
