import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aopkit import (
    AudioBlock,
    Base64Source,
    DecodeError,
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UnknownBlock,
    URLSource,
    VideoBlock,
)

ONE_OF_EACH = [
    TextBlock("hi", extra={"cache_control": {"type": "ephemeral"}}),
    ThinkingBlock("hmm", extra={"signature": "c2ln"}),
    ImageBlock(URLSource("https://example.test/cat.png", "image/png")),
    AudioBlock(Base64Source("audio/wav", "UklGRg==")),
    VideoBlock(URLSource("file:///tmp/clip.mp4")),
    ToolUseBlock("call_1", "search", {"q": "cats", "limit": 3}),
    ToolResultBlock("call_1", "search", [TextBlock("3 cats"), ImageBlock(URLSource("/tmp/c.png"))]),
    ToolResultBlock("call_2", "fail", "boom", is_error=True),
]


def test_every_standard_block_round_trips(kernel):
    msg = Msg("alice", ONE_OF_EACH, "assistant", metadata={"turn": 3})
    text = kernel.codec.dumps(msg)
    assert kernel.codec.loads(text) == msg
    data = json.loads(text)
    assert [b["type"] for b in data["content"]] == [
        "text",
        "thinking",
        "image",
        "audio",
        "video",
        "tool_use",
        "tool_result",
        "tool_result",
    ]
    assert data["content"][1]["extra"] == {"signature": "c2ln"}


def test_unknown_block_type_is_kept_and_dumps_back_unchanged(kernel):
    foreign = {"type": "vendor.chart", "series": [1, 2, 3], "extra": {"v": 2}, "title": None}
    data = {
        "id": "m1",
        "name": "bot",
        "role": "assistant",
        "timestamp": 1.5,
        "metadata": {},
        "content": [{"type": "text", "text": "see"}, foreign],
    }
    msg = kernel.codec.load(data)
    assert msg.content[1] == UnknownBlock(
        "vendor.chart", {k: v for k, v in foreign.items() if k != "type"}
    )
    assert kernel.codec.dump(msg) == data


@pytest.mark.parametrize(
    ("mutate", "path", "problem"),
    [
        (lambda d: d.update(role="robot"), "role", "expected 'user', 'assistant' or 'system'"),
        (lambda d: d.pop("name"), "name", "required field is missing"),
        (lambda d: d.update(name=5), "name", "expected a string"),
        (lambda d: d.update(content=7), "content", "a string or a list of blocks"),
        (lambda d: d.update(metadata=[]), "metadata", "expected an object"),
        (lambda d: d.update(timestamp="noon"), "timestamp", "expected a number"),
        (
            lambda d: d["content"][2]["source"].update(data="not base64!"),
            "content[2].source.data",
            "not valid base64",
        ),
        (
            lambda d: d["content"][2]["source"].update(data=12),
            "content[2].source.data",
            "expected a string",
        ),
        (
            lambda d: d["content"][2]["source"].update(type="ftp"),
            "content[2].source",
            "type 'url' or 'base64'",
        ),
        (lambda d: d["content"][0].update(bogus=1), "content[0]", "unexpected field(s): bogus"),
        (lambda d: d["content"][0].pop("type"), "content[0].type", "string 'type' tag"),
        (lambda d: d["content"][1].update(input=[1]), "content[1].input", "expected an object"),
        (
            lambda d: d["content"][3]["output"][0].update(text=None),
            "content[3].output[0].text",
            "expected a string",
        ),
        (
            lambda d: d["content"][3].update(is_error="yes"),
            "content[3].is_error",
            "expected a boolean",
        ),
    ],
)
def test_malformed_input_names_the_bad_field(kernel, mutate, path, problem):
    msg = Msg(
        "a",
        [
            TextBlock("t"),
            ToolUseBlock("c", "f", {}),
            ImageBlock(Base64Source("image/png", "aGVsbG8=")),
            ToolResultBlock("c", "f", [TextBlock("ok")]),
        ],
        "user",
    )
    data = kernel.codec.dump(msg)
    mutate(data)
    with pytest.raises(DecodeError) as info:
        kernel.codec.load(data)
    assert info.value.path == path
    assert problem in info.value.problem
    assert str(info.value).startswith(f"{path}: ")


def test_not_json_and_not_an_object(kernel):
    with pytest.raises(DecodeError, match="not valid JSON"):
        kernel.codec.loads("{nope")
    with pytest.raises(DecodeError, match="must be a JSON object"):
        kernel.codec.loads("[1, 2]")


# -- property tests ---------------------------------------------------------------------------
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=3)
b64 = st.binary(max_size=24).map(lambda b: __import__("base64").b64encode(b).decode())
sources = st.builds(URLSource, st.text(min_size=1), st.none() | st.text()) | st.builds(
    Base64Source, st.text(min_size=1), b64
)
leaf_blocks = st.one_of(
    st.builds(TextBlock, st.text(), extra=json_objects),
    st.builds(ThinkingBlock, st.text(), extra=json_objects),
    st.builds(ImageBlock, sources),
    st.builds(AudioBlock, sources),
    st.builds(VideoBlock, sources),
    st.builds(ToolUseBlock, st.text(), st.text(), json_objects),
    st.builds(
        UnknownBlock,
        st.text(min_size=1).filter(
            lambda t: (
                t
                not in {
                    "text",
                    "thinking",
                    "image",
                    "audio",
                    "video",
                    "tool_use",
                    "tool_result",
                    "sample.poll",
                }
            )
        ),
        st.dictionaries(st.text(max_size=8).filter(lambda k: k != "type"), json_values, max_size=3),
    ),
)
blocks = leaf_blocks | st.builds(
    ToolResultBlock,
    st.text(),
    st.text(),
    st.text() | st.lists(leaf_blocks, max_size=3),
    st.booleans(),
)
messages = st.builds(
    Msg,
    st.text(),
    st.text() | st.lists(blocks, max_size=5),
    st.sampled_from(["user", "assistant", "system"]),
    metadata=json_objects,
    id=st.text(min_size=1),
    timestamp=st.floats(allow_nan=False, allow_infinity=False),
)


@given(messages)
def test_json_round_trip_is_the_identity(msg):
    from aopkit import default_kernel

    codec = default_kernel().codec
    assert codec.loads(codec.dumps(msg)) == msg
    assert codec.dumps(codec.loads(codec.dumps(msg))) == codec.dumps(msg)
