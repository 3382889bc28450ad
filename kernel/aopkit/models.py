"""The model interface every provider plugin implements, and what a call returns."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

from .blocks import Block, TextBlock, ThinkingBlock, ToolUseBlock
from .errors import AopkitError
from .events import ModelCallFinished, ModelCallStarted, Retried
from .message import Msg, as_input, new_id
from .retry import RetryPolicy
from .structured import strict_loads

if TYPE_CHECKING:
    from .codec import Codec
    from .faults import Fault, FaultPolicy
    from .kernel import Kernel
    from .turns import Turns
    from .usage import Scope, Ticket

ToolChoice = Literal["auto", "none", "required"] | str  # or the name of one tool
MEDIA_KINDS = ("image", "audio", "video")


@attrs.frozen
class Capabilities:
    """What a model accepts and does, declared by its provider (never guessed from its name)."""

    streaming: bool = True
    tools: bool = True
    parallel_tool_calls: bool = True
    structured_output: bool = False  # native JSON-schema output; otherwise a forced tool is used
    media: frozenset[str] = frozenset({"image"})  # accepted block types among image/audio/video
    media_urls: bool = True  # media may be passed by http(s) URL instead of inline bytes
    thinking: bool = False


@attrs.frozen
class ToolSpec:
    """A tool as a model sees it: a name, what it does, and a JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = attrs.field(factory=lambda: {"type": "object", "properties": {}})

    @functools.cached_property
    def _chars(self) -> int:
        """Its characters as a call's input counts them (see ``usage.estimate_tokens``)."""
        return len(self.name) + len(self.description) + len(json.dumps(self.parameters))

    @classmethod
    def of(cls, tool: ToolSpec | Mapping[str, Any]) -> ToolSpec:
        """Accept a ToolSpec, or a dict with ``name``/``description``/``parameters`` (or an
        OpenAI-style ``{"type": "function", "function": {...}}``)."""
        if isinstance(tool, ToolSpec):
            return tool
        spec = tool.get("function", tool)
        return cls(
            spec["name"],
            spec.get("description", ""),
            dict(spec.get("parameters") or {"type": "object", "properties": {}}),
        )


@attrs.frozen
class Usage:
    """What calls cost: tokens as the server reported them, ``None`` where it did not say
    (unknown is not zero), and the seconds they took, measured here.

    ``cached_input_tokens`` (read from the provider's prompt cache) and ``cache_write_tokens``
    (written to it) are parts of ``input_tokens``; ``reasoning_tokens`` are part of
    ``output_tokens``. Providers fill the tokens; the kernel fills ``calls``, ``retries`` and
    ``cost`` (US dollars, ``None`` when no price is known) when it records a call. Adding two
    usages sums what each knows: a sum is ``None`` only where neither said."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    seconds: float = 0.0
    cached_input_tokens: int | None = attrs.field(default=None, kw_only=True)
    cache_write_tokens: int | None = attrs.field(default=None, kw_only=True)
    reasoning_tokens: int | None = attrs.field(default=None, kw_only=True)
    calls: int = attrs.field(default=0, kw_only=True)
    retries: int = attrs.field(default=0, kw_only=True)
    cost: float | None = attrs.field(default=None, kw_only=True)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            _known_sum(self.input_tokens, other.input_tokens),
            _known_sum(self.output_tokens, other.output_tokens),
            self.seconds + other.seconds,
            cached_input_tokens=_known_sum(self.cached_input_tokens, other.cached_input_tokens),
            cache_write_tokens=_known_sum(self.cache_write_tokens, other.cache_write_tokens),
            reasoning_tokens=_known_sum(self.reasoning_tokens, other.reasoning_tokens),
            calls=self.calls + other.calls,
            retries=self.retries + other.retries,
            cost=_known_sum(self.cost, other.cost),
        )

    @property
    def tokens(self) -> int | None:
        """Input and output tokens together (what token budgets count)."""
        total: int | None = _known_sum(self.input_tokens, self.output_tokens)
        return total

    @classmethod
    def of(cls, msg: Msg) -> Usage | None:
        """The usage of the model calls that made a reply (``msg.metadata["usage"]``), or
        None for a message no model call made. Raises :class:`~aopkit.DecodeError` when the
        metadata holds something else under that key."""
        data = msg.metadata.get("usage")
        if data is None:
            return None
        from .errors import DecodeError

        try:
            usage = _usage_codec().load(data, cls)
        except DecodeError as exc:
            raise exc.under("metadata.usage") from None
        for field in attrs.fields(cls):
            value = getattr(usage, field.name)
            if value is not None and value < 0:  # a stored reply someone edited: not a count
                raise DecodeError(f"metadata.usage.{field.name}", f"negative: {value}")
        return usage


@functools.cache
def _usage_codec() -> Codec:
    from .codec import Codec

    return Codec({})


def _known_sum(a: Any, b: Any) -> Any:
    """``a + b`` counting an unknown (None) side as nothing; None when both are unknown."""
    if a is None:
        return b
    return a if b is None else a + b


COUNT_LIMIT = 1 << 64  # no call uses this many tokens: a larger count is a server's mistake


def reported_tokens(*counts: Any) -> int | None:
    """The sum of the token counts a server reported, ignoring absent or malformed ones (null,
    text, negative numbers, numbers no call can have); ``None`` when it reported none of them."""
    total = None
    for count in counts:  # on every call's path: a loop, no list
        if type(count) is int and 0 <= count < COUNT_LIMIT:  # bool is not a count
            total = count if total is None else total + count
    return total


def reported_count(usage: Any, *path: str) -> int | None:
    """The count a server reported at ``path`` inside its usage object (``"details",
    "cached_tokens"``); None when a step is missing or is not an object, or the count is not a
    count."""
    for key in path:
        usage = usage.get(key) if isinstance(usage, Mapping) else None
    return reported_tokens(usage)


def reported_text(value: Any) -> str | None:
    """A text a server reported (an id, a model name, a finish reason), or ``None`` when it sent
    none: absent, null, empty, or not a string at all (a number, an object)."""
    return value if isinstance(value, str) and value else None


@attrs.frozen
class ChatResponse:
    """One model answer. When streaming, each chunk holds everything received so far, so the
    last chunk is the whole answer (with usage and finish reason).

    ``finish_reason``, ``id`` and ``model`` are what the server said (the model that answered,
    which may name a version of the model asked for), ``None`` where it said nothing usable."""

    content: list[Block] = attrs.field(factory=list)
    usage: Usage | None = None
    finish_reason: str | None = attrs.field(default=None, converter=reported_text)
    id: str | None = attrs.field(default=None, converter=reported_text)
    model: str | None = attrs.field(default=None, converter=reported_text)

    @property
    def text(self) -> str:
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_uses(self) -> list[ToolUseBlock]:
        return [b for b in self.content if isinstance(b, ToolUseBlock)]

    def to_msg(self, name: str) -> Msg:
        """The answer as an assistant message from ``name``."""
        return Msg(name, list(self.content), "assistant")


class ModelError(AopkitError):
    """A model call failed. ``status`` is the HTTP status when there was one; ``message`` is
    the provider's own explanation. Never carries request headers or keys. ``fault`` is the
    report entry of a call that failed after retries."""

    retryable: ClassVar[bool] = False
    fault: Fault | None = None

    def __init__(self, model: str, message: str, *, status: int | None = None) -> None:
        self.model = model
        self.status = status
        self.message = message
        where = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{model}{where}: {message}")


class ModelUnavailable(ModelError):
    """Worth retrying: connection failure, timeout, 408/409/429/5xx, a stream cut midway.
    ``retry_after`` is the wait the server asked for, in seconds, if it said."""

    retryable = True

    def __init__(
        self,
        model: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(model, message, status=status)
        self.retry_after = retry_after


class ModelRejected(ModelError):
    """Not worth retrying as is: 400/401/403/404 and the like; fix the request or the config."""


NOTHING_TO_SEND = (
    "no message to send: the request would have no user or assistant message (an empty "
    "history, or only empty or system messages where the API keeps the system prompt apart)"
)


def require_messages(model: str, formatted: Sequence[Any]) -> None:
    """Refuse a request whose messages formatted to nothing, before it is sent: every provider
    would refuse it, after a round trip."""
    if not formatted:
        raise ModelRejected(model, NOTHING_TO_SEND)


class ChatModel:
    """Base of every chat model. Providers implement :meth:`_complete` and :meth:`_stream`.

    ``await model(messages)`` returns a :class:`ChatResponse`; with ``stream=True`` it returns an
    async iterator of cumulative responses (``async for r in await model(m, stream=True)``).
    """

    provider: ClassVar[str] = ""
    capabilities: Capabilities = Capabilities()
    retry: RetryPolicy = RetryPolicy()  # tier 1; set per model with ``kernel.model(..., retry=)``
    fault_policy: FaultPolicy | None = None  # tiers 2-4; ``kernel.model(..., faults=)``

    def __init__(self, model: str, *, kernel: Kernel, capabilities: Capabilities | None = None):
        self.model = model
        self.kernel = kernel
        if capabilities is not None:
            self.capabilities = capabilities

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @property
    def server(self) -> tuple[str, int] | None:
        """The host and port this model's requests go to; ``None`` for an in-process model."""
        return None

    async def __call__(
        self,
        messages: Sequence[Msg | str] | str,
        *,
        tools: Sequence[ToolSpec | Mapping[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
        structured: Mapping[str, Any] | None = None,
        stream: bool = False,
    ) -> ChatResponse | AsyncIterator[ChatResponse]:
        messages = _messages(messages)
        if not messages:
            raise ModelRejected(self.name, NOTHING_TO_SEND)
        specs = [ToolSpec.of(t) for t in tools or ()]
        if tool_choice not in (None, "auto", "none", "required") and tool_choice not in {
            s.name for s in specs
        }:
            raise ModelRejected(self.name, f"tool_choice {tool_choice!r} names no given tool")
        if stream and not self.capabilities.streaming:
            raise ModelRejected(self.name, "this model does not stream")
        if stream:  # a stream reserves its budget when it starts, so one never read holds none
            return self._observed_stream(messages, specs, tool_choice, structured)
        turns, lent = self.turns(), None
        if turns is not None:  # see ``turns``
            await turns.acquire()
            lent = turns.lend()
        try:
            call = self._started(messages, specs, tool_choice, structured, stream=False)
            try:
                try:  # the first try skips the retry machinery: it costs ~50 µs a call
                    response = await self._complete(
                        messages=messages,
                        tools=specs,
                        tool_choice=tool_choice,
                        structured=structured,
                    )
                except ModelError as exc:
                    if not exc.retryable or self.retry.attempts <= 1:
                        raise
                    response = await self._retry_complete(call, exc)
            except BaseException as exc:
                self._finished(call, None, exc)
                raise
        finally:
            if turns is not None:
                turns.take_back(lent)
        self._finished(call, response, None)
        return response

    def turns(self) -> Turns | None:
        """The connection turns this model's requests take (:class:`~aopkit.turns.Turns`), or
        None for a model that calls no server. A call that is not streamed waits for its turn
        before anything else (before its budget is checked, its messages formatted and
        observers told), and its first request takes that turn: a crowd of calls waiting for
        connections then holds no formatted request, call record or budget ticket each, which
        the cyclic collector would walk again and again while they wait."""
        return None

    def _started(
        self,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
        *,
        stream: bool,
    ) -> _Call:
        """Reserve the call in every budget it counts towards (or raise BudgetExceeded), then
        announce it."""
        kernel = self.kernel
        ticket, scope = kernel.usage.reserve(self.name, messages, tools)
        call = _Call(self, ticket, scope, messages, tools, tool_choice, structured)
        progress = kernel.progress
        progress.in_flight += 1
        if progress.view is not None:
            progress.changed()
        if kernel.observed:
            address, port = self.server or (None, None)
            kernel.emit(
                ModelCallStarted(
                    model=self.name,
                    call_id=call.id,
                    agent=call.agent,
                    hubs=call.hubs,
                    stream=stream,
                    structured=structured is not None,
                    server_address=address,
                    server_port=port,
                )
            )
        return call

    async def _retry_complete(self, call: _Call, first: ModelError) -> ChatResponse:
        pending = [first]  # replayed as tenacity's first attempt, so waits and counts line up
        del first  # the error's traceback will hold this frame: no local may hold it (a cycle)
        try:
            async for attempt in self.retry.retrying(call.before_sleep):
                with attempt:
                    if pending:
                        raise call.judged(pending.pop())
                    try:
                        response: ChatResponse = await self._complete(**call.request())
                    except ModelError as exc:
                        raise call.judged(exc) from None
        except ModelError as exc:
            raise call.failed(exc) from None
        call.succeeded()
        return response

    async def _observed_stream(
        self,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> AsyncIterator[ChatResponse]:
        """Stream with retries: after a cut stream the answer starts over, from the first chunk."""
        call = self._started(messages, tools, tool_choice, structured, stream=True)
        last = None
        try:
            try:
                async for last in self._stream(**call.request()):
                    yield last
            except ModelError as exc:
                if not exc.retryable or self.retry.attempts <= 1:
                    raise
                pending = [exc]
                try:
                    async for attempt in self.retry.retrying(call.before_sleep):
                        with attempt:
                            if pending:
                                raise call.judged(pending.pop()) from None
                            try:
                                async for last in self._stream(**call.request()):
                                    yield last
                            except ModelError as again:
                                raise call.judged(again) from None
                except ModelError as final:
                    raise call.failed(final) from None
                call.succeeded()
        except BaseException as exc:
            self._finished(call, last, exc)
            raise
        self._finished(call, last, None)

    def _finished(
        self, call: _Call, response: ChatResponse | None, error: BaseException | None
    ) -> None:
        """Charge the call as made (a failed one counts as a call of unknown tokens)."""
        kernel = self.kernel
        progress = kernel.progress
        progress.in_flight -= 1
        if progress.view is not None:
            progress.changed()
        reported = response.usage if response is not None and error is None else None
        observed = kernel.observed
        usage = kernel.usage.settle(call.ticket, reported, call.retries, report=observed)
        if observed:
            kernel.emit(
                ModelCallFinished(
                    model=self.name,
                    call_id=call.id,
                    seconds=time.perf_counter() - call.started,
                    usage=usage or {},
                    response_id=response.id if response else None,
                    response_model=response.model if response else None,
                    finish_reason=response.finish_reason if response else None,
                    error=None
                    if error is None
                    else kernel.secrets.redact(f"{type(error).__name__}: {error}"),
                    agent=call.agent,
                    hubs=call.hubs,
                )
            )

    # -- what providers implement -----------------------------------------------------------
    async def _complete(
        self,
        *,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> ChatResponse:
        raise NotImplementedError

    def _stream(
        self,
        *,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> AsyncIterator[ChatResponse]:
        raise NotImplementedError


class _Call:
    """One call under way: what was asked, its budget reservation, whom it is for, and its
    retries (a Retried event each, and the outcome in the fault report). One object a call, and
    no reference cycle: thousands are in flight at once."""

    __slots__ = (
        "_id",
        "last_error",
        "messages",
        "model",
        "previous",
        "retries",
        "scope",
        "started",
        "structured",
        "ticket",
        "tool_choice",
        "tools",
    )

    def __init__(
        self,
        model: ChatModel,
        ticket: Ticket,
        scope: Scope | None,
        messages: list[Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> None:
        self.model, self.ticket, self.scope = model, ticket, scope
        self._id: str | None = None
        self.messages, self.tools = messages, tools
        self.tool_choice, self.structured = tool_choice, structured
        self.started = time.perf_counter()
        self.retries = 0
        self.last_error = ""
        self.previous: str | None = None  # the last attempt's HTTP 500 message

    def request(self) -> dict[str, Any]:
        """The arguments of the provider's ``_complete`` / ``_stream``, for another attempt."""
        return {
            "messages": self.messages,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "structured": self.structured,
        }

    @property
    def id(self) -> str:
        """The call's id, for observers (made when first asked for: most calls have none)."""
        found = self._id
        if found is None:
            found = self._id = new_id()
        return found

    @property
    def agent(self) -> str | None:
        scope = self.scope
        return scope.agent if scope else None

    @property
    def hubs(self) -> tuple[str, ...]:
        scope = self.scope
        return scope.hubs if scope else ()

    def judged(self, error: ModelError) -> ModelError:
        """``error``, or a rejection when it repeats the previous attempt's HTTP 500 word for
        word: a server that fails the same way on the same request is judging the request
        (llama.cpp's server reports invalid requests so), not failing for a moment."""
        previous = self.previous
        # Only the words are kept: the error itself holds frames that hold this call.
        self.previous = error.message if error.retryable and error.status == 500 else None
        if previous is not None and previous == self.previous:
            return ModelRejected(
                error.model,
                f"{error.message} (the same HTTP 500 twice for the same request: "
                "not retried again, since the server rejects the request itself)",
                status=500,
            )
        return error

    def before_sleep(self, state: Any) -> None:
        self.retries += 1
        error = state.outcome.exception()
        kernel = self.model.kernel
        self.last_error = kernel.secrets.redact(str(error))
        if kernel.observed:
            kernel.emit(
                Retried(
                    model=self.model.name,
                    call_id=self.id,
                    attempt=state.attempt_number,
                    error=self.last_error[:300],
                    wait=state.upcoming_sleep,
                )
            )

    def succeeded(self) -> None:
        from .faults import Fault

        self.model.kernel.faults.add(
            Fault("accessibility", self.model.name, self.last_error, 1, "retry", calls=self.retries)
        )

    def failed(self, error: ModelError) -> ModelError:
        from .faults import Fault

        detail = self.model.kernel.secrets.redact(str(error))
        error.fault = Fault(
            "accessibility", self.model.name, detail, None, None, calls=self.retries
        )
        self.model.kernel.faults.add(error.fault)
        return error


def _messages(given: Sequence[Msg | str] | str) -> list[Msg]:
    """The conversation a model is called with; a ``str`` (alone or in the list) is a user
    message."""
    found = as_input(given, "messages")
    return [] if found is None else [found] if isinstance(found, Msg) else list(found)


def parse_tool_arguments(
    tool_id: str,
    name: str,
    arguments: str | Mapping[str, Any] | None,
    extra: dict[str, Any] | None = None,
) -> ToolUseBlock:
    """A tool-use block from arguments as a provider sent them (JSON text or an object). Text
    that is not a JSON object is kept verbatim in ``raw_input`` for the repair tiers."""
    extra = extra or {}
    if arguments is None or arguments == "":
        return ToolUseBlock(tool_id, name, {}, extra=extra)
    if isinstance(arguments, Mapping):
        return ToolUseBlock(tool_id, name, dict(arguments), extra=extra)
    try:
        value = strict_loads(arguments)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return ToolUseBlock(tool_id, name, value, extra=extra)
    return ToolUseBlock(tool_id, name, {}, raw_input=arguments, extra=extra)


def thinking(text: str, **extra: Any) -> ThinkingBlock:
    """A thinking block with provider extras (signatures), dropping the empty ones."""
    return ThinkingBlock(text, extra={k: v for k, v in extra.items() if v is not None})
