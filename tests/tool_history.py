"""One check that a history's tool exchanges are valid for every provider.

``await assert_answered(kernel, messages)`` checks the messages themselves (every call answered
exactly once, in the message right after its call, in the order of the calls), then formats them
with every first-party formatter, single and multi-agent, and checks each wire payload by that
API's own rules: no call dropped, each answered exactly once, results where the API wants them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from aopkit import Msg, ToolResultBlock, ToolUseBlock
from aopkit.models import Capabilities

PROVIDERS = ("openai", "anthropic", "gemini", "dashscope", "ollama", "openai-responses")
FORMATTERS = tuple(f"{p}{suffix}" for p in PROVIDERS for suffix in ("", "-multiagent"))
CAPABILITIES = Capabilities(media=frozenset({"image"}))


def assert_stored_in_order(messages: list[Msg]) -> None:
    """As the ReAct agent stores them: the results of a message's calls are the next message,
    one each, in the order of the calls; no result without its call."""
    calls = [b.id for m in messages for b in m.blocks(ToolUseBlock)]
    assert len(calls) == len(set(calls)), f"a call id is used twice: {calls}"
    expected: list[str] = []
    for n, msg in enumerate(messages):
        results = [b.id for b in msg.blocks(ToolResultBlock)]
        assert results == expected, f"message {n} answers {results}, expected {expected}"
        expected = [b.id for b in msg.blocks(ToolUseBlock)]
    assert not expected, f"the last calls {expected} have no results"


async def assert_answered(
    kernel: Any, messages: list[Msg], *, stored: bool = True, formatters: Sequence[str] = FORMATTERS
) -> None:
    """Valid for every provider (or those of ``formatters``); with ``stored``, also in the
    ReAct agent's own order."""
    if stored:
        assert_stored_in_order(messages)
    calls = sum(len(m.blocks(ToolUseBlock)) for m in messages)
    for name in formatters:
        payload = await kernel.formatters[name].format(messages, capabilities=CAPABILITIES)
        check = CHECKS[name.removesuffix("-multiagent")]
        try:
            sent = check(payload)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}\npayload: {payload}") from None
        assert sent == calls, f"{name}: {sent} calls sent, the history has {calls}"


def _openai_like(messages: list[dict[str, Any]], key: str = "tool_call_id") -> int:
    """A message with tool calls is followed by one tool message per call, before anything
    else. Ollama's tool messages name the tool (``tool_name``): they pair by name and order."""
    pending: list[str] = []
    sent = 0
    for n, msg in enumerate(messages):
        if msg["role"] == "tool":
            answered = msg[key]
            assert pending, f"[{n}] a tool message answers no call"
            if key == "tool_name":
                assert answered == pending[0], f"[{n}] answers {answered}, not {pending[0]}"
            assert answered in pending, f"[{n}] {answered!r} answers none of {pending}"
            pending.remove(answered)
            continue
        assert not pending, f"[{n}] calls {pending} unanswered before a {msg['role']} message"
        calls = msg.get("tool_calls") or []
        if calls:
            assert msg["role"] == "assistant", f"[{n}] tool calls outside an assistant message"
        pending = [c["function"]["name"] if key == "tool_name" else c["id"] for c in calls]
        sent += len(calls)
    assert not pending, f"calls {pending} have no tool message"
    return sent


def _anthropic(payload: dict[str, Any]) -> int:
    """Turns alternate; the turn after tool_use blocks is a user turn that starts with one
    tool_result for each of them; no tool_result anywhere else."""
    pending: list[str] = []
    sent = 0
    for n, turn in enumerate(payload["messages"]):
        content = turn["content"]
        blocks = [{"type": "text"}] if isinstance(content, str) else content
        assert blocks, f"[{n}] an empty turn"
        if n:
            assert turn["role"] != payload["messages"][n - 1]["role"], f"[{n}] roles repeat"
        results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        if pending or results:
            assert turn["role"] == "user", f"[{n}] tool results outside a user turn"
            assert all(b["type"] == "tool_result" for b in blocks[: len(results)]), (
                f"[{n}] tool results are not first in the turn"
            )
            assert Counter(results) == Counter(pending), f"[{n}] answers {results} for {pending}"
        pending = [b["id"] for b in blocks if b["type"] == "tool_use"]
        sent += len(pending)
        assert not pending or turn["role"] == "assistant", f"[{n}] tool_use outside assistant"
    assert not pending, f"calls {pending} have no tool_result"
    return sent


def _gemini(payload: dict[str, Any]) -> int:
    """The turn after functionCall parts is a user turn that starts with one functionResponse
    for each, in the order of the calls; no functionResponse anywhere else."""
    pending: list[str] = []
    sent = 0
    for n, content in enumerate(payload["contents"]):
        parts = content["parts"]
        assert parts, f"[{n}] a turn without parts"
        responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
        if pending or responses:
            assert content["role"] == "user", f"[{n}] responses outside a user turn"
            assert all("functionResponse" in p for p in parts[: len(responses)]), (
                f"[{n}] responses are not first in the turn"
            )
            answered = [r.get("id", r["name"]) for r in responses]
            assert answered == pending, f"[{n}] answers {answered} for {pending}"
        calls = [p["functionCall"] for p in parts if "functionCall" in p]
        pending = [c.get("id", c["name"]) for c in calls]
        sent += len(calls)
        assert not calls or content["role"] == "model", f"[{n}] calls outside a model turn"
    assert not pending, f"calls {pending} have no functionResponse"
    return sent


def _responses(payload: dict[str, Any]) -> int:
    """Each function_call item is answered by one function_call_output after it, before any
    user or system message (items of the same assistant turn may come between); and the
    request is valid by the official types."""
    from aopkit.testing.fakes.openai_responses import check_request

    check_request({"model": "m", **payload})
    pending: list[str] = []
    sent = 0
    for n, item in enumerate(payload["input"]):
        kind = item.get("type", "message")
        if kind == "function_call_output":
            assert item["call_id"] in pending, (
                f"[{n}] {item['call_id']!r} answers none of {pending}"
            )
            pending.remove(item["call_id"])
        elif kind == "function_call":
            pending.append(item["call_id"])
            sent += 1
        elif kind == "message" and item["role"] != "assistant":
            assert not pending, f"[{n}] calls {pending} unanswered before a {item['role']} message"
    assert not pending, f"calls {pending} have no function_call_output"
    return sent


CHECKS: dict[str, Callable[[dict[str, Any]], int]] = {
    "openai": lambda payload: _openai_like(payload["messages"]),
    "anthropic": _anthropic,
    "gemini": _gemini,
    "dashscope": lambda payload: _openai_like(payload["messages"]),
    "ollama": lambda payload: _openai_like(payload["messages"], key="tool_name"),
    "openai-responses": _responses,
}
