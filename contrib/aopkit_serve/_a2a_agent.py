"""``A2AAgent``: a remote A2A agent (protocol 1.0, through ``a2a-sdk``'s client) taking part
in a conversation like any local agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import A2AError

import aopkit
from aopkit.agent import Incoming
from aopkit.errors import DecodeError
from aopkit.events import ReplyChunk, Retried
from aopkit.faults import DEFAULT_POLICY, Fault, Incident, Unresolved, escalate
from aopkit.retry import RetryPolicy

CANCEL_SECONDS = 5.0  # how long a cancelled reply waits to cancel its remote task
_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
_ENDED = {
    pb.TaskState.TASK_STATE_FAILED: "failed",
    pb.TaskState.TASK_STATE_CANCELED: "was canceled",
    pb.TaskState.TASK_STATE_REJECTED: "was rejected",
    pb.TaskState.TASK_STATE_AUTH_REQUIRED: "needs authorization",
}


class RemoteAgentError(aopkit.AopkitError):
    """A remote A2A agent could not be reached, or its task did not complete. ``retryable``:
    worth trying again (fault tier 1); ``status``: the HTTP status, when there was one."""

    def __init__(
        self, url: str, problem: str, *, retryable: bool = False, status: int | None = None
    ) -> None:
        self.url, self.problem, self.retryable, self.status = url, problem, retryable, status
        super().__init__(f"A2A agent at {url}: {problem}")


class A2AAgent(aopkit.Agent):
    """The agent served at ``url`` (its A2A agent card's base URL), reached with ``token``.

    Each reply sends one A2A message holding what the others said since this agent's last turn,
    one ``name: text`` line each, so the remote sees who said what; the remote ``contextId`` is
    kept (also in :meth:`state_dict`) so the conversation continues. ``skill`` picks one of the
    remote's skills (an aopkit server serves each agent as a skill). Connection failures,
    timeouts and 408/429/5xx answers are retried by ``retry`` (fault tier 1); a remote asking
    for input goes to the ``escalate`` hook (tier 4), whose answer is sent back.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        name: str | None = None,
        skill: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 300.0,
        kernel: aopkit.Kernel | None = None,
    ) -> None:
        super().__init__(name or skill or "remote", kernel=kernel)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise aopkit.ConfigurationError(f"A2AAgent: url must be an http(s) URL, got {url!r}")
        self.url = url.rstrip("/")
        self.skill = skill
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.context_id: str | None = None
        self._token = token
        self._card: pb.AgentCard | None = None
        if token:
            self.kernel.secrets.add(token)

    async def reply(self, msg: Incoming) -> aopkit.Msg:
        text = self._folded()
        task_id = ""
        while True:
            task = await self._send(text, task_id)
            if task.status.state == pb.TaskState.TASK_STATE_COMPLETED:
                return aopkit.Msg(self.name, _answer(task), "assistant")
            if task.status.state != pb.TaskState.TASK_STATE_INPUT_REQUIRED:
                ended = _ENDED.get(
                    task.status.state, f"stopped in state {pb.TaskState.Name(task.status.state)}"
                )
                said = _text(task.status.message)
                raise RemoteAgentError(
                    self.url, f"the task {ended}" + (f": {said}" if said else "")
                )
            text, task_id = await self._ask_human(_text(task.status.message)), task.id

    def _folded(self) -> str:
        """What the others said since this agent last spoke, one ``name: text`` line each."""
        messages = self.memory.messages()
        start = next(
            (i + 1 for i in range(len(messages) - 1, -1, -1) if messages[i].name == self.name),
            0,
        )
        return "\n".join(f"{m.name}: {m.text}" for m in messages[start:] if m.text)

    async def _ask_human(self, question: str) -> str:
        """Tier 4: the remote needs input; a human's answer (through ``escalate``) is sent."""
        kernel = self.kernel
        reason = "the remote agent asks for input"
        incident = Incident(
            model=f"a2a:{self.url}", target=self.name, reason=reason, request=question
        )
        fault = Fault(
            "input-required", f"a2a:{self.url}", kernel.secrets.redact(question), None, None
        )
        resolution = await escalate(kernel, incident, fault, DEFAULT_POLICY)
        if resolution is None or resolution.action != "answer":
            raise Unresolved(incident, "no answer for the remote agent")
        given = resolution.answer
        return given if isinstance(given, str) else json.dumps(given)

    async def _send(self, text: str, task_id: str) -> pb.Task:
        """Send one message (tier 1 around it) and follow its task to a state that waits."""
        attempts = 0

        def before_sleep(state: Any) -> None:
            nonlocal attempts
            attempts += 1
            if self.kernel.observed:
                self.kernel.emit(
                    Retried(
                        model=f"a2a:{self.url}",
                        call_id=message_id,
                        attempt=state.attempt_number,
                        error=self.kernel.secrets.redact(str(state.outcome.exception()))[:300],
                        wait=state.upcoming_sleep,
                    )
                )

        message_id = uuid.uuid4().hex
        request = pb.SendMessageRequest(
            message=pb.Message(
                role=pb.Role.ROLE_USER,
                message_id=message_id,
                context_id=self.context_id or "",
                task_id=task_id,
                parts=[pb.Part(text=text)],
            )
        )
        if self.skill:
            request.message.metadata.update({"skill": self.skill})
        try:
            async for attempt in self.retry.retrying(before_sleep):
                with attempt:
                    task = await self._exchange(request)
        except RemoteAgentError as exc:
            if attempts:
                self.kernel.faults.add(
                    Fault("accessibility", f"a2a:{self.url}", str(exc), None, None, attempts)
                )
            raise
        if attempts:
            self.kernel.faults.add(
                Fault("accessibility", f"a2a:{self.url}", "", 1, "retry", calls=attempts)
            )
        self.context_id = task.context_id or self.context_id
        return task

    async def _exchange(self, request: pb.SendMessageRequest) -> pb.Task:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        started: list[pb.Task] = []  # once the remote has a task, sending again would repeat it
        try:
            async with httpx.AsyncClient(headers=headers, timeout=self.timeout) as http:
                if self._card is None:
                    self._card = await A2ACardResolver(http, self.url).get_agent_card()
                client = ClientFactory(ClientConfig(httpx_client=http)).create(self._card)
                try:
                    return await self._follow(client.send_message(request), started)
                except asyncio.CancelledError:  # the remote task is cancelled with the reply
                    if started and started[0].id:
                        cancel = client.cancel_task(pb.CancelTaskRequest(id=started[0].id))
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(cancel, CANCEL_SECONDS)
                    raise
        except (A2AError, httpx.HTTPError, ValueError) as exc:
            error = self._error(exc)
            if started and error.retryable:
                error = RemoteAgentError(
                    self.url, f"the answer to task {started[0].id} broke off: {error.problem}"
                )
            raise error from None

    async def _follow(
        self, stream: AsyncIterator[pb.StreamResponse], started: list[pb.Task]
    ) -> pb.Task:
        """The task as the stream leaves it; its reply's chunks are shown as they come."""
        task: pb.Task | None = None
        streamed = ""
        async for response in stream:
            kind = response.WhichOneof("payload")
            if kind == "task":
                task = pb.Task()
                task.CopyFrom(response.task)
            elif kind == "message":  # a direct answer: no task
                task = pb.Task(context_id=response.message.context_id)
                task.status.state = pb.TaskState.TASK_STATE_COMPLETED
                task.status.message.CopyFrom(response.message)
            elif kind in ("status_update", "artifact_update"):
                update = getattr(response, kind)
                if task is None:  # a task going on (after input) starts with an update
                    task = pb.Task(id=update.task_id, context_id=update.context_id)
                if kind == "status_update":
                    task.status.CopyFrom(update.status)
                else:
                    streamed = (streamed if update.append else "") + _text(update.artifact)
                    _keep_artifact(task, update)
                    if self.kernel.observed:
                        self.kernel.emit(ReplyChunk(agent=self.name, text=streamed))
            if task is not None and not started:
                started.append(task)
                self.context_id = task.context_id or self.context_id
        if task is None:
            raise RemoteAgentError(self.url, "the answer ended before any task", retryable=True)
        return task

    def _error(self, exc: BaseException) -> RemoteAgentError:
        """``exc`` as an aopkit error, retryable for what tier 1 retries; never the token."""
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, httpx.HTTPStatusError):
                status = cause.response.status_code
                problem = f"HTTP {status}"
                if status == 401:
                    problem += " (the token was refused)"
                return RemoteAgentError(
                    self.url, problem, retryable=status in _RETRY_STATUSES, status=status
                )
            if isinstance(cause, (httpx.TransportError, httpx.TimeoutException)):
                what = "cannot connect" if isinstance(cause, httpx.ConnectError) else "cut off"
                problem = f"{what}: {type(cause).__name__}: {cause}"
                return RemoteAgentError(
                    self.url, self.kernel.secrets.redact(problem), retryable=True
                )
            cause = cause.__cause__ or cause.__context__
        problem = self.kernel.secrets.redact(f"{type(exc).__name__}: {exc}")
        return RemoteAgentError(self.url, problem[:500])

    def _reset(self) -> None:
        super()._reset()
        self.context_id = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "context_id": self.context_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        context_id = state.get("context_id")
        if context_id is not None and not isinstance(context_id, str):
            raise DecodeError("context_id", "expected a str or null")
        super().load_state_dict(state)
        self.context_id = context_id


def _text(found: pb.Message | pb.Artifact) -> str:
    return "\n".join(part.text for part in found.parts if part.HasField("text"))


def _answer(task: pb.Task) -> str:
    """A completed task's reply: its artifacts' text, else its status message's."""
    texts = [_text(artifact) for artifact in task.artifacts]
    return "\n".join(t for t in texts if t) or _text(task.status.message)


def _keep_artifact(task: pb.Task, chunk: pb.TaskArtifactUpdateEvent) -> None:
    for artifact in task.artifacts:
        if artifact.artifact_id == chunk.artifact.artifact_id:
            if chunk.append:
                artifact.parts.extend(chunk.artifact.parts)
            else:
                artifact.CopyFrom(chunk.artifact)
            return
    task.artifacts.append(chunk.artifact)
