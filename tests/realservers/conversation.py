"""The conversation both real servers are asked about."""

from __future__ import annotations

from aopkit import Msg, ToolResultBlock, ToolUseBlock

ASK = Msg("user", "Which city?", "user")


def history() -> list[Msg]:
    """A tool exchange as aopkit stores it: a turn of calls only, its result, a follow-up."""
    return [
        Msg("system", "You pick cities.", "system"),
        ASK,
        Msg("helper", [ToolUseBlock("call_1", "pick", {"city": "Rome"})], "assistant"),
        Msg("tools", [ToolResultBlock("call_1", "pick", "picked Rome")], "user"),
        Msg("user", "And now?", "user"),
    ]
