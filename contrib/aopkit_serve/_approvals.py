"""Tool-call approvals as served protocols show them, and the answers a client may give.

An answer is one of (case and surrounding spaces ignored for the words):

- ``approve`` — every pending call runs;
- ``reject: <reason>`` — none runs; the model reads the reason as each call's result;
- a JSON object ``{"edit": {"<call id>": {...arguments...}}}`` — the listed calls run with these
  arguments instead, the others run as asked.
"""

from __future__ import annotations

import json
from typing import Any

import aopkit
from aopkit.durable import Decision, approve, edit, reject

GRAMMAR = (
    "Reply 'approve', 'reject: <reason>', or a JSON object "
    '{"edit": {"<call id>": {...arguments...}}} to run calls with other arguments.'
)


class BadAnswer(aopkit.AopkitError, ValueError):
    """A client's answer to an approval request that follows no form of :data:`GRAMMAR`."""


def request_data(request: aopkit.ApprovalRequest, kernel: aopkit.Kernel) -> dict[str, Any]:
    """The request as JSON data (secrets scrubbed): what a program reads instead of the text."""
    text = json.dumps(request.as_data(), default=str)
    scrubbed: dict[str, Any] = json.loads(kernel.secrets.redact(text))
    return scrubbed


def decisions(request: aopkit.ApprovalRequest, answer: str) -> dict[str, Decision]:
    """The decision on each pending call that ``answer`` gives, or :class:`BadAnswer`."""
    text = answer.strip()
    word, _, reason = text.partition(":")
    if text.lower() == "approve":
        return {c.id: approve() for c in request.calls}
    if word.strip().lower() == "reject" and reason.strip():
        return {c.id: reject(reason.strip()) for c in request.calls}
    edits = _edits(text, request)
    return {c.id: edit(edits[c.id]) if c.id in edits else approve() for c in request.calls}


def _edits(text: str, request: aopkit.ApprovalRequest) -> dict[str, dict[str, Any]]:
    try:
        found = json.loads(text) if text.startswith("{") else None
    except (ValueError, RecursionError):
        found = None
    edits = found.get("edit") if isinstance(found, dict) and len(found) == 1 else None
    if not isinstance(edits, dict) or not all(isinstance(a, dict) for a in edits.values()):
        raise BadAnswer(f"not an answer to the approval: {text[:80]!r}. {GRAMMAR}")
    ids = [c.id for c in request.calls]
    unknown = sorted(set(edits) - set(ids))
    if unknown:
        raise BadAnswer(f"edit names calls {unknown} that are not pending ({ids}). {GRAMMAR}")
    return edits
