"""The cassette file: misses that name the difference, atomic writes, no secrets, stable JSON."""

import json
import os

import pytest

import aopkit_replay.cassette
from aopkit import Kernel, Msg, hookimpl
from aopkit.models import ModelRejected
from aopkit.secret import Secret
from aopkit_replay import CassetteError, CassetteMiss
from aopkit_scripted import ScriptedModel

SEARCH = {
    "name": "search",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
}
CALC = {"name": "calc", "parameters": {"type": "object"}}
KEY = "sk-test-RECOGNISABLE-0123456789"


def talk(text="hello", *more):
    return [Msg("system", "Be brief.", "system"), Msg("user", text, "user"), *more]


@pytest.fixture
async def recorded(kernel, tmp_path):
    """A cassette holding one request with a tool and tool_choice, and a player for it."""
    cassette = tmp_path / "c.json"
    recorder = kernel.model("replay:scripted:x", cassette=cassette, mode="record", responses=["a"])
    await recorder(talk(), tools=[SEARCH], tool_choice="auto")
    player = Kernel().model("replay:scripted:x", cassette=cassette)
    yield player
    await player.kernel.aclose()


@pytest.mark.parametrize(
    ("changes", "difference"),
    [
        ({"messages": talk("hullo")}, "messages[1].content: recorded 'hello', got 'hullo'"),
        ({"tools": [SEARCH, CALC]}, "tools: recorded ['search'], got ['search', 'calc']"),
        ({"tools": []}, "tools: recorded ['search'], got []"),
        (
            {"tools": [{**SEARCH, "parameters": {"type": "object", "properties": {"q": {}}}}]},
            "tools[0].parameters.properties.q.type: recorded 'string', got nothing",
        ),
        (
            {"messages": talk("hello", Msg("user", "and?", "user"))},
            "messages[2]: recorded nothing, got {'name': 'user', 'content': 'and?'",
        ),
        ({"messages": talk()[:1]}, "messages[1]: recorded {'content': 'hello'"),
        (
            {"messages": [talk()[0], Msg("bob", "hello", "user")]},
            "messages[1].name: recorded 'user', got 'bob'",
        ),
        ({"tool_choice": "required"}, "tool_choice: recorded 'auto', got 'required'"),
        ({"structured": {"type": "object"}}, "structured: recorded None, got {'type': 'object'}"),
    ],
)
async def test_a_miss_names_the_difference(recorded, changes, difference):
    call = {"messages": talk(), "tools": [SEARCH], "tool_choice": "auto", **changes}
    messages = call.pop("messages")
    with pytest.raises(CassetteMiss) as miss:
        await recorded(messages, **call)
    assert [d for d in miss.value.differences if d.startswith(difference)]
    assert difference in str(miss.value)
    assert "mode='record' or mode='auto'" in str(miss.value)


async def test_a_miss_compares_with_the_closest_request_and_shows_where_long_texts_differ(
    kernel, tmp_path
):
    cassette = tmp_path / "c.json"
    story = "Once upon a time there was a kernel that loaded plugins by entry point. The end."
    recorder = kernel.model(
        "replay:scripted:x", cassette=cassette, mode="record", responses=["a", "b"]
    )
    await recorder(talk("something else entirely"))
    await recorder(talk(story))

    async with Kernel() as later:
        player = later.model("replay:scripted:x", cassette=cassette)
        with pytest.raises(CassetteMiss) as miss:
            await player(talk(story.replace("entry point", "entry-point")))
    assert miss.value.differences == [
        "messages[1].content: recorded '...ded plugins by entry point. The end.', "
        "got '...ded plugins by entry-point. The end.'"
    ]


async def test_an_empty_cassette_says_so(kernel, tmp_path):
    cassette = tmp_path / "c.json"
    cassette.write_text('{"aopkit_cassette": 1, "models": {"scripted:x": {"capabilities": {}}}}')
    player = kernel.model("replay:scripted:x", cassette=cassette)
    with pytest.raises(CassetteMiss, match="holds no recorded request"):
        await player(talk())


async def test_a_failed_write_keeps_the_old_cassette_and_records_nothing_twice(
    kernel, tmp_path, monkeypatch
):
    cassette = tmp_path / "c.json"
    recorder = kernel.model(
        "replay:scripted:x", cassette=cassette, mode="record", responses=["a", "-", "-", "b", "c"]
    )
    await recorder(talk())
    before = cassette.read_bytes()

    def crash(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(aopkit_replay.cassette.os, "fsync", crash)
    for messages in (talk(), talk("new")):  # a request already recorded, and a new one
        with pytest.raises(CassetteError, match=r"could not write cassette .*No space left"):
            await recorder(messages)
    assert cassette.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.json"]  # no temporary file left behind
    monkeypatch.undo()

    assert (await recorder(talk())).text == "b"  # the calls made again are recorded once
    assert len(json.loads(cassette.read_text())["interactions"]) == 1  # nothing of "new" yet
    assert (await recorder(talk("new"))).text == "c"
    async with Kernel() as later:
        player = later.model("replay:scripted:x", cassette=cassette)
        assert [(await player(m)).text for m in (talk(), talk(), talk("new"))] == ["a", "b", "c"]
        with pytest.raises(CassetteMiss, match=r"recorded 1 time\(s\)"):
            await player(talk("new"))


class KeyedModel(ScriptedModel):
    """A scripted model that takes an API key, as a real provider does."""

    provider = "keyed"

    def __init__(self, model, *, kernel, api_key, extra_body=None, **options):
        super().__init__(model, kernel=kernel, **options)
        self.api_key, self.extra_body = Secret(api_key), extra_body


class KeyedPlugin:
    @hookimpl
    def register_models(self, register):
        register("keyed", KeyedModel)


async def test_keys_never_reach_the_cassette_reprs_or_errors(kernel, tmp_path):
    kernel.register(KeyedPlugin(), "keyed")
    cassette = tmp_path / "c.json"
    careless = ModelRejected("keyed:x", f"invalid key {KEY} for this project", status=401)
    recorder = kernel.model(
        "replay:keyed:x",
        cassette=cassette,
        mode="record",
        api_key=KEY,
        extra_body=Secret("tok-SECRET-abc"),
        responses=["ok", careless],
    )
    await recorder(talk())
    with pytest.raises(ModelRejected):
        await recorder(talk("again"))
    text = cassette.read_text()
    assert KEY not in text and "tok-SECRET-abc" not in text and "invalid key ***" in text
    assert KEY not in repr(recorder)

    async with Kernel() as later:
        player = later.model("replay:keyed:x", cassette=cassette, api_key=KEY)
        assert KEY not in repr(player)
        with pytest.raises(ModelRejected) as replayed:
            await player(talk("again"))
        with pytest.raises(CassetteMiss) as miss:
            await player(talk("unknown"))
    assert str(replayed.value) == "keyed:x (HTTP 401): invalid key *** for this project"
    assert KEY not in str(miss.value)


async def test_the_file_is_stable_readable_json(kernel, tmp_path):
    """Recording the same session twice gives the same bytes: ids and timestamps of messages
    are left out, keys are sorted, the JSON is indented."""
    outputs = []
    for run in ("one", "two"):
        async with Kernel() as k:
            path = tmp_path / f"{run}.json"
            model = k.model("replay:scripted:x", cassette=path, mode="record", responses=["a", "b"])
            await model(talk(), tools=[SEARCH])
            async for _ in await model(talk("stream it"), stream=True):
                pass
            outputs.append(path.read_text())
    assert outputs[0] == outputs[1]
    data = json.loads(outputs[0])
    assert outputs[0] == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert data["aopkit_cassette"] == 1
    first = data["interactions"][0]
    assert first["request"]["messages"][1] == {
        "name": "user",
        "role": "user",
        "content": "hello",
        "metadata": {},
    }
    assert first["responses"][0]["response"]["content"] == [{"type": "text", "text": "a"}]
    assert data["models"]["scripted:x"]["capabilities"]["streaming"] is True


async def test_a_corrupt_cassette_names_the_bad_field(kernel, tmp_path):
    cassette = tmp_path / "c.json"
    recorder = kernel.model("replay:scripted:x", cassette=cassette, mode="record", responses=["a"])
    await recorder(talk())
    data = json.loads(cassette.read_text())
    data["interactions"][0]["responses"][0]["response"]["content"][0]["text"] = 42
    cassette.write_text(json.dumps(data))
    bad = r"interactions\[0\]\.responses\[0\]\.response\.content\[0\]\.text: expected a string"
    with pytest.raises(CassetteError, match=bad):
        kernel.model("replay:scripted:x", cassette=cassette)

    cassette.write_text("{not json")
    with pytest.raises(CassetteError, match="is not valid JSON"):
        kernel.model("replay:scripted:x", cassette=cassette)
    cassette.write_text('{"interactions": []}')
    with pytest.raises(CassetteError, match="not an aopkit cassette of version 1"):
        kernel.model("replay:scripted:x", cassette=cassette)


def _unreadable_directory(cassette):
    cassette.mkdir()


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (lambda c: c.write_bytes(os.urandom(200) + b"\xff"), "is not valid JSON"),
        (lambda c: c.write_bytes(b'{"aopkit_cassette": 1, "x": "\xff"}'), "not valid UTF-8"),
        (lambda c: c.write_text("[" * 100_000), "nested"),
        (lambda c: c.write_text('{"aopkit_cassette": 1, "models": NaN}'), "models: NaN"),
        (lambda c: c.write_bytes(c.read_bytes()[:150]), "is not valid JSON"),
        (_unreadable_directory, "cannot read cassette .*Is a directory"),
    ],
)
async def test_a_damaged_cassette_file_is_a_cassette_error(kernel, tmp_path, corrupt, problem):
    cassette = tmp_path / "c.json"
    recorder = kernel.model("replay:scripted:x", cassette=cassette, mode="record", responses=["a"])
    await recorder(talk())
    if corrupt is _unreadable_directory:
        cassette.unlink()
    corrupt(cassette)
    for mode in ("replay", "auto"):
        with pytest.raises(CassetteError, match=problem):
            kernel.model("replay:scripted:x", cassette=cassette, mode=mode)


async def test_a_killed_recorders_temp_file_is_removed_by_the_next_load_or_write(kernel, tmp_path):
    cassette = tmp_path / "c.json"
    recorder = kernel.model(
        "replay:scripted:x", cassette=cassette, mode="record", responses=["a", "b"]
    )
    await recorder(talk())
    (tmp_path / ".c.json.killed1.tmp").write_text("half")
    kernel.model("replay:scripted:x", cassette=cassette, mode="replay")
    assert os.listdir(tmp_path) == ["c.json"]
    (tmp_path / ".c.json.killed2.tmp").write_text("half")
    await recorder(talk("again"))
    assert os.listdir(tmp_path) == ["c.json"]


async def test_a_value_json_cannot_hold_is_not_recorded(kernel, tmp_path):
    """NaN would be written, then refused at load: it is refused at record time instead."""
    cassette = tmp_path / "c.json"
    recorder = kernel.model("replay:scripted:x", cassette=cassette, mode="record", responses=["a"])
    with pytest.raises(CassetteError, match=r"could not write cassette .*JSON compliant"):
        await recorder([Msg("user", "x", "user", metadata={"score": float("nan")})])
    assert not cassette.exists()
