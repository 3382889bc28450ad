"""The replay model: answers from a cassette, or calls the model it wraps and records."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import attrs

import aopkit
from aopkit.blocks import Block, ToolUseBlock
from aopkit.models import Capabilities, ChatModel, ChatResponse, ModelError, ToolChoice, ToolSpec
from aopkit.secret import Secret

from .cassette import Mode, Take, check_mode, fingerprint, open_cassette

VOLATILE = ("id", "timestamp")  # message fields that differ on every run
UNSENT = ("usage",)  # metadata the kernel keeps about a message, never sent to a model


def _sent(message: dict[str, Any]) -> dict[str, Any]:
    """A dumped message as it counts for a recording: without what differs on every run or
    never reaches the model (a reply's usage: its seconds differ on every run)."""
    kept = {k: v for k, v in message.items() if k not in VOLATILE}
    metadata = kept.get("metadata")
    if isinstance(metadata, dict) and any(k in metadata for k in UNSENT):
        kept["metadata"] = {k: v for k, v in metadata.items() if k not in UNSENT}
    return kept


def steady_ids(response: ChatResponse, key: str, take: int) -> ChatResponse:
    """The response as it is recorded and returned: its id and its tool calls' ids named after
    the request (``key``), the take and their position. Providers (or their plugins) make up
    new ids on every call, and tool-call ids come back in the next request, where they would
    change its fingerprint: renamed, recording the same session twice gives the same file."""
    content: list[Block] = []
    calls = 0
    for block in response.content:
        if isinstance(block, ToolUseBlock):
            block = attrs.evolve(block, id=f"call_{key}_{take}_{calls}")
            calls += 1
        content.append(block)
    steady_id = None if response.id is None else f"resp_{key}_{take}"
    return attrs.evolve(response, content=content, id=steady_id)


class ReplayModel(ChatModel):
    """``replay:<provider>:<model>``: record a model's answers to a cassette, replay them offline.

    ``record`` calls the wrapped model and writes every outcome; ``replay`` answers from the
    cassette only (no wrapped model, no key, no network) and raises
    :class:`~aopkit_replay.CassetteMiss` for anything not recorded; ``auto`` replays what is
    recorded and records the rest. Retries, events and fault tiers are this model's, so a
    recorded transient error replays as the same retry.
    """

    provider = "replay"

    def __init__(
        self,
        model: str,
        *,
        kernel: aopkit.Kernel,
        cassette: str | os.PathLike[str],
        mode: Mode = "replay",
        inner: ChatModel | None = None,
        capabilities: Capabilities | None = None,
        secrets: Sequence[Secret | str | None] = (),
    ) -> None:
        super().__init__(model, kernel=kernel, capabilities=capabilities)
        check_mode(mode)
        if mode != "replay" and inner is None:
            raise aopkit.AopkitError(f"replay mode {mode!r} needs the model to record from")
        self.mode = mode
        self.cassette = open_cassette(kernel, cassette, mode)
        self.inner = None if mode == "replay" else inner
        if self.inner is None:
            if capabilities is None:
                self.capabilities = self.cassette.capabilities(model)
        else:
            if capabilities is None:
                self.capabilities = self.inner.capabilities
            self.retry, self.fault_policy = self.inner.retry, self.inner.fault_policy
            self.cassette.models[model] = self.capabilities
            secrets = [*secrets, getattr(self.inner, "api_key", None)]
        self._secrets = [Secret(s) for s in secrets if isinstance(s, (str, Secret)) and s]
        kernel.secrets.add(*self._secrets)

    @classmethod
    def wrap(
        cls,
        model: ChatModel,
        *,
        cassette: str | os.PathLike[str],
        mode: Mode = "replay",
        capabilities: Capabilities | None = None,
    ) -> ReplayModel:
        """A replay model around a model object you already have (never called in replay)."""
        return cls(
            model.name,
            kernel=model.kernel,
            cassette=cassette,
            mode=mode,
            inner=model,
            capabilities=capabilities,
        )

    def __repr__(self) -> str:
        return f"<ReplayModel {self.name} {self.mode} {self.cassette.path}>"

    @property
    def server(self) -> tuple[str, int] | None:
        """The recorded model's server while recording; none while replaying."""
        return None if self.inner is None else self.inner.server

    def canonical(self, request: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
        """The request as it is fingerprinted and written: what the model would be sent,
        without the fields that change from run to run."""
        dump = self.kernel.codec.dump
        messages = [dump(m) for m in request["messages"]]
        structured = request["structured"]
        return {
            "model": self.model,
            "messages": [_sent(m) for m in messages],
            "tools": [dump(t) for t in request["tools"]],
            "tool_choice": request["tool_choice"],
            "structured": None if structured is None else dict(structured),
            "stream": stream,
        }

    def _source(
        self, request: Mapping[str, Any], stream: bool
    ) -> tuple[str, dict[str, Any], Take | ChatModel]:
        """The request's fingerprint, canonical form, and where its answer comes from: the next
        recorded take, else the wrapped model (record and auto), else a loud miss."""
        canonical = self.canonical(request, stream=stream)
        key = fingerprint(canonical)
        source = self.cassette.play(key) or self.inner
        if source is None:
            raise self.cassette.miss(self.name, key, canonical)
        return key, canonical, source

    def _record(
        self,
        key: str,
        canonical: dict[str, Any],
        chunks: Sequence[ChatResponse],
        stream: bool,
        error: ModelError | None,
    ) -> None:
        take = Take.of(
            chunks, stream=stream, error=error, codec=self.kernel.codec, secrets=self._secrets
        )
        self.cassette.record(key, canonical, take)

    async def _complete(
        self,
        *,
        messages: list[aopkit.Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> ChatResponse:
        request = _request(messages, tools, tool_choice, structured)
        key, canonical, source = self._source(request, stream=False)
        if isinstance(source, Take):
            source.raise_error(self.model)
            return source.chunks[-1]
        take = self.cassette.recorded(key)
        try:
            response = steady_ids(await source._complete(**request), key, take)
        except ModelError as exc:
            self._record(key, canonical, [], False, exc)
            raise
        self._record(key, canonical, [response], False, None)
        return response

    async def _stream(
        self,
        *,
        messages: list[aopkit.Msg],
        tools: list[ToolSpec],
        tool_choice: ToolChoice | None,
        structured: Mapping[str, Any] | None,
    ) -> AsyncIterator[ChatResponse]:
        request = _request(messages, tools, tool_choice, structured)
        key, canonical, source = self._source(request, stream=True)
        if isinstance(source, Take):
            for chunk in source.chunks:
                yield chunk
            source.raise_error(self.model)
            return
        chunks: list[ChatResponse] = []
        take = self.cassette.recorded(key)
        try:
            async for chunk in source._stream(**request):
                chunks.append(steady_ids(chunk, key, take))
                yield chunks[-1]
        except ModelError as exc:
            self._record(key, canonical, chunks, True, exc)
            raise
        self._record(key, canonical, chunks, True, None)


def _request(
    messages: list[aopkit.Msg],
    tools: list[ToolSpec],
    tool_choice: ToolChoice | None,
    structured: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return {
        "messages": messages,
        "tools": tools,
        "tool_choice": tool_choice,
        "structured": structured,
    }


def replay_model(
    model: str,
    *,
    kernel: aopkit.Kernel,
    cassette: str | os.PathLike[str],
    mode: Mode = "replay",
    capabilities: Capabilities | None = None,
    **options: Any,
) -> ReplayModel:
    """The factory behind ``kernel.model("replay:<provider>:<model>", ...)``: ``options`` go to
    the wrapped model, which is only built when recording (replay needs neither it nor its
    plugin)."""
    if not all(model.partition(":")[::2]):
        raise aopkit.AopkitError(
            f"replay models look like 'replay:<provider>:<model>', got 'replay:{model}'"
        )
    check_mode(mode)
    inner = None
    if mode != "replay":
        given: dict[str, Any] = {} if capabilities is None else {"capabilities": capabilities}
        inner = kernel.model(model, **given, **options)
    secrets = [v for k, v in options.items() if isinstance(v, Secret) or k == "api_key"]
    return ReplayModel(
        model,
        kernel=kernel,
        cassette=cassette,
        mode=mode,
        inner=inner,
        capabilities=capabilities,
        secrets=secrets,
    )
