"""The tier-2 correctors one by one, then the malformed-output corpus (tests/data) through the
real pipeline: what they fix, and above all what they must refuse rather than guess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aopkit.blocks import TextBlock
from aopkit.errors import DecodeError
from aopkit.faults import CannotCorrect, CutOff, FaultPolicy, Unresolved, correct, resolve
from aopkit.message import Msg
from aopkit.models import ChatResponse
from aopkit.structured import NotJSON, Target, json_schema
from aopkit_repair import Coerce, Fences, JsonRepair
from aopkit_repair.scan import string_value
from tests.data.corpus_schemas import SCHEMAS

DATA = Path(__file__).parents[2] / "data"


def corpus(name: str) -> list[dict[str, Any]]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


ENTRIES = corpus("malformed_outputs.jsonl")
HELD_OUT = corpus("malformed_outputs_heldout.jsonl")  # written before the correctors saw it
TIER_2 = FaultPolicy(critics=(), rounds=0, escalate=False)
ASK = [Msg("user", "Answer in JSON.", "user")]
OBJECT: dict[str, Any] = {"type": "object"}


@attrs.frozen
class Item:
    name: str
    count: int
    price: float = 0.0
    ok: bool = False
    size: Literal["s", "m", "l"] = "m"
    note: str | None = None


@attrs.frozen
class Order:
    id: str
    items: list[Item]
    rush: bool = False


ORDER = json_schema(Order)


def refusal(corrector: Any, text: str, schema: dict[str, Any] = OBJECT) -> CannotCorrect:
    with pytest.raises(CannotCorrect) as info:
        corrector.correct(text, schema)
    return info.value


# -- fences -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"a": 1}\n```',
        'Sure!\n```JSON\n{"a": 1}\n```\nAnything else?',
        '```\n{"a": 1}\n```',
        '```jsonc\n{"a": 1}\n```',
        '~~~\n{"a": 1}\n~~~',
        'Inline: ```{"a": 1}```',
        '```json\n{"a": 1}',  # the fence was never closed
        'Here it is: {"a": 1}. Done.',
        '```bash\nls -l\n```\n```json\n{"a": 1}\n```',  # the shell fence cannot be the value
    ],
)
def test_fences_find_the_json(text):
    assert Fences().correct(text, OBJECT) == {"a": 1}


def test_braces_quotes_and_fences_inside_strings_do_not_end_the_json():
    value = {"a": 'x} "y" ]', "b": "use ```code``` here", "c": ["{", "["]}
    text = f"```json\n{json.dumps(value)}\n```\nThat is all."
    assert Fences().correct(text, OBJECT) == value
    assert Fences().correct(f"Result: {json.dumps(value)} (done)", OBJECT) == value
    inline = 'Result: {"a": "as in ```{b: 1}```"}'  # not a fence: it is inside a string
    assert Fences().correct(inline, OBJECT) == {"a": "as in ```{b: 1}```"}


def test_parts_of_the_prose_that_cannot_be_the_value_are_ignored():
    text = 'As shown in [1], with {name} filled in: {"name": "Ann"}'
    assert Fences().correct(text, OBJECT) == {"name": "Ann"}


def test_the_same_value_twice_is_one_value_but_different_values_are_refused():
    same = '```json\n{"a": 1}\n```\nAgain:\n```json\n{ "a" : 1 }\n```'
    assert Fences().correct(same, OBJECT) == {"a": 1}
    problem = refusal(Fences(), 'Either {"a": 1} or {"a": 2}.')
    assert "guess" in problem.reason and problem.partial is None
    problem = refusal(Fences(), '```json\n{"a": 1}\n```\n```json\n{"a": 2,}\n```')
    assert "not all valid" in problem.reason and problem.partial is None


def test_json_encoded_as_a_string_is_decoded():
    assert Fences().correct(r'"{\"a\": 1}"', OBJECT) == {"a": 1}
    assert Fences().correct(r"{\"a\": \"b\"}", OBJECT) == {"a": "b"}


def test_embedded_json_that_does_not_parse_is_handed_on():
    problem = refusal(Fences(), "Sure: {'a': 1,} ok?")
    assert problem.partial == "{'a': 1,}"


@pytest.mark.parametrize("text", ["", "   ", "no JSON here", "[1, 2]"])
def test_no_json_of_the_schema_kind_is_refused(text):
    problem = refusal(Fences(), text)
    assert problem.partial is None and "no fenced or embedded JSON" in problem.reason


# -- json-repair ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1, "b": [1, 2,],}', {"a": 1, "b": [1, 2]}),
        ("{'a': 'x', 'b': \"it's\"}", {"a": "x", "b": "it's"}),
        (r"{'a': 'it\'s'}", {"a": "it's"}),
        ('{"a": True, "b": None, "c": False}', {"a": True, "b": None, "c": False}),
        ('{a: 1, b_c: "x"}', {"a": 1, "b_c": "x"}),
        (
            '{\n  "a": 1, // it\'s {odd}\n  /* "b": 2 */ "c": "#3 // not a comment"\n}',
            {
                "a": 1,
                "c": "#3 // not a comment",
            },
        ),
        ("{“a”: “x y”, ‘b’: ‘z’}", {"a": "x y", "b": "z"}),
        (r'{\n  "a": 1,\n\t"b": 2\n}', {"a": 1, "b": 2}),
        ('{"a": "x\ny"}', {"a": "x\ny"}),
        ('{"a": 1 "b": 2}', {"a": 1, "b": 2}),
        ('{"a": "say "hi" now"}', {"a": 'say "hi" now'}),
        (r"{'a': 'caf\u00e9 \ud83d\ude00',}", {"a": "café 😀"}),
        ("{'a': 'x {y} [z] \"w\"',}", {"a": 'x {y} [z] "w"'}),
    ],
)
def test_json_repair_fixes_syntax(text, value):
    assert JsonRepair().correct(text, OBJECT) == value


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"a": "x', "inside the string that starts '\"x'"),
        ('{"a": 1', "inside the object that starts '{\"a\": 1'"),
        ('{"a": 1.', "inside the object"),
        ('{"a": tru', "inside the object"),
        ('{"a": 1, "b"', "inside the object"),
        ('{"a": 1, "b":', "inside the object"),
        ('{"a": [1, 2],', "inside the object"),
        ('{"tags": ["a", "b"', 'inside the list that starts \'["a", "b"\''),
        ('{"a": {"b": [1, {"c": "d"}]', 'inside the object that starts \'{"b": [1, {"c": "d"}]\''),
        ('{"a": true', "inside the object"),  # only the closer is missing: still cut off
        ('{"a": [1, 2]', "inside the object"),
        ("{'a': 'x', 'b': None", "inside the object"),
        ("{'a': 'it\\'s", "inside the string"),
        ('{"a": "C:\\', "inside the string"),
        ('{"a": 1, // note\n', "inside the object"),
        ('Here: {"a": 1, "b": [2', "inside the list"),
        ('```json\n{"a": [1, 2\n```', "inside the list"),
        ('{"a": 1} and {"a": 2', "inside the object"),
        ('{"a": 1}\n{"b": [', "inside the list"),
        ('{"a": "{\\"b\\": [1', "inside the string"),  # the JSON inside a string is no value
    ],
)
def test_a_value_cut_off_is_never_completed(text, where):
    for corrector in (Fences(), JsonRepair()):
        try:
            corrector.correct(text, OBJECT)
        except CutOff as exc:
            assert exc.reason.startswith(f"the output was cut off {where}"), exc.reason
            assert "cannot be known complete" in exc.reason
        except CannotCorrect as exc:
            assert isinstance(corrector, Fences), exc.reason  # json-repair always says why
        else:
            pytest.fail(f"{type(corrector).__name__} completed {text!r}")


def test_brackets_that_do_not_match_are_refused_but_not_as_a_cut_off():
    problem = refusal(JsonRepair(), '{"a": [1, 2}')
    assert not isinstance(problem, CutOff)
    assert "'}' closes the list" in problem.reason


def test_tier_2_tries_no_corrector_after_a_cut_off(kernel):
    tried = []

    class Completes:
        name = "completes"

        def correct(self, text: str, schema: dict[str, Any]) -> Any:
            tried.append(text)
            return {"a": 1}

    target = Target.json_object("object", OBJECT)
    chain = ("fences", "json-repair", Completes())
    with pytest.raises(CutOff):
        correct(kernel, "x", '{"a": 1', target, chain, kind="malformed", error="e")
    assert tried == []
    assert correct(kernel, "x", "{'a': 1}", target, chain, kind="malformed", error="e") == {"a": 1}


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b"}',  # json-repair drops "b"
        '{"a": 1, "b": }',  # json-repair fills in ""
        '{"a": [1, , 2]}',
        '{"a": 34 or 35}',
        '{"a": "x" "y"}',
        '{"a": "x" | "y"}',
        '{"a": 1, ...}',
        '{"a": 1}{"a": 2}',
        '{"a": {"x"}}',  # a Python set
        "{'a': 'x', 'a': 'y'}",
        "Here you go: {'a': 1}",  # prose is not JSON
    ],
)
def test_repairs_that_would_invent_drop_or_choose_are_refused(text):
    refusal(JsonRepair(), text)


# -- the backslash rule -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("written", "value"),
    [
        # every backslash starts a JSON escape: read as JSON reads it
        (r'"line\nbreak"', "line\nbreak"),
        (r'"tab\tand \"quotes\" and \\ and \/"', 'tab\tand "quotes" and \\ and /'),
        (r'"caf\u00e9 \ud83d\ude00"', "café 😀"),
        (r'"C:\\Users\\ann"', "C:\\Users\\ann"),
        (r"'it\'s'", "it's"),
        (r'"it\'s"', "it's"),
        (r'"C:\new\table"', "C:\new\table"),  # valid escapes: a strict parser reads the same
        # one backslash starts no JSON escape: the author wrote no escapes; all are kept
        (r'"C:\path\new"', "C:\\path\\new"),
        (r'"C:\Users\ann\Documents"', "C:\\Users\\ann\\Documents"),
        (r'"\\server\share"', "\\\\server\\share"),
        (r'"\d{3}-\d{4}"', "\\d{3}-\\d{4}"),
        (r'"\frac{a}{b} + \alpha"', "\\frac{a}{b} + \\alpha"),
        (r'"caf\u00e au lait"', "caf\\u00e au lait"),
        (r'"100\%"', "100\\%"),
        # ...except before the string's own closing quote: that is how its end was found
        (r'"dir \"C:\Program Files\""', 'dir "C:\\Program Files"'),
        (r"'C:\dir\'s \"x\"'", 'C:\\dir\'s \\"x\\"'),
        ("“C:\\temp\\x”", "C:\\temp\\x"),
    ],
)
def test_the_backslash_rule_keeps_the_authors_characters(written, value):
    assert string_value(written) == value
    # the same through json-repair, in output made malformed by a trailing comma
    assert JsonRepair().correct(f"{{'k': {written},}}", OBJECT) == {"k": value}


def test_the_backslash_rule_is_per_string():
    text = r'{"a": "C:\temp", "b": "\d+", "c": ["x\ny", "\w"],}'
    assert JsonRepair().correct(text, OBJECT) == {"a": "C:\temp", "b": "\\d+", "c": ["x\ny", "\\w"]}


def test_fences_and_json_repair_read_strings_alike():
    text = r'{"a": "C:\\dir\n", "b": "\u00e9"}'
    assert Fences().correct(f"```json\n{text}\n```", OBJECT) == json.loads(text)
    assert JsonRepair().correct(text[:-1] + ",}", OBJECT) == json.loads(text)


@given(st.text())
def test_strings_written_as_json_read_as_json(value):
    assert string_value(json.dumps(value)) == value
    assert string_value(json.dumps(value, ensure_ascii=False)) == value


PLAIN = st.text(st.characters(blacklist_characters='\\"'), max_size=3)
VALID = st.sampled_from(["\\n", "\\t", "\\\\", '\\"', "\\/", "\\u00e9"])
INVALID = st.sampled_from(["\\d", "\\p", "\\%", "\\a", "\\U", "\\ ", "\\u00ez", "\\x41"])


@given(st.lists(PLAIN | VALID | INVALID, max_size=8), INVALID, st.data())
def test_strings_not_written_with_escapes_keep_every_backslash(pieces, bad, data):
    at = data.draw(st.integers(0, len(pieces)))
    pieces.insert(at, bad)
    written = '"' + "".join(pieces) + '"'
    kept = "".join('"' if piece == '\\"' else piece for piece in pieces)
    assert string_value(written) == kept


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2}',
        '```json\n{"a": 1, "a": 2}\n```',
        'Here: {"a": {"b": 1, "b": 2}}',
        '{"a": NaN}',
        '{"a": [1, Infinity]}',
        '"{\\"a\\": 1, \\"a\\": 2}"',
    ],
)
def test_a_key_given_twice_or_a_number_json_has_not_is_never_chosen(text):
    for corrector in (Fences(), JsonRepair(), Coerce()):
        with pytest.raises(CannotCorrect):
            corrector.correct(text, OBJECT)


def test_a_key_given_twice_with_one_value_loses_nothing():
    assert JsonRepair().correct('{"a": 1, "a": 1}', OBJECT) == {"a": 1}


@pytest.mark.parametrize("text", ["", "   ", "no JSON here"])
def test_json_repair_refuses_empty_input(text):
    assert "no JSON value" in refusal(JsonRepair(), text).reason


def test_valid_json_is_left_to_the_next_corrector():
    assert "valid JSON" in refusal(JsonRepair(), '{"a": "7"}').reason


def test_every_repaired_value_is_traced_to_the_text(monkeypatch):
    import json_repair

    monkeypatch.setattr(json_repair, "loads", lambda text: {"a": "made up"})
    assert "invent 'made up'" in refusal(JsonRepair(), '{"a": 1,}').reason
    monkeypatch.setattr(json_repair, "loads", lambda text: {"a": 1})
    assert "drop 'b'" in refusal(JsonRepair(), '{"a": 1, "b": 2,}').reason
    monkeypatch.setattr(json_repair, "loads", lambda text: {"a": 1, "b": 2.0})
    assert JsonRepair().correct('{"a": 1, "b": 2.0,}', OBJECT) == {"a": 1, "b": 2.0}


# -- coerce -----------------------------------------------------------------------------------
def order(**item: Any) -> dict[str, Any]:
    return {"id": "o1", "items": [{"name": "tea", "count": 2, **item}]}


@pytest.mark.parametrize(
    ("item", "fixed"),
    [
        ({"count": "2"}, {"count": 2}),
        ({"count": " 2 "}, {"count": 2}),
        ({"count": 2.0}, {"count": 2}),  # a change inside a list is still a change
        ({"price": "1.5"}, {"price": 1.5}),
        ({"ok": "TRUE"}, {"ok": True}),
        ({"size": "L"}, {"size": "l"}),
        ({"note": 42}, {"note": "42"}),
    ],
)
def test_coerce_fixes_types_the_schema_names(item, fixed):
    value = Coerce().correct(json.dumps(order(**item)), ORDER)
    assert value == order(**fixed)
    assert [type(v) for v in value["items"][0].values()] == [
        type(v) for v in order(**fixed)["items"][0].values()
    ]


def test_coerce_unwraps_and_decodes():
    inner = order()
    assert Coerce().correct(json.dumps({"order": inner}), ORDER) == inner
    assert Coerce().correct(json.dumps(json.dumps(inner)), ORDER) == inner
    encoded = {"id": "o1", "items": json.dumps(inner["items"])}
    assert Coerce().correct(json.dumps(encoded), ORDER) == inner


@pytest.mark.parametrize(
    "item",
    [
        {"count": "2.5"},
        {"count": 2.5},
        {"count": "two"},
        {"count": True},
        {"ok": "yes"},
        {"ok": 1},
        {"size": "large"},
        {"note": None},  # already right: nothing to do
    ],
)
def test_coerce_refuses_what_no_rule_covers(item):
    assert "no coercion" in refusal(Coerce(), json.dumps(order(**item)), ORDER).reason


def test_coerce_does_not_unwrap_a_second_key_or_read_non_json():
    two = {"order": order(), "note": "rush"}
    assert "no coercion" in refusal(Coerce(), json.dumps(two), ORDER).reason
    assert "not JSON" in refusal(Coerce(), "{'id': 'o1'}", ORDER).reason


# -- the pipeline on the corpus ---------------------------------------------------------------
async def tier_2(kernel: Any, entry: dict[str, Any]) -> Any:
    """What tier 2 makes of the entry's output, dumped to JSON; None when it is unresolved."""
    finish = entry.get("finish", "stop")  # how the model said its answer ended
    response = ChatResponse([TextBlock(entry["output"])], finish_reason=finish)
    model = kernel.model("scripted:corpus", responses=[response])
    target = Target.of(SCHEMAS[entry["schema"]], kernel)
    try:
        value = await resolve(model, ASK, target, policy=TIER_2)
    except Unresolved:
        return None
    finally:
        assert len(model.calls) == 1, "tier 2 never calls a model"
    return kernel.codec.dump(value)


@pytest.mark.parametrize(("entries", "size"), [(ENTRIES, 300), (HELD_OUT, 100)])
async def test_the_corpus_is_ground_truth(kernel, entries, size):
    assert len(entries) >= size
    assert len({e["id"] for e in ENTRIES + HELD_OUT}) == len(ENTRIES + HELD_OUT)
    for entry in entries:
        cls = SCHEMAS[entry["schema"]]
        with pytest.raises((NotJSON, DecodeError)):
            Target.of(cls, kernel).parse(entry["output"])  # every output is a fault
        if entry["intended"] is not None:
            intended = kernel.codec.dump(kernel.codec.load(entry["intended"], cls))
            assert intended == entry["intended"], entry["id"]


@pytest.mark.parametrize(("entries", "share"), [(ENTRIES, 0.9), (HELD_OUT, 0.9)])
async def test_tier_2_fixes_the_corpus_without_a_wrong_fix(kernel, entries, share):
    fixed, wrong, missed = [], [], []
    for entry in entries:
        value = await tier_2(kernel, entry)
        if value is None:
            missed += [entry["id"]] if entry["intended"] is not None else []
        elif value == entry["intended"]:
            fixed.append(entry["id"])
        else:
            wrong.append((entry["id"], value))
    recoverable = sum(e["intended"] is not None for e in entries)
    assert wrong == []
    assert len(fixed) >= share * recoverable, f"missed: {missed}"
    assert all(f.tier == 2 and f.saved == 1 for f in kernel.faults.faults if f.tier)


def test_coerce_follows_local_references_as_pydantic_writes_them():
    schema = {
        "type": "object",
        "properties": {
            "pet": {"oneOf": [{"$ref": "#/$defs/Cat"}]},
            "home": {"allOf": [{"$ref": "#/$defs/Home"}], "description": "older pydantic"},
            "loop": {"$ref": "#/$defs/Loop"},
            "lost": {"$ref": "#/$defs/Nowhere"},
            "far": {"$ref": "https://example.invalid/schema.json"},
        },
        "$defs": {
            "Cat": {"type": "object", "properties": {"lives": {"type": "integer"}}},
            "Home": {"type": "object", "properties": {"floor": {"type": "integer"}}},
            "Loop": {"$ref": "#/$defs/Loop"},
        },
    }
    text = json.dumps({"pet": {"lives": "9"}, "home": {"floor": 2.0}, "loop": "1", "lost": "2"})
    assert Coerce().correct(text, schema) == {
        "pet": {"lives": 9},
        "home": {"floor": 2},
        "loop": "1",  # a reference to itself leads to nothing to coerce to
        "lost": "2",
    }
    assert "no coercion" in refusal(Coerce(), json.dumps({"far": "3"}), schema).reason
