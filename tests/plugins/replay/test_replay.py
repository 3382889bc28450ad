"""Record with the scripted model, replay offline: same answers, same chunks, same errors."""

import json

import attrs
import pytest

from aopkit import (
    ImageBlock,
    Kernel,
    Msg,
    ReActAgent,
    TextBlock,
    ThinkingBlock,
    Toolkit,
    ToolUseBlock,
    UnknownBlock,
    URLSource,
)
from aopkit.models import (
    Capabilities,
    ChatModel,
    ChatResponse,
    ModelRejected,
    ModelUnavailable,
    Usage,
)
from aopkit.retry import NO_RETRY, RetryPolicy
from aopkit_replay import CassetteError, CassetteMiss, ReplayModel

FAST = RetryPolicy(attempts=3, initial=0, jitter=0)
SEARCH = {"name": "search", "parameters": {"type": "object", "properties": {"q": {}}}}


def hi(text="hi"):
    """Fresh messages each time: new ids and timestamps must not matter."""
    return [Msg("system", "Be brief.", "system"), Msg("user", text, "user")]


@pytest.fixture
async def fresh(tmp_path):
    """``fresh()`` is a new kernel, as a later run of the same program would have."""
    kernels = []

    def make():
        kernels.append(Kernel(environ={"AOPKIT_INCIDENTS": str(tmp_path / "later.jsonl")}))
        return kernels[-1]

    yield make
    for kernel in kernels:
        await kernel.aclose()


@pytest.fixture
def later(fresh):
    return fresh()


async def test_replay_returns_what_was_recorded_without_the_model(kernel, later, tmp_path):
    cassette = tmp_path / "c.json"
    rich = ChatResponse(
        [
            ThinkingBlock("let me see", extra={"signature": "sig=="}),
            TextBlock("Here.", extra={"id": "msg_1"}),
            ToolUseBlock("c1", "search", {"q": "moons"}),
            ToolUseBlock("c2", "search", {}, raw_input='{"q": "mo'),
            ImageBlock(URLSource("https://example.invalid/a.png", "image/png")),
            UnknownBlock("citation", {"url": "u", "n": 2}),
        ],
        Usage(12, 34, 0.25),
        "tool_use",
        "resp-1",
    )
    recorder = kernel.model(
        "replay:scripted:x", cassette=cassette, mode="record", responses=["first", rich]
    )
    answers = [await recorder(hi()), await recorder(hi("more"), tools=[SEARCH])]

    player = later.model("replay:scripted:x", cassette=cassette, mode="replay")
    assert player.inner is None
    replayed = [await player(hi()), await player(hi("more"), tools=[SEARCH])]
    # the same answers, but a replayed call takes no time (seconds vary: they are not recorded)
    assert replayed == [attrs.evolve(a, usage=attrs.evolve(a.usage, seconds=0.0)) for a in answers]
    # ids are named after the request, so that recording the session again gives the same file
    key = json.loads(cassette.read_text())["interactions"][1]["fingerprint"]
    assert [b.id for b in answers[1].tool_uses] == [f"call_{key}_0_0", f"call_{key}_0_1"]
    assert answers[1].id == f"resp_{key}_0"
    steady = attrs.evolve(answers[1], id="resp-1", content=rich.content)
    assert steady == rich


async def test_streamed_calls_replay_the_same_chunks(kernel, later, tmp_path):
    cassette = tmp_path / "c.json"
    final = ChatResponse([TextBlock("hello there, world")], Usage(3, 4), "stop", "r1")
    recorder = kernel.model(
        "replay:scripted:x", cassette=cassette, mode="record", responses=[final], chunk_size=5
    )
    recorded = [r async for r in await recorder(hi(), stream=True)]
    assert len(recorded) == 4 and attrs.evolve(recorded[-1], id="r1") == final
    key = json.loads(cassette.read_text())["interactions"][0]["fingerprint"]
    assert {r.id for r in recorded} == {f"resp_{key}_0"}

    player = later.model("replay:scripted:x", cassette=cassette)
    assert [r async for r in await player(hi(), stream=True)] == recorded
    with pytest.raises(CassetteMiss, match="stream: recorded True, got False"):
        await player(hi())


async def test_repeated_requests_replay_in_order_then_fail_loudly(kernel, later, tmp_path):
    cassette = tmp_path / "c.json"
    recorder = kernel.model(
        "replay:scripted:x", cassette=cassette, mode="record", responses=["one", "two"]
    )
    assert [(await recorder(hi())).text for _ in range(2)] == ["one", "two"]
    assert len(json.loads(cassette.read_text())["interactions"]) == 1

    player = later.model("replay:scripted:x", cassette=cassette)
    assert [(await player(hi())).text for _ in range(2)] == ["one", "two"]
    with pytest.raises(CassetteMiss, match=r"recorded 2 time\(s\).*call 3 of it") as miss:
        await player(hi())
    assert miss.value.differences == []


async def test_auto_replays_what_is_recorded_and_records_the_rest(kernel, fresh, tmp_path):
    cassette = tmp_path / "c.json"
    first = kernel.model("replay:scripted:x", cassette=cassette, mode="record", responses=["a"])
    await first(hi())

    auto = fresh().model("replay:scripted:x", cassette=cassette, mode="auto", responses=["b", "c"])
    assert (await auto(hi())).text == "a"
    assert auto.inner.calls == []  # replayed: the model was not asked
    assert (await auto(hi("new"))).text == "b"
    assert (await auto(hi())).text == "c"  # one call more than recorded: recorded too
    assert len(auto.inner.calls) == 2

    player = fresh().model("replay:scripted:x", cassette=cassette)
    assert [(await player(m)).text for m in (hi(), hi("new"), hi())] == ["a", "b", "c"]


async def test_replay_builds_no_inner_model_and_needs_no_plugin(kernel, tmp_path):
    """A cassette written by hand, in the documented format, for a provider nobody installed."""
    cassette = tmp_path / "demo.json"
    request = {
        "model": "nonexistent-provider:x",
        "messages": [{"name": "user", "role": "user", "content": "hi", "metadata": {}}],
        "tools": [],
        "tool_choice": None,
        "structured": None,
        "stream": False,
    }
    caps = {"streaming": False, "tools": False, "media": []}
    cassette.write_text(
        json.dumps(
            {
                "aopkit_cassette": 1,
                "models": {"nonexistent-provider:x": {"capabilities": caps}},
                "interactions": [
                    {
                        "request": request,
                        "responses": [{"response": {"content": [{"type": "text", "text": "yo"}]}}],
                    }
                ],
            }
        )
    )
    model = kernel.model(
        "replay:nonexistent-provider:x", cassette=cassette, mode="replay", api_key="unused"
    )
    assert (await model([Msg("user", "hi", "user")])).text == "yo"
    assert model.capabilities == Capabilities(streaming=False, tools=False, media=frozenset())
    with pytest.raises(ModelRejected, match="does not stream"):
        await model([Msg("user", "hi", "user")], stream=True)


async def test_recorded_errors_replay_as_the_same_error_and_retry_alike(kernel, fresh, tmp_path):
    cassette = tmp_path / "c.json"
    busy = ModelUnavailable("scripted:x", "overloaded", status=503, retry_after=0)
    bad = ModelRejected("scripted:x", "context too long", status=400)
    recorder = kernel.model(
        "replay:scripted:x",
        cassette=cassette,
        mode="record",
        retry=FAST,
        responses=[busy, "fine", bad],
    )
    assert (await recorder(hi())).text == "fine"  # after one retry
    with pytest.raises(ModelRejected) as rejected:
        await recorder(hi("long"))

    later = fresh()
    player = later.model("replay:scripted:x", cassette=cassette, retry=FAST)
    assert (await player(hi())).text == "fine"
    assert [(f.kind, f.resolver, f.calls) for f in later.faults.faults] == [
        ("accessibility", "retry", 1)
    ]
    with pytest.raises(ModelRejected) as replayed:
        await player(hi("long"))
    assert str(replayed.value) == str(rejected.value) == "scripted:x (HTTP 400): context too long"

    no_retry = fresh().model("replay:scripted:x", cassette=cassette, retry=NO_RETRY)
    with pytest.raises(ModelUnavailable) as unavailable:
        await no_retry(hi())
    assert unavailable.value.status == 503 and unavailable.value.retry_after == 0
    assert str(unavailable.value) == str(busy)


class CutStream(ChatModel):
    """Streams two chunks, then the connection drops."""

    provider = "cut"

    async def _stream(self, **request):
        yield ChatResponse([TextBlock("Hel")])
        yield ChatResponse([TextBlock("Hello")])
        raise ModelUnavailable(self.name, "stream cut")


async def test_a_cut_stream_replays_its_chunks_then_the_error(kernel, later, tmp_path):
    cassette = tmp_path / "c.json"
    inner = CutStream("m", kernel=kernel)
    inner.retry = NO_RETRY
    recorder = ReplayModel.wrap(inner, cassette=cassette, mode="record")
    seen = []
    with pytest.raises(ModelUnavailable, match="stream cut"):
        async for chunk in await recorder(hi(), stream=True):
            seen.append(chunk.text)

    player = ReplayModel.wrap(CutStream("m", kernel=later), cassette=cassette)
    player.retry = NO_RETRY
    replayed = []
    with pytest.raises(ModelUnavailable, match=r"^cut:m: stream cut$"):
        async for chunk in await player(hi(), stream=True):
            replayed.append(chunk.text)
    assert replayed == seen == ["Hel", "Hello"]


async def test_wrap_records_and_replays_a_model_object(kernel, later, tmp_path):
    cassette = tmp_path / "c.json"
    scripted = kernel.model("scripted:x", responses=["wrapped"])
    recorder = ReplayModel.wrap(scripted, cassette=cassette, mode="record")
    assert recorder.name == "replay:scripted:x"
    assert recorder.capabilities == scripted.capabilities
    await recorder(hi())

    untouched = later.model("scripted:x")  # no responses: it would fail if it were called
    player = ReplayModel.wrap(untouched, cassette=cassette)
    assert (await player(hi())).text == "wrapped"
    assert untouched.calls == []


async def test_agents_sharing_a_cassette_replay_their_own_answers(kernel, later, tmp_path):
    """Two agents' models ask the same thing: one cassette, one order, each its own answer."""
    cassette = tmp_path / "c.json"
    alice = kernel.model("replay:scripted:x", cassette=cassette, mode="record", responses=["A"])
    bob = kernel.model("replay:scripted:x", cassette=cassette, mode="record", responses=["B"])
    assert [(await alice(hi())).text, (await bob(hi())).text] == ["A", "B"]

    alice = later.model("replay:scripted:x", cassette=cassette)
    bob = later.model("replay:scripted:x", cassette=cassette)
    assert [(await alice(hi())).text, (await bob(hi())).text] == ["A", "B"]


async def test_capabilities_are_recorded_and_reported_in_replay(kernel, later, tmp_path):
    cassette = tmp_path / "c.json"
    declared = Capabilities(parallel_tool_calls=False, media=frozenset({"audio", "image"}))
    recorder = kernel.model(
        "replay:scripted:x",
        cassette=cassette,
        mode="record",
        capabilities=declared,
        responses=["ok"],
    )
    assert recorder.inner.capabilities == recorder.capabilities == declared
    await recorder(hi())
    assert later.model("replay:scripted:x", cassette=cassette).capabilities == declared


async def test_configuration_mistakes_are_clear_errors(kernel, later, tmp_path):
    with pytest.raises(CassetteError, match=r"no cassette at .*record one first"):
        kernel.model("replay:scripted:x", cassette=tmp_path / "missing.json")
    with pytest.raises(CassetteError, match="mode must be one of 'record', 'replay', 'auto'"):
        kernel.model("replay:scripted:x", cassette=tmp_path / "c.json", mode="recrod")
    with pytest.raises(CassetteError, match="mode must be one of"):
        ReplayModel.wrap(kernel.model("scripted:x"), cassette=tmp_path / "c.json", mode="rec")
    with pytest.raises(Exception, match="look like 'replay:<provider>:<model>'"):
        kernel.model("replay:gpt", cassette=tmp_path / "c.json")

    recorder = kernel.model(
        "replay:scripted:x", cassette=tmp_path / "c.json", mode="record", responses=["a"]
    )
    await recorder(hi())
    with pytest.raises(CassetteError, match=r"no recording of scripted:y \(it has: scripted:x\)"):
        later.model("replay:scripted:y", cassette=tmp_path / "c.json")


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


async def test_a_react_agent_with_tools_replays_its_whole_run(kernel, later, tmp_path):
    cassette = tmp_path / "c.json"

    def helper(k, model):
        return ReActAgent(
            "helper", model, toolkit=Toolkit([multiply], kernel=k), kernel=k, stream=True
        )

    call = [ToolUseBlock("c1", "multiply", {"a": 6, "b": 7})]
    recorder = kernel.model(
        "replay:scripted:brain", cassette=cassette, mode="record", responses=[call, "It is 42."]
    )
    first = await helper(kernel, recorder)(Msg("user", "What is 6 times 7?", "user"))

    player = later.model("replay:scripted:brain", cassette=cassette)
    again = await helper(later, player)(Msg("user", "What is 6 times 7?", "user"))
    assert again.text == first.text == "It is 42."
