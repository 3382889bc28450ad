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
    UnknownSource,
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


def test_the_saved_form_is_fixed_to_the_byte(kernel):
    """Stores, journals and cassettes compare saved text: its order and its omissions stay."""
    content = [
        TextBlock("hi"),
        ToolResultBlock("c1", "look", [TextBlock("found", extra={"k": 1})]),
        ImageBlock(URLSource("https://example.test/a.png")),
    ]
    msg = Msg("a", content, "assistant", metadata={"n": [1, {"b": None}]}, id="m", timestamp=2.5)
    assert kernel.codec.dumps(msg) == (
        '{"name":"a","content":[{"type":"text","text":"hi"},{"type":"tool_result","id":"c1",'
        '"name":"look","output":[{"type":"text","text":"found","extra":{"k":1}}],'
        '"is_error":false},{"type":"image","source":{"type":"url",'
        '"url":"https://example.test/a.png"}}],"role":"assistant","metadata":{"n":[1,{"b":null}]},'
        '"id":"m","timestamp":2.5}'
    )


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
            lambda d: d["content"][2]["source"].update(type=3),
            "content[2].source",
            "a string 'type' tag",
        ),
        (lambda d: d.update(bogus=1), "", "unexpected field(s): bogus"),
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
    assert str(info.value).startswith(f"{path or '<root>'}: ")


def test_not_json_and_not_an_object(kernel):
    with pytest.raises(DecodeError, match="not valid JSON"):
        kernel.codec.loads("{nope")
    with pytest.raises(DecodeError, match="must be a JSON object"):
        kernel.codec.loads("[1, 2]")


# -- property tests ---------------------------------------------------------------------------
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=3)
b64 = st.binary(max_size=24).map(lambda b: __import__("base64").b64encode(b).decode())
# fields a newer plugin added to a known type: kept in unknown_fields, dumped back unchanged
newer = st.dictionaries(st.text(max_size=5).map(lambda k: f"new_{k}"), json_values, max_size=2)
sources = st.one_of(
    st.builds(URLSource, st.text(min_size=1), st.none() | st.text(), unknown_fields=newer),
    st.builds(Base64Source, st.text(min_size=1), b64, unknown_fields=newer),
    st.builds(
        UnknownSource,
        st.text(min_size=1).filter(lambda t: t not in {"url", "base64"}),
        st.dictionaries(st.text(max_size=8).filter(lambda k: k != "type"), json_values),
    ),
)
leaf_blocks = st.one_of(
    st.builds(TextBlock, st.text(), extra=json_objects, unknown_fields=newer),
    st.builds(ThinkingBlock, st.text(), extra=json_objects),
    st.builds(ImageBlock, sources, unknown_fields=newer),
    st.builds(AudioBlock, sources),
    st.builds(VideoBlock, sources),
    st.builds(ToolUseBlock, st.text(), st.text(), json_objects, unknown_fields=newer),
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


# -- forward compatibility: what a newer plugin wrote is kept --------------------------------
def test_unknown_field_on_a_known_block_is_kept_and_dumps_back_unchanged(kernel):
    data = {
        "name": "a",
        "role": "assistant",
        "id": "m1",
        "timestamp": 1.0,
        "metadata": {},
        "content": [
            {"type": "text", "text": "hi", "citations": [{"url": "https://x.test"}]},
            {
                "type": "tool_use",
                "id": "c",
                "name": "f",
                "input": {},
                "raw_input": None,
                "unknown_fields": 1,
            },
        ],
    }
    msg = kernel.codec.load(data)
    assert msg.content[0] == TextBlock(
        "hi", unknown_fields={"citations": [{"url": "https://x.test"}]}
    )
    assert msg.content[1].unknown_fields == {"unknown_fields": 1}
    assert kernel.codec.dump(msg) == data
    assert kernel.codec.loads(kernel.codec.dumps(msg)) == msg


@pytest.mark.parametrize(
    "source",
    [
        {"type": "file_id", "file_id": "file-123", "media_type": "image/png"},
        {"type": "url", "url": "https://x.test/a.png", "detail": "high"},
        {"type": "base64", "media_type": "image/png", "data": "aGk=", "cache": {"ttl": 5}},
    ],
)
def test_unknown_media_source_and_source_fields_are_kept(kernel, source):
    data = {
        "name": "a",
        "role": "user",
        "id": "m1",
        "timestamp": 1.0,
        "metadata": {},
        "content": [{"type": "image", "source": source}],
    }
    msg = kernel.codec.load(data)
    assert kernel.codec.dump(msg) == data
    if source["type"] == "file_id":
        assert msg.content[0].source == UnknownSource(
            "file_id", {"file_id": "file-123", "media_type": "image/png"}
        )


async def test_a_formatter_refuses_an_unknown_source_clearly(kernel):
    from aopkit.formatting import MediaError, inline, media_type_of

    source = UnknownSource("file_id", {"file_id": "f", "media_type": "image/png"})
    assert media_type_of(source) == "image/png"
    with pytest.raises(MediaError, match="source type 'file_id'"):
        await inline(source)


# -- JSON that loads also dumps: nesting, NaN, Infinity, lone surrogates ----------------------
def _deep(levels):
    """A message whose metadata holds ``levels`` nested arrays: ``levels + 2`` levels in all."""
    nested = "[" * levels + "]" * levels
    return '{"name":"a","role":"user","content":"x","metadata":{"x":' + nested + "}}"


@pytest.mark.parametrize("levels", [99, 150, 5_000, 200_000])
def test_deeply_nested_json_is_a_decode_error(kernel, levels):
    with pytest.raises(DecodeError, match="nested deeper than 100 levels"):
        kernel.codec.loads(_deep(levels))


def test_deeply_nested_blocks_are_a_decode_error(kernel):
    inner = '{"type":"text","text":"x"}'
    for _ in range(400):
        inner = '{"type":"tool_result","id":"c","name":"f","output":[' + inner + "]}"
    text = '{"name":"a","role":"user","content":[' + inner + "]}"
    with pytest.raises(DecodeError, match="nested deeper"):
        kernel.codec.loads(text)
    with pytest.raises(DecodeError, match="nested too deeply"):
        kernel.codec.load(json.loads(text))


def test_nesting_up_to_the_limit_round_trips(kernel):
    msg = kernel.codec.loads(_deep(98))
    assert kernel.codec.loads(kernel.codec.dumps(msg)) == msg


@pytest.mark.parametrize(
    ("metadata", "path", "problem"),
    [
        ('{"x": NaN}', "metadata.x", "NaN is not a JSON number"),
        ('{"x": [1, -Infinity]}', "metadata.x[1]", "-Infinity is not a JSON number"),
        ('{"x": 1e999}', "metadata.x", "1e999 is not a JSON number"),
        ('{"x": "a\\ud800b"}', "metadata.x", "lone surrogate"),
        ('{"\\udfff": 1}', "metadata", "lone surrogate"),
    ],
)
def test_values_that_could_not_be_saved_are_refused_at_load(kernel, metadata, path, problem):
    text = '{"name":"a","role":"user","content":"x","metadata":' + metadata + "}"
    with pytest.raises(DecodeError) as info:
        kernel.codec.loads(text)
    assert (info.value.path, problem in info.value.problem) == (path, True)


def test_surrogate_pairs_and_escapes_that_only_look_like_them_load(kernel):
    text = '{"name":"a","role":"user","content":"\\ud83d\\ude00 and \\\\ud800"}'
    msg = kernel.codec.loads(text)
    assert msg.content == "\U0001f600 and \\ud800"
    assert kernel.codec.loads(kernel.codec.dumps(msg)) == msg


@pytest.mark.parametrize(
    ("metadata", "path"),
    [({"x": float("nan")}, "metadata.x"), ({"y": ["\udc80"]}, "metadata.y[0]")],
)
def test_values_that_would_not_load_are_refused_at_dump(kernel, metadata, path):
    from aopkit import EncodeError

    with pytest.raises(EncodeError) as info:
        kernel.codec.dumps(Msg("a", "x", "user", metadata=metadata))
    assert info.value.path == path


def test_invalid_utf8_bytes_are_a_decode_error(kernel):
    with pytest.raises(DecodeError, match="not valid UTF-8"):
        kernel.codec.loads(b'{"name":"\xff"}')
