"""The provider conformance suite: what every model provider must do, written once.

A provider's test module subclasses :class:`ProviderConformance` and gives it an
:class:`Adapter`: a fake server speaking the provider's wire protocol, and how to turn the
suite's neutral script (an :class:`Answer`, an HTTP failure, a cut stream) into that server's
replies. pytest then runs every test of the suite against the provider::

    class TestMyProvider(ProviderConformance):
        adapter = MyAdapter()

What a provider cannot do is declared in ``Adapter.lacks``; those tests are skipped with the
reason shown, never passed silently. The fixtures ``kernel`` and ``serve`` come from the aopkit
pytest plugin (loaded by its ``pytest11`` entry point).
"""

from __future__ import annotations

import abc
import base64
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import pytest
import pytest_asyncio

from aopkit.blocks import (
    Base64Source,
    Block,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from aopkit.errors import AopkitError
from aopkit.kernel import Kernel
from aopkit.message import Msg
from aopkit.models import ChatModel, ChatResponse, ModelError, ModelRejected, ModelUnavailable
from aopkit.retry import NO_RETRY, RetryPolicy
from aopkit.testing.fakes.base import FakeServer, Serve, html_page, null_body

FEATURES = frozenset({"streaming", "tools", "images", "thinking", "usage"})
KEY = "sk-conformance-DO-NOT-LEAK-5f3a9c"
FAST_RETRY = RetryPolicy(attempts=3, initial=0.01, max_wait=0.05, jitter=0.0)
HI = [Msg("sys", "Be brief.", "system"), Msg("user", "hi", "user")]
WEATHER = {
    "name": "weather",
    "description": "Weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "array"}},
        "required": ["city"],
    },
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(48))).decode()


@attrs.frozen
class Call:
    """A tool call the model makes."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@attrs.frozen
class Answer:
    """What the model answers, in no provider's words. ``usage`` is (input, output) tokens;
    None: the server reports none."""

    text: str = ""
    thinking: str = ""
    calls: tuple[Call, ...] = ()
    usage: tuple[int, int] | None = (12, 7)


class Adapter(abc.ABC):
    """One provider as the suite sees it. ``prefix`` and ``model`` name it (``prefix:model``);
    ``lacks`` names what of :data:`FEATURES` it cannot do; ``finish_reasons`` are the provider's
    words for an answer that ended and one that ended in tool calls."""

    prefix: ClassVar[str]
    model: ClassVar[str] = "test-model"
    lacks: ClassVar[frozenset[str]] = frozenset()
    finish_reasons: ClassVar[tuple[str, str]] = ("stop", "tool_calls")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if unknown := cls.lacks - FEATURES:
            raise AopkitError(
                f"{cls.__name__}.lacks names {sorted(unknown)}: the features are {sorted(FEATURES)}"
            )

    @abc.abstractmethod
    def server(self, key: str) -> FakeServer:
        """A new fake server of the provider that takes only ``key``."""

    @abc.abstractmethod
    def reply(self, answer: Answer, *, stream: bool) -> Any:
        """The server's reply carrying ``answer``, to a plain or a streamed request; a stream
        fragments text, thinking and (where the API does) tool arguments."""

    @abc.abstractmethod
    def failure(self, status: int, message: str, headers: Mapping[str, str]) -> Any:
        """The server's HTTP error ``status`` with ``message`` in the API's own error body."""

    @abc.abstractmethod
    def cut(self, answer: Answer) -> Any:
        """A streamed reply of ``answer`` whose connection ends midway through an event."""

    def options(self, base_url: str, key: str) -> dict[str, Any]:
        """The model options that point the provider at the fake server."""
        return {"base_url": base_url, "api_key": key}


def needs(*features: str) -> pytest.MarkDecorator:
    """Mark a test as needing ``features``; it is skipped for a provider that lacks one."""
    return pytest.mark.aopkit_needs(*features)


async def ask(model: ChatModel, messages: Sequence[Msg], stream: bool, **kw: Any) -> ChatResponse:
    """The whole answer, called plainly or streamed (then the last chunk)."""
    if stream:
        return (await chunks(model, messages, **kw))[-1]
    response = await model(messages, **kw)
    assert isinstance(response, ChatResponse)
    return response


async def chunks(model: ChatModel, messages: Sequence[Msg], **kw: Any) -> list[ChatResponse]:
    stream = await model(messages, stream=True, **kw)
    assert not isinstance(stream, ChatResponse)
    return [chunk async for chunk in stream]


def neutral(blocks: Sequence[Block]) -> list[Block]:
    """The blocks without ``extra``, where a provider keeps what is its own (item ids,
    signatures): the suite checks what every provider must give, not how it round-trips."""
    return [attrs.evolve(block, extra={}) for block in blocks]


def growing(texts: Sequence[str]) -> bool:
    """Cumulative chunks: each text extends the one before, over several distinct steps."""
    return len(set(texts)) > 3 and all(b.startswith(a) for a, b in itertools.pairwise(texts))


BOTH = pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])


class ProviderConformance:
    """The behaviour every provider must show. Subclass it with ``adapter = YourAdapter()``."""

    pytestmark = pytest.mark.asyncio  # for pytest-asyncio's strict mode too
    adapter: ClassVar[Adapter]

    @pytest.fixture(autouse=True)
    def _declared(self, request: pytest.FixtureRequest) -> None:
        needed = {f for mark in request.node.iter_markers("aopkit_needs") for f in mark.args}
        if "stream" in request.fixturenames and request.getfixturevalue("stream"):
            needed.add("streaming")
        if lacked := sorted(needed & self.adapter.lacks):
            pytest.skip(f"{self.adapter.prefix} declares it lacks {', '.join(lacked)}")

    @pytest_asyncio.fixture
    async def fake(self, serve: Serve) -> FakeServer:
        server = self.adapter.server(KEY)
        await server.start(serve)
        return server

    @pytest.fixture
    def model(self, kernel: Kernel, fake: FakeServer) -> Callable[..., ChatModel]:
        def make(**options: Any) -> ChatModel:
            given = {**self.adapter.options(fake.base_url, KEY), "retry": NO_RETRY, **options}
            made: ChatModel = kernel.model(f"{self.adapter.prefix}:{self.adapter.model}", **given)
            return made

        return make

    def then(self, fake: FakeServer, *answers: Answer, stream: bool) -> None:
        fake.then(*(self.adapter.reply(a, stream=stream) for a in answers))

    # -- answers --------------------------------------------------------------------------------
    @BOTH
    async def test_an_answer_is_text_with_usage_and_finish_reason(
        self, fake: FakeServer, model: Callable[..., ChatModel], stream: bool
    ) -> None:
        self.then(fake, Answer("Hello there, world!", usage=(12, 7)), stream=stream)
        response = await ask(model(), HI, stream)
        assert neutral(response.content) == [TextBlock("Hello there, world!")]
        assert response.finish_reason == self.adapter.finish_reasons[0]
        assert len(fake.requests) == 1

    @needs("usage")
    @BOTH
    async def test_reported_usage_comes_through(
        self, fake: FakeServer, model: Callable[..., ChatModel], stream: bool
    ) -> None:
        self.then(fake, Answer("Hello there, world!", usage=(12, 7)), stream=stream)
        usage = (await ask(model(), HI, stream)).usage
        assert usage is not None and (usage.input_tokens, usage.output_tokens) == (12, 7)

    @BOTH
    async def test_usage_not_reported_is_unknown_not_zero(
        self, fake: FakeServer, model: Callable[..., ChatModel], stream: bool
    ) -> None:
        self.then(fake, Answer("Hello there, world!", usage=None), stream=stream)
        response = await ask(model(), HI, stream)
        assert response.text == "Hello there, world!"
        assert response.usage is not None
        assert (response.usage.input_tokens, response.usage.output_tokens) == (None, None)

    @needs("streaming")
    async def test_a_stream_grows_and_only_its_last_chunk_is_final(
        self, fake: FakeServer, model: Callable[..., ChatModel]
    ) -> None:
        self.then(fake, Answer("Hello there, world! How are you?"), stream=True)
        got = await chunks(model(), HI)
        assert growing([c.text for c in got]), [c.text for c in got]
        assert neutral(got[-1].content) == [TextBlock("Hello there, world! How are you?")]
        assert got[-1].finish_reason == self.adapter.finish_reasons[0]
        assert all(c.finish_reason is None for c in got[:-1])

    # -- tools ----------------------------------------------------------------------------------
    @needs("tools")
    @BOTH
    async def test_parallel_tool_calls_with_fragmented_arguments(
        self, fake: FakeServer, model: Callable[..., ChatModel], stream: bool
    ) -> None:
        args = {"city": "Saint-Rémy-de-Provence", "days": [1, 2, 3]}
        calls = (Call("call_1", "weather", args), Call("call_2", "weather", {"city": "Rome"}))
        self.then(fake, Answer("On it.", calls=calls), stream=stream)
        expected = [ToolUseBlock(c.id, c.name, dict(c.arguments)) for c in calls]
        if stream:
            got = await chunks(model(), HI, tools=[WEATHER])
            # a call shows only once whole: never a half-parsed argument
            assert all(neutral(c.tool_uses) == expected[: len(c.tool_uses)] for c in got)
            response = got[-1]
        else:
            response = await ask(model(), HI, False, tools=[WEATHER])
        assert [(u.name, u.input) for u in response.tool_uses] == [
            (u.name, u.input) for u in expected
        ]
        assert len({u.id for u in response.tool_uses}) == 2
        assert response.text == "On it."
        assert response.finish_reason == self.adapter.finish_reasons[1]
        assert "Weather in a city." in json.dumps(fake.requests[0])

    @needs("tools")
    @BOTH
    async def test_a_tool_history_is_sent_back_as_the_api_expects(
        self, fake: FakeServer, model: Callable[..., ChatModel], stream: bool
    ) -> None:
        call = Call("call_7", "weather", {"city": "Paris"})
        self.then(fake, Answer(calls=(call,)), Answer("Sunny in Paris."), stream=stream)
        first = await ask(model(), HI, stream, tools=[WEATHER])
        (use,) = first.tool_uses
        history = [
            *HI,
            first.to_msg("bot"),
            Msg("tools", [ToolResultBlock(use.id, use.name, "sunny, 24C")], "user"),
        ]
        # the fake server refuses (400) a history its API would refuse
        assert (await ask(model(), history, stream, tools=[WEATHER])).text == "Sunny in Paris."
        sent = json.dumps(fake.requests[1])
        assert "sunny, 24C" in sent and "Paris" in sent

    # -- media and thinking ---------------------------------------------------------------------
    @needs("images")
    @BOTH
    async def test_an_image_reaches_the_server(
        self, fake: FakeServer, model: Callable[..., ChatModel], stream: bool
    ) -> None:
        self.then(fake, Answer("A small picture."), stream=stream)
        picture = ImageBlock(Base64Source("image/png", PNG))
        ask_about = [Msg("user", [TextBlock("What is this?"), picture], "user")]
        assert (await ask(model(), ask_about, stream)).text == "A small picture."
        assert PNG in json.dumps(fake.requests[0])

    @needs("thinking")
    @BOTH
    async def test_thinking_becomes_a_thinking_block_before_the_text(
        self, fake: FakeServer, model: Callable[..., ChatModel], stream: bool
    ) -> None:
        thought = "France's capital is Paris, of course."
        self.then(fake, Answer("Paris.", thinking=thought), stream=stream)
        if stream:
            got = await chunks(model(), HI)
            thoughts = [b.thinking for c in got for b in c.content if isinstance(b, ThinkingBlock)]
            assert growing(thoughts), thoughts
            response = got[-1]
        else:
            response = await ask(model(), HI, False)
        first, last = response.content[0], response.content[-1]
        assert isinstance(first, ThinkingBlock) and first.thinking == thought
        assert isinstance(last, TextBlock) and last.text == "Paris."

    # -- errors and retries ---------------------------------------------------------------------
    @BOTH
    async def test_a_rate_limit_is_retryable_with_the_servers_wait(
        self, fake: FakeServer, model: Callable[..., ChatModel], stream: bool
    ) -> None:
        fake.then(self.adapter.failure(429, "Rate limit reached.", {"Retry-After": "7"}))
        with pytest.raises(ModelUnavailable, match="Rate limit reached") as info:
            await ask(model(), HI, stream)
        assert info.value.status == 429 and info.value.retry_after == 7.0

    @pytest.mark.parametrize("status", [500, 503])
    async def test_a_server_error_is_retried(
        self, fake: FakeServer, model: Callable[..., ChatModel], status: int
    ) -> None:
        fake.then(self.adapter.failure(status, "The server had an error.", {}))
        self.then(fake, Answer("Fine now."), stream=False)
        assert (await ask(model(retry=FAST_RETRY), HI, False)).text == "Fine now."
        assert len(fake.requests) == 2

    @BOTH
    async def test_a_bad_request_is_rejected_with_the_apis_message(
        self, fake: FakeServer, model: Callable[..., ChatModel], stream: bool
    ) -> None:
        fake.then(self.adapter.failure(400, "Invalid value for 'temperature'.", {}))
        with pytest.raises(ModelRejected, match="Invalid value for 'temperature'") as info:
            await ask(model(retry=FAST_RETRY), HI, stream)
        assert info.value.status == 400 and len(fake.requests) == 1

    @needs("streaming")
    async def test_a_cut_stream_is_retryable_and_retried_from_the_start(
        self, fake: FakeServer, model: Callable[..., ChatModel]
    ) -> None:
        fake.then(self.adapter.cut(Answer("Hello there, world!")))
        with pytest.raises(ModelUnavailable):
            await chunks(model(), HI)
        fake.then(self.adapter.cut(Answer("Hello there, world!")))
        self.then(fake, Answer("Hello there, world!"), stream=True)
        got = await chunks(model(retry=FAST_RETRY), HI)
        assert got[-1].text == "Hello there, world!" and len(fake.requests) == 3

    @BOTH
    async def test_an_html_error_page_is_a_short_retryable_error(
        self, fake: FakeServer, model: Callable[..., ChatModel], stream: bool
    ) -> None:
        fake.then(html_page(502))
        with pytest.raises(ModelUnavailable) as info:
            await ask(model(), HI, stream)
        assert info.value.status == 502 and "<" not in str(info.value)
        fake.then(html_page(502))
        self.then(fake, Answer("Back."), stream=stream)
        assert (await ask(model(retry=FAST_RETRY), HI, stream)).text == "Back."

    async def test_a_null_body_is_a_model_error(
        self, fake: FakeServer, model: Callable[..., ChatModel]
    ) -> None:
        fake.then(null_body())
        with pytest.raises(ModelError):
            await model()(HI)

    # -- secrets --------------------------------------------------------------------------------
    @BOTH
    async def test_the_key_never_shows_in_reprs_or_errors(
        self, fake: FakeServer, model: Callable[..., ChatModel], stream: bool
    ) -> None:
        keyed = model()
        assert KEY not in repr(keyed) and KEY not in repr(vars(keyed))
        echoed = f"Incorrect API key provided: {KEY}."
        fake.then(self.adapter.failure(401, echoed, {}))
        with pytest.raises(ModelRejected) as rejected:
            await ask(keyed, HI, stream)
        fake.then(self.adapter.failure(429, echoed, {"Retry-After": "1"}))
        with pytest.raises(ModelUnavailable) as unavailable:
            await ask(keyed, HI, stream)
        for error in (rejected.value, unavailable.value):
            assert "Incorrect API key provided" in str(error)
            assert KEY not in str(error) and KEY not in error.message
