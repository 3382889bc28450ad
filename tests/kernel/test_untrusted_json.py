"""JSON from models and servers: nesting too deep for the stack, NaN and lone surrogates never
escape as RecursionError or land in a message that could not be saved."""

import pytest

from aopkit import jsontext
from aopkit.errors import DecodeError, EncodeError
from aopkit.http import ndjson
from aopkit.models import ModelUnavailable, parse_tool_arguments
from aopkit.structured import NotJSON, Target

HOSTILE = ["[" * 100_000, '{"x": NaN}', '{"x": 1e999}', '{"x": "\\udc00"}']


@pytest.mark.parametrize("text", HOSTILE)
def test_tool_arguments_that_are_not_strict_json_go_to_the_repair_tiers(text):
    block = parse_tool_arguments("c", "f", text)
    assert (block.input, block.raw_input) == ({}, text)


@pytest.mark.parametrize("text", HOSTILE)
def test_structured_output_that_is_not_strict_json_is_not_json(kernel, text):
    with pytest.raises(NotJSON):
        Target.of(dict, kernel).parse(text)


async def test_a_deeply_nested_stream_line_is_a_retryable_error():
    async def lines():
        yield b'{"ok": 1}\n'
        yield b"[" * 100_000 + b"\n"

    got = []
    with pytest.raises(ModelUnavailable, match="stream cut or garbled"):
        async for item in ndjson(lines(), "m"):
            got.append(item)
    assert got == [{"ok": 1}]


@pytest.mark.parametrize(
    "text",
    [
        '{"x": "\\ud800"}',  # escaped, in ASCII text
        '{"x": "\\uDBFF ok"}',  # upper-case escape
        '{"x": "café \\udc00"}',  # escaped, in text that is not ASCII
        '{"x": "café \udc00"}',  # raw, in text that is not ASCII
    ],
)
def test_a_lone_surrogate_is_refused_however_it_is_written(text):
    with pytest.raises(DecodeError, match="x"):
        jsontext.loads(text)


def test_a_lone_surrogate_is_not_written_and_a_pair_loads():
    with pytest.raises(EncodeError, match="x"):
        jsontext.dumps({"x": "café \udc00"})
    assert jsontext.loads('{"x": "caf\\u00e9 \\ud83d\\ude00"}') == {"x": "café 😀"}


@pytest.mark.parametrize(
    ("text", "options", "problem"),
    [
        ("\ufeff{}", {}, "BOM"),
        (b"\xef\xbb\xbf{}", {}, "BOM"),
        ('{"a": 1, "a": 2}', {"unique_keys": True}, "two values"),
        ('{"a": "line\nbreak"}', {}, "Invalid control character"),
        ('{"a": 1e999}', {}, "not a JSON number"),
    ],
)
def test_the_decoders_made_once_keep_every_option_apart(text, options, problem):
    with pytest.raises(DecodeError, match=problem):
        jsontext.loads(text, **options)
    if options:  # the same text without the option loads: no decoder is shared by mistake
        assert jsontext.loads(text) == {"a": 2}
    assert jsontext.loads('{"a": "line\nbreak"}', control_characters=True) == {"a": "line\nbreak"}


def test_json_text_of_another_type_is_a_type_error():
    with pytest.raises(TypeError, match="str or bytes, not int"):
        jsontext.loads(7)  # type: ignore[arg-type]
