"""AG-UI at ``POST /ag-ui``: one run of a served agent, streamed as AG-UI events.

The events are made from the kernel's event stream of the run (``conv.events()``), with
``ag-ui-protocol``'s own models and encoder, so what is sent is what its schema validates. The
thread is the conversation; the last user message is the input (the server remembers the
rest). Tool calls are announced whole when the model's step asks for them (start, arguments,
end), and their results when the step's tools are done: that is where the kernel has both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from ag_ui.core import (
    BaseEvent,
    CustomEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StateSnapshotEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from ag_ui.encoder import EventEncoder
from aiohttp import web
from pydantic import ValidationError

import aopkit
from aopkit import TextBlock, ToolResultBlock, ToolUseBlock
from aopkit.events import (
    Corrected,
    CritiqueRound,
    Escalated,
    Event,
    MessageSent,
    ReplyChunk,
    Retried,
)

from . import _approvals
from ._service import Conversation, ConversationBusy, InvalidConversation, Service, UnknownAgent

CUSTOM = (Retried, Corrected, CritiqueRound, Escalated)  # sent as CUSTOM "aopkit.<type>"
APPROVAL_REQUESTED = "aopkit.approval_requested"  # the calls a paused run waits on
WATCH_SECONDS = 0.25  # how soon a client that left is noticed while nothing is sent


class BadRun(aopkit.AopkitError, ValueError):
    """The request is not a run AG-UI can start."""


def setup(app: web.Application, service: Service) -> None:
    app.router.add_post("/ag-ui", _Runs(service).run)


class _Runs:
    def __init__(self, service: Service) -> None:
        self.service = service

    async def run(self, request: web.Request) -> web.StreamResponse:
        """Validate the input, then stream the run; errors before the stream are JSON."""
        try:
            given = _input(await request.read())
            name = _agent_name(given, self.service)
            text = _last_user_text(given)
        except web.HTTPRequestEntityTooLarge:
            too_big = f"the body is larger than {request.client_max_size} bytes"
            return web.json_response({"error": too_big}, status=413)
        except (BadRun, InvalidConversation) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except UnknownAgent as exc:
            return web.json_response({"error": str(exc)}, status=404)
        encoder = EventEncoder(accept=request.headers.get("Accept", ""))
        response = web.StreamResponse(
            headers={"Content-Type": encoder.get_content_type(), "Cache-Control": "no-cache"}
        )
        stream = _Stream(response, encoder, given, self.service.kernel)
        with contextlib.suppress(ConnectionError):
            try:
                async with self.service.conversation(given.thread_id) as conv:
                    await response.prepare(request)
                    await stream.send(RunStartedEvent(thread_id=conv.id, run_id=given.run_id))
                    await _play(request, stream, conv, name, text)
            except InvalidConversation as exc:
                return web.json_response({"error": str(exc)}, status=400)
            except ConversationBusy as exc:
                return web.json_response({"error": str(exc)}, status=409)
            except ConnectionError:
                raise
            except Exception as exc:  # the run failed: the stream says so, and ends cleanly
                await stream.failed(exc)
        return response


async def _play(
    request: web.Request, stream: _Stream, conv: Conversation, name: str, text: str
) -> None:
    agent = conv.agent(name)
    await stream.send(_snapshot(conv, name))
    async with conv.events() as events:
        work = asyncio.ensure_future(agent(aopkit.Msg("user", text, "user")))
        watcher = asyncio.ensure_future(_cancel_when_gone(request, work))
        try:
            async with contextlib.aclosing(events.during(work)) as seen:
                async for event in seen:
                    await stream.event(event, name)
        finally:
            watcher.cancel()
    if work.cancelled():
        raise ConnectionResetError("the client went away")
    reply: aopkit.Msg = work.result()
    await stream.text(reply.text)
    await stream.close_text()
    await stream.send(_snapshot(conv, name))
    await stream.send(
        RunFinishedEvent(thread_id=conv.id, run_id=stream.given.run_id, result=reply.text)
    )


class _Stream:
    """The SSE response and what is open in it: the text message being streamed, tool calls."""

    def __init__(
        self,
        response: web.StreamResponse,
        encoder: EventEncoder,
        given: RunAgentInput,
        kernel: aopkit.Kernel,
    ) -> None:
        self.response = response
        self.encoder = encoder
        self.given = given
        self.kernel = kernel
        self.message: str | None = None  # the id of the open text message
        self.sent = ""  # its text so far
        self.count = 0
        self.calls: set[str] = set()  # tool calls announced, awaiting their results

    async def send(self, event: BaseEvent) -> None:
        await self.response.write(self.encoder.encode(event).encode())

    async def event(self, event: Event, agent: str) -> None:
        if isinstance(event, ReplyChunk) and event.agent == agent:
            await self.text(event.text)
        elif isinstance(event, MessageSent) and event.msg.name == agent and not event.hubs:
            await self.step(event.msg)
        elif isinstance(event, MessageSent) and not event.hubs:
            await self.results(event.msg)
        elif isinstance(event, CUSTOM):
            value = self.kernel.codec.dump_event(event)
            await self.send(CustomEvent(name=f"aopkit.{event.type}", value=value))

    async def text(self, text: str) -> None:
        """The reply's text so far: what is new goes as a delta; text that does not continue
        what was sent (the model's next step) opens a new message."""
        if self.message is not None and not text.startswith(self.sent):
            await self.close_text()
        if not text[len(self.sent) :]:
            return
        if self.message is None:
            self.count += 1
            self.message = f"{self.given.run_id}-text-{self.count}"
            await self.send(TextMessageStartEvent(message_id=self.message, role="assistant"))
        delta, self.sent = text[len(self.sent) :], text
        await self.send(TextMessageContentEvent(message_id=self.message, delta=delta))

    async def close_text(self) -> None:
        if self.message is not None:
            await self.send(TextMessageEndEvent(message_id=self.message))
        self.message, self.sent = None, ""

    async def step(self, msg: aopkit.Msg) -> None:
        """A step of the agent's: its text (unless streamed already), then its tool calls."""
        uses = msg.blocks(ToolUseBlock)
        if not uses:
            return  # the final reply: the run's result carries it
        await self.text("".join(b.text for b in msg.blocks(TextBlock)) or self.sent)
        await self.close_text()
        for use in uses:
            self.calls.add(use.id)
            await self.send(
                ToolCallStartEvent(
                    tool_call_id=use.id, tool_call_name=use.name, parent_message_id=msg.id
                )
            )
            arguments = use.raw_input if use.raw_input is not None else json.dumps(use.input)
            await self.send(ToolCallArgsEvent(tool_call_id=use.id, delta=arguments))
            await self.send(ToolCallEndEvent(tool_call_id=use.id))

    async def results(self, msg: aopkit.Msg) -> None:
        for result in msg.blocks(ToolResultBlock):
            if result.id in self.calls:
                self.calls.discard(result.id)
                await self.send(
                    ToolCallResultEvent(
                        message_id=f"{msg.id}-{result.id}",
                        tool_call_id=result.id,
                        content=_output_text(result, self.kernel),
                        role="tool",
                    )
                )

    async def failed(self, exc: Exception) -> None:
        """The run's error (secrets scrubbed, no traceback), after closing what was open."""
        if not self.response.prepared:
            raise exc
        await self.close_text()
        if isinstance(exc, aopkit.AwaitingApproval):
            value = _approvals.request_data(exc.request, self.kernel)
            await self.send(CustomEvent(name=APPROVAL_REQUESTED, value=value))
        message = self.kernel.secrets.redact(f"{type(exc).__name__}: {exc}")
        await self.send(RunErrorEvent(message=message, code=type(exc).__name__))


def _input(raw: bytes) -> RunAgentInput:
    try:
        return RunAgentInput.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise BadRun(f"the body is not an AG-UI RunAgentInput: {problems}") from None


def _agent_name(given: RunAgentInput, service: Service) -> str:
    """``forwardedProps.agent`` names the agent; without it, the first served one."""
    props = given.forwarded_props if isinstance(given.forwarded_props, dict) else {}
    name = props.get("agent", service.names()[0])
    if not isinstance(name, str):
        raise BadRun("forwardedProps.agent must be a served agent's name (a string)")
    service.describe(name)  # an unknown name: UnknownAgent
    return name


def _last_user_text(given: RunAgentInput) -> str:
    for message in reversed(given.messages):
        if message.role == "user":
            content = message.content
            if isinstance(content, str):
                return content
            return "".join(getattr(part, "text", "") for part in content)
    raise BadRun("messages has no user message: the last one is the run's input")


def _snapshot(conv: Conversation, agent: str) -> StateSnapshotEvent:
    """Who is in the conversation, and how many messages the running agent remembers."""
    return StateSnapshotEvent(
        snapshot={
            "conversation": conv.id,
            "agents": [a.name for a in conv.used],
            "agent": agent,
            "messages": len(conv.agent(agent).memory),
        }
    )


def _output_text(result: ToolResultBlock, kernel: aopkit.Kernel) -> str:
    if isinstance(result.output, str):
        return result.output
    return "".join(
        b.text if isinstance(b, TextBlock) else kernel.codec.dumps(b) for b in result.output
    )


async def _cancel_when_gone(request: web.Request, work: asyncio.Future[Any]) -> None:
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(WATCH_SECONDS)
    work.cancel()
