"""A2A (protocol 1.0, JSON-RPC binding) for the served agents, through ``a2a-sdk``.

The sdk's request handler keeps the tasks and drives :class:`_Executor`; the sdk's own HTTP
routes are Starlette's, so this module is their aiohttp counterpart: it parses JSON-RPC into
the sdk's protobuf requests and writes the handler's answers back (JSON, or SSE for streams).

Each served agent is a skill of one agent card; a message picks one with ``metadata.skill``
(the first served agent by default). ``contextId`` is the conversation.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any, Literal

from a2a.helpers.proto_helpers import new_task
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.jsonrpc_models import JSONParseError, JSONRPCError
from a2a.server.request_handlers import DefaultRequestHandler, build_error_response
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2 as pb
from a2a.utils import constants, proto_utils
from a2a.utils.errors import (
    A2AError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    MethodNotFoundError,
    VersionNotSupportedError,
)
from aiohttp import web
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from google.protobuf.struct_pb2 import Value

import aopkit
from aopkit.durable import Decision, read
from aopkit.events import ReplyChunk
from aopkit.faults import Resolution
from aopkit.session import check_session_id

from . import _approvals
from ._service import Conversation, Service

CARD_PATH = constants.AGENT_CARD_WELL_KNOWN_PATH
RPC_PATH = "/a2a"
_RPC_ROUTE = "aopkit-a2a"
_TEXT = ["text/plain"]
TASKS_KEPT = 10_000  # finished tasks a server remembers (for GetTask)

# Requests (JSON-RPC method -> its protobuf params); streams answer with SSE.
_METHODS: dict[str, type[Any]] = {
    "SendMessage": pb.SendMessageRequest,
    "SendStreamingMessage": pb.SendMessageRequest,
    "GetTask": pb.GetTaskRequest,
    "ListTasks": pb.ListTasksRequest,
    "CancelTask": pb.CancelTaskRequest,
    "SubscribeToTask": pb.SubscribeToTaskRequest,
}
_STREAMS = {"SendStreamingMessage", "SubscribeToTask"}


def setup(app: web.Application, service: Service) -> None:
    """Serve the agent card at the well-known path and JSON-RPC at ``/a2a``."""
    executor = _Executor(service)
    app.on_cleanup.append(executor.stop)
    handler = DefaultRequestHandler(
        agent_executor=executor,
        task_store=RecentTasks(TASKS_KEPT),
        agent_card=agent_card(service, RPC_PATH),
    )
    endpoint = _Endpoint(service, handler)
    app.router.add_get(CARD_PATH, endpoint.card)
    app.router.add_post(RPC_PATH, endpoint.rpc, name=_RPC_ROUTE)
    kernel = service.kernel
    if kernel.pm.get_plugin(_Escalations.NAME) is None:
        kernel.register(_Escalations(), _Escalations.NAME)


def agent_card(service: Service, url: str) -> pb.AgentCard:
    """The card: one skill per served agent, JSON-RPC at ``url``, a bearer token required."""
    names = service.names()
    one = len(names) == 1
    return pb.AgentCard(
        name=names[0] if one else "aopkit",
        description=service.describe(names[0]) if one else f"aopkit agents: {', '.join(names)}",
        version=aopkit.__version__,
        supported_interfaces=[
            pb.AgentInterface(
                url=url,
                protocol_binding=constants.TransportProtocol.JSONRPC.value,
                protocol_version=constants.PROTOCOL_VERSION_1_0,
            )
        ],
        capabilities=pb.AgentCapabilities(streaming=True),
        security_schemes={
            "bearer": pb.SecurityScheme(
                http_auth_security_scheme=pb.HTTPAuthSecurityScheme(scheme="bearer")
            )
        },
        security_requirements=[pb.SecurityRequirement(schemes={"bearer": pb.StringList()})],
        default_input_modes=_TEXT,
        default_output_modes=_TEXT,
        skills=[
            pb.AgentSkill(id=name, name=name, description=service.describe(name), tags=["aopkit"])
            for name in names
        ],
    )


class RecentTasks(InMemoryTaskStore):
    """The sdk's in-memory task store, forgetting the oldest finished tasks beyond ``limit``:
    a long-running server would otherwise keep every task it ever ran. (Conversations are
    kept in the session store; a task is only a turn's progress.)"""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self._finished: OrderedDict[str, ServerCallContext] = OrderedDict()

    async def save(self, task: pb.Task, context: ServerCallContext) -> None:
        await super().save(task, context)
        if task.status.state in _FINISHED:
            self._finished[task.id] = context
            self._finished.move_to_end(task.id)
            while len(self._finished) > self.limit:
                oldest, its_context = self._finished.popitem(last=False)
                await self.delete(oldest, its_context)


_FINISHED = frozenset(
    {
        pb.TaskState.TASK_STATE_COMPLETED,
        pb.TaskState.TASK_STATE_FAILED,
        pb.TaskState.TASK_STATE_CANCELED,
        pb.TaskState.TASK_STATE_REJECTED,
    }
)


class _Endpoint:
    """The two routes: the card, and JSON-RPC handed to the sdk's request handler."""

    def __init__(self, service: Service, handler: DefaultRequestHandler) -> None:
        self.service = service
        self.handler = handler

    async def card(self, request: web.Request) -> web.Response:
        url = request.url.join(request.app.router[_RPC_ROUTE].url_for())
        card = agent_card(self.service, str(url))
        return web.json_response(MessageToDict(card))

    async def rpc(self, request: web.Request) -> web.StreamResponse:
        request_id: str | int | None = None
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            return _error(None, JSONParseError(message=f"the body is not JSON: {exc}"))
        try:
            method, request_id, params = _parsed(body)
            if request.headers.get(constants.VERSION_HEADER, "").split(".")[0] != "1":
                raise VersionNotSupportedError(
                    message=f"this server speaks A2A 1.0: send the header "
                    f"{constants.VERSION_HEADER}: {constants.PROTOCOL_VERSION_1_0}"
                )
            if isinstance(params, pb.SendMessageRequest):
                self._check_message(params.message)
            context = ServerCallContext(state={"headers": dict(request.headers), "method": method})
            if method in _STREAMS:
                return await self._stream(request, request_id, method, params, context)
            result = await self._answer(method, params, context)
        except A2AError as exc:
            return _error(request_id, exc)
        return web.json_response({"jsonrpc": "2.0", "id": request_id, "result": result})

    def _check_message(self, message: pb.Message) -> None:
        """Refuse, before a task exists, what no task could serve."""
        if not any(part.HasField("text") for part in message.parts):
            raise InvalidParamsError(message="message: expected at least one text part")
        skill = _skill(message)
        if skill is not None and skill not in self.service.names():
            raise InvalidParamsError(
                message=f"message.metadata.skill: no agent named {skill!r} is served; "
                f"served: {', '.join(self.service.names())}"
            )
        if message.context_id:
            try:
                check_session_id(message.context_id)
            except aopkit.AopkitError as exc:
                raise InvalidParamsError(message=f"message.contextId: {exc}") from None

    async def _answer(self, method: str, params: Any, context: ServerCallContext) -> Any:
        handler = self.handler
        if method == "SendMessage":
            found = await handler.on_message_send(params, context)
            if isinstance(found, pb.Task):
                return MessageToDict(pb.SendMessageResponse(task=found))
            return MessageToDict(pb.SendMessageResponse(message=found))
        if method == "GetTask":
            return MessageToDict(await handler.on_get_task(params, context))
        if method == "CancelTask":
            return MessageToDict(await handler.on_cancel_task(params, context))
        return MessageToDict(await handler.on_list_tasks(params, context))

    async def _stream(
        self,
        request: web.Request,
        request_id: str | int | None,
        method: str,
        params: Any,
        context: ServerCallContext,
    ) -> web.StreamResponse:
        if method == "SendStreamingMessage":
            events = self.handler.on_message_send_stream(params, context)
        else:
            events = self.handler.on_subscribe_to_task(params, context)
        first = await anext(events, None)  # errors found up front answer as plain JSON-RPC
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            async for event in _prepend(first, events):
                result = MessageToDict(proto_utils.to_stream_response(event))
                await _send(response, {"jsonrpc": "2.0", "id": request_id, "result": result})
        except A2AError as exc:
            await _send(response, build_error_response(request_id, exc), "error")
        except Exception:
            failed = InternalError(message="the stream failed on the server")
            await _send(response, build_error_response(request_id, failed), "error")
        finally:
            await events.aclose()
        await response.write_eof()
        return response


def _parsed(body: object) -> tuple[str, str | int | None, Any]:
    """The method, id and protobuf params of a JSON-RPC 2.0 request, or the error to answer."""
    if not isinstance(body, dict):
        raise InvalidRequestError(message="expected a JSON-RPC request object (batches: no)")
    request_id = body.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int, type(None))):
        raise InvalidRequestError(message="id: expected a string, an integer or null")
    if body.get("jsonrpc") != "2.0":
        raise InvalidRequestError(message="jsonrpc: expected '2.0'")
    method = body.get("method")
    if not isinstance(method, str):
        raise InvalidRequestError(message="method: expected a string")
    kind = _METHODS.get(method)
    if kind is None:
        raise MethodNotFoundError(message=f"method {method[:80]!r} is not served")
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise InvalidParamsError(message="params: expected an object")
    try:
        return method, request_id, ParseDict(params, kind(), ignore_unknown_fields=True)
    except (ParseError, ValueError, TypeError, RecursionError) as exc:
        raise InvalidParamsError(message=f"params: {str(exc)[:300]}") from None


def _error(request_id: str | int | None, error: A2AError | JSONRPCError) -> web.Response:
    return web.json_response(build_error_response(request_id, error))


async def _send(response: web.StreamResponse, data: dict[str, Any], event: str = "") -> None:
    head = f"event: {event}\n" if event else ""
    await response.write(f"{head}data: {json.dumps(data)}\n\n".encode())


async def _prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    if first is not None:
        yield first
    async for event in rest:
        yield event


def _skill(message: pb.Message) -> str | None:
    skill = MessageToDict(message.metadata).get("skill") if message.HasField("metadata") else None
    return skill if isinstance(skill, str) else None


# -- running the agents -----------------------------------------------------------------------
Update = tuple[Literal["chunk", "input", "done", "failed"], str, dict[str, Any] | None]

# The run the current task works for: where a human's answer comes from.
_RUN: ContextVar[_Run | None] = ContextVar("aopkit_serve_a2a_run", default=None)


class _Run:
    """One served agent's reply to an A2A message. It outlives the executor's call when it
    waits for the client (input-required): the next message on its context answers it."""

    def __init__(self, service: Service, context_id: str, skill: str, text: str) -> None:
        self.updates: asyncio.Queue[Update] = asyncio.Queue()
        self.answer: asyncio.Future[str] | None = None
        self.refused = ""  # why the client's last answer to an approval was refused
        self.kernel = service.kernel
        self.task = asyncio.create_task(self._reply(service, context_id, skill, text))

    async def ask(self, question: str, data: dict[str, Any] | None = None) -> str:
        """Ask the client (``data`` goes along as a data part); the text of its next message
        on this context."""
        self.answer = asyncio.get_running_loop().create_future()
        self.updates.put_nowait(("input", self.kernel.secrets.redact(question), data))
        try:
            return await self.answer
        finally:
            self.answer = None

    async def _reply(self, service: Service, context_id: str, skill: str, text: str) -> None:
        _RUN.set(self)
        try:
            async with service.conversation(context_id) as conv:
                said = aopkit.Msg("user", text, "user")
                if service.durable is None:
                    work = conv.agent(skill)(said)
                else:
                    work = self._durable_turn(service, conv, skill, said)
                async with conv.events() as events:
                    async for event in events.during(work):
                        if isinstance(event, ReplyChunk) and event.agent == skill:
                            self.updates.put_nowait(("chunk", event.text, None))
                    assert events.task is not None
                    reply: aopkit.Msg = events.task.result()
        except Exception as exc:
            self.updates.put_nowait(("failed", self.kernel.secrets.redact(str(exc)), None))
        else:
            self.updates.put_nowait(("done", reply.text, None))

    async def _durable_turn(
        self, service: Service, conv: Conversation, skill: str, said: aopkit.Msg
    ) -> aopkit.Msg:
        """A turn of a conversation that is a durable run (its id is the context's): the
        journal replays the earlier turns (rebuilding memory) and resumes an unfinished one.
        A message arriving while the run waits for approval is the answer to it."""
        store = service.durable
        assert store is not None
        request = await aopkit.pending_approval(store, conv.id)
        if request is not None:
            try:
                await aopkit.answer_approval(
                    store, conv.id, _approvals.decisions(request, said.text)
                )
            except _approvals.BadAnswer as exc:
                self.refused = str(exc)  # the replay reaches the request and asks again
        reply = None
        async with aopkit.durable(store, conv.id):
            journal = await store.journal(conv.id)
            for name, earlier in _turns(journal, service.names(), conv.id, self.kernel):
                reply = await conv.fresh(name)(earlier)
            if request is None or reply is None:
                reply = await conv.fresh(skill)(said)
        return reply


def _turns(
    entries: list[dict[str, Any]], names: list[str], run: str, kernel: aopkit.Kernel
) -> list[tuple[str, aopkit.Msg]]:
    """The served agents' calls a journal holds (``<agent>/<n>`` inputs), in order."""
    found = []
    for entry in entries:
        name, _, number = str(entry.get("key", "")).rpartition("/")
        if entry.get("kind") == "input" and name in names and number.isdigit():
            msg = read(run, entry, lambda e: kernel.codec.load(e["msg"], aopkit.Msg))
            found.append((name, msg))
    return found


async def ask_client(agent: aopkit.UserAgent, msg: aopkit.agent.Incoming) -> str:
    """A :class:`~aopkit.UserAgent` input: the human is the A2A client. The task goes to
    ``input-required`` with what the others said; the client's next message is the answer."""
    run = _RUN.get()
    if run is None:
        raise aopkit.AopkitError(
            f"user agent {agent.name!r}: ask_client works only in a reply to an A2A message"
        )
    return await run.ask("\n".join(agent.unseen()) or f"{agent.name}, your turn.")


class _Escalations:
    """The ``escalate`` hook for replies to A2A messages: the client resolves the incident
    (its answer ``retry`` or ``abort`` does that; any other text is the answer), or decides
    on tool calls waiting for approval."""

    NAME = "aopkit_serve.a2a.escalations"

    @aopkit.hookimpl
    def escalate(self, incident: Any) -> Any:
        run = _RUN.get()
        if run is None:
            return None
        if isinstance(incident, aopkit.ApprovalRequest):
            return _decisions(run, incident)
        return _resolution(run, incident.describe())


async def _decisions(run: _Run, request: aopkit.ApprovalRequest) -> dict[str, Decision]:
    """Ask the client until its answer follows the grammar; each refusal says why."""
    data = {"approval": _approvals.request_data(request, run.kernel)}
    question = f"{request.describe()}\n{_approvals.GRAMMAR}"
    if run.refused:
        question, run.refused = f"{run.refused}\n{request.describe()}", ""
    while True:
        answer = await run.ask(question, data)
        try:
            return _approvals.decisions(request, answer)
        except _approvals.BadAnswer as exc:
            question = f"{exc}\n{request.describe()}"


async def _resolution(run: _Run, question: str) -> Resolution:
    answer = await run.ask(f"{question}\nReply 'retry', 'abort', or the answer itself.")
    word = answer.strip().lower()
    if word == "retry":
        return Resolution("retry")
    if word == "abort":
        return Resolution("abort")
    return Resolution("answer", answer)


class _Executor(AgentExecutor):
    """Relays a :class:`_Run`'s progress to the sdk's task events."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.waiting: dict[str, _Run] = {}  # by context: runs waiting for the client
        self.runs: dict[str, _Run] = {}  # by task, while they run or wait

    async def stop(self, app: web.Application) -> None:
        """The server stops: turns still running or waiting for the client end with it (a
        durable turn's pending approval stays in its journal for the next server)."""
        tasks = [run.task for run in self.runs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id = context.task_id or "", context.context_id or ""
        updater = TaskUpdater(event_queue, task_id, context_id)
        if context.current_task is None:
            history = [context.message] if context.message else []
            state = pb.TaskState.TASK_STATE_SUBMITTED
            await event_queue.enqueue_event(new_task(task_id, context_id, state, history=history))
        await updater.start_work()
        text = context.get_user_input()
        run = self.waiting.pop(context_id, None)
        if run is not None and run.answer is not None and not run.answer.done():
            run.answer.set_result(text)
        else:
            message = context.message
            skill = (_skill(message) if message else None) or self.service.names()[0]
            run = _Run(self.service, context_id, skill, text)
        self.runs[task_id] = run
        run.task.add_done_callback(lambda _: self.runs.pop(task_id, None))
        try:
            await self._relay(run, updater, context_id)
        except asyncio.CancelledError:
            run.task.cancel()
            raise

    async def _relay(self, run: _Run, updater: TaskUpdater, context_id: str) -> None:
        artifact, streamed = uuid.uuid4().hex, ""
        while True:
            kind, text, data = await run.updates.get()
            if kind == "chunk":
                append = bool(streamed) and text.startswith(streamed)
                part = text[len(streamed) :] if append else text
                if part:
                    await updater.add_artifact(
                        [pb.Part(text=part)], artifact, "reply", append=append, last_chunk=False
                    )
                streamed = text
            elif kind == "input":
                self.waiting[context_id] = run
                parts = [pb.Part(text=text)]
                if data is not None:
                    parts.append(pb.Part(data=ParseDict(data, Value())))
                await updater.requires_input(updater.new_agent_message(parts))
                return
            elif kind == "done":
                part = pb.Part(text=text)
                await updater.add_artifact([part], artifact, "reply", append=False, last_chunk=True)
                await updater.complete(updater.new_agent_message([part]))
                return
            else:
                await updater.failed(updater.new_agent_message([pb.Part(text=text)]))
                return

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        run = self.runs.pop(context.task_id or "", None)
        if run is not None:
            run.task.cancel()
            if self.waiting.get(context.context_id or "") is run:
                del self.waiting[context.context_id or ""]
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await updater.cancel()
