"""First-party critique strategies for fault tier 3: ``self`` and ``pairwise``.

``self``: the same model sees its output and the precise error, and answers again.
``pairwise``: a second model (or the same one in the reviewer's role) reviews the output and the
first model revises it with that review; it can also object to output that is valid but wrong
(enable with ``FaultPolicy(review=True)``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aopkit
from aopkit.faults import Critique
from aopkit.models import ChatModel

APPROVE = "APPROVE"


def _schema_text(critique: Critique) -> str:
    return json.dumps(critique.target.schema, ensure_ascii=False)


class SelfCritique:
    """The model answers again, told exactly what was wrong."""

    name = "self"

    async def revise(self, critique: Critique) -> str:
        feedback = aopkit.Msg(
            "critic",
            f"Your previous answer could not be used: {critique.error}\n"
            f"Answer again with only a JSON value that matches this schema: "
            f"{_schema_text(critique)}",
            "user",
        )
        previous = aopkit.Msg(critique.model.name, critique.output, "assistant")
        return await critique.ask([*critique.messages, previous, feedback])


class PairwiseCritique:
    """A reviewer explains what is wrong; the model revises with that review."""

    name = "pairwise"

    def __init__(self, reviewer: ChatModel | None = None) -> None:
        self.reviewer = reviewer  # None: the model under review plays the reviewer

    def _task(self, critique: Critique) -> str:
        asked = critique.messages[-1].text if critique.messages else ""
        return (
            f"Task given to another assistant:\n{asked}\n\nIts answer:\n{critique.output}\n\n"
            f"The answer must be JSON matching: {_schema_text(critique)}"
        )

    async def review(self, critique: Critique) -> str | None:
        """None if the reviewer approves the output, else its objection."""
        prompt = aopkit.Msg(
            "reviewer",
            f"{self._task(critique)}\n\nIf the answer is correct and complete, reply with the "
            f"single word {APPROVE}. Otherwise say precisely what is wrong.",
            "user",
        )
        verdict = (await critique.ask([prompt], model=self.reviewer, structured=False)).strip()
        return None if verdict.upper().startswith(APPROVE) else verdict

    async def revise(self, critique: Critique) -> str:
        problem = critique.error
        if critique.kind != "rejected":  # a review already says what is wrong
            prompt = aopkit.Msg(
                "reviewer",
                f"{self._task(critique)}\n\nIt was rejected because: {critique.error}\n"
                "Explain briefly how to fix the answer.",
                "user",
            )
            advice = await critique.ask([prompt], model=self.reviewer, structured=False)
            problem = f"{critique.error}\nA reviewer advises: {advice}"
        feedback = aopkit.Msg(
            "reviewer",
            f"Your previous answer was not accepted: {problem}\n"
            f"Answer again with only a JSON value that matches this schema: "
            f"{_schema_text(critique)}",
            "user",
        )
        previous = aopkit.Msg(critique.model.name, critique.output, "assistant")
        return await critique.ask([*critique.messages, previous, feedback])


@aopkit.hookimpl
def register_critics(register: Callable[[str, Any], None]) -> None:
    register("self", SelfCritique())
    register("pairwise", PairwiseCritique())
