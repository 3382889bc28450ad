"""The demo: a debate in a MsgHub, a fact-checker and a judge with a structured verdict.

The same script runs against a real model or, offline, against the cassette shipped beside this
file. The cassette was recorded from a scripted model (``SCRIPT``) whose answers put one fault in
front of each of the four tiers: a 429 (tier 1), broken tool arguments (tier 2), a verdict that
misses a field (tier 3, then a fenced answer that tier 2 cleans), and a fact-checker that never
answers in JSON (tier 4, an incident a person resolves).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import attrs

import aopkit
from aopkit.faults import Resolution
from aopkit.models import ChatResponse, ModelUnavailable, Usage, parse_tool_arguments

CASSETTE = Path(__file__).with_name("cassette.json")
MOTION = "Motion: remote work is better than office work."

FACTS = {
    "commute": "Full-time remote workers save about 72 minutes a day of commuting (survey, 2023).",
    "focus": "Open-plan offices cut face-to-face interaction by about 70% (Harvard study, 2018).",
    "mentoring": "New hires on site get feedback about 20% more often (field study, 2023).",
}


def lookup_fact(topic: str) -> str:
    """Look up a fact for the debate.

    Args:
        topic: One of "commute", "focus" or "mentoring".
    """
    if topic not in FACTS:
        raise KeyError(f"no fact on {topic!r}; topics: {', '.join(FACTS)}")
    return FACTS[topic]


@attrs.frozen
class FactCheck:
    """The fact-checker's report on the debate."""

    claims_checked: int
    all_supported: bool


@attrs.frozen
class Verdict:
    """The judge's decision."""

    winner: Literal["pro", "con"]
    reason: str
    scores: dict[str, int]


class StandInHuman:
    """Offline, nobody is asked: this plays the person at tier 4 and says so."""

    @aopkit.hookimpl
    def escalate(self, incident: Any) -> Resolution:
        from loguru import logger

        answer = {"claims_checked": 2, "all_supported": True}
        logger.log("CHAT", "human (played by the demo): answer {}", json.dumps(answer))
        return Resolution("answer", answer)


async def debate(kernel: aopkit.Kernel, model: Any) -> Verdict:
    """Run the debate with ``model`` for every agent; returns the verdict."""
    tools = aopkit.Toolkit([lookup_fact], kernel=kernel)
    rules = "Debate in two sentences at most. Use lookup_fact for one fact first."
    pro = aopkit.ReActAgent(
        "pro", model, toolkit=tools, kernel=kernel, sys_prompt=f"You argue FOR the motion. {rules}"
    )
    con = aopkit.ReActAgent(
        "con",
        model,
        toolkit=tools,
        kernel=kernel,
        sys_prompt=f"You argue AGAINST the motion. {rules}",
    )
    checker = aopkit.ModelAgent(
        "fact-checker", model, kernel=kernel, sys_prompt="You check the facts quoted in the debate."
    )
    judge = aopkit.ModelAgent(
        "judge", model, kernel=kernel, sys_prompt="You judge debates on evidence and clarity."
    )
    async with aopkit.MsgHub(
        [pro, con, checker, judge], aopkit.Msg("moderator", MOTION, "user"), name="debate"
    ):
        await pro()
        await con()
        report = await checker(structured=FactCheck)
        verdict = await judge(structured=Verdict)
    from loguru import logger

    logger.log("CHAT", "fact-check: {}", report)
    return verdict


def _tool(call_id: str, args: str) -> list[aopkit.Block]:
    return [parse_tool_arguments(call_id, "lookup_fact", args)]


# What the scripted model said when the cassette was recorded, in call order.
SCRIPT: list[Any] = [
    ModelUnavailable("scripted:demo", "rate limited (429): slow down", status=429, retry_after=0.3),
    ChatResponse(_tool("call-pro", '{"topic": "commute"}'), Usage(120, 12), "tool_use"),
    "Remote work gives back 72 minutes a day that commuting used to take. That time goes to "
    "work and rest alike, so remote work is better.",
    ChatResponse(_tool("call-con", "{'topic': 'mentoring',}"), Usage(150, 12), "tool_use"),
    "Being on site means new hires get feedback 20% more often. Careers are built in person, "
    "so the office is better.",
    "Both claims look sourced to me.",
    "I checked them; both are fine.",
    "Done checking.",
    '{"winner": "pro", "reason": "The 72 minutes saved daily is concrete and sourced."}',
    'Here is my verdict:\n```json\n{"winner": "pro", "reason": "The 72 minutes saved daily is '
    'concrete and sourced.", "scores": {"pro": 8, "con": 6},}\n```',
]
