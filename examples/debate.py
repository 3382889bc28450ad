"""A three-agent debate with a calculator tool: `python debate.py openai:gpt-4o-mini`, or with
no argument a scripted run (what the tests do). The conversation is shown as it happens."""

from __future__ import annotations

import asyncio
import operator
import sys

import aopkit

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
CALL = aopkit.ToolUseBlock("c1", "calculate", {"a": 46, "op": "*", "b": 8})
DEBATERS = {  # name: its brief, and what it says in a scripted run
    "pro": ("Argue for the motion; use the calculator.", [[CALL], "368 free hours a year!"]),
    "con": ("Argue against the motion.", ["The work does not shrink."]),
    "judge": ("Name the winner.", ["Pro wins: a number beats a worry."]),
}


def calculate(a: float, op: str, b: float) -> float:
    """Work out ``a op b``, where ``op`` is one of + - * /."""
    return OPS[op](a, b)


async def main(model: str | None = None) -> list[str]:
    async with aopkit.Kernel() as kernel:
        aopkit.show_chat(kernel)
        agents = []
        for name, (brief, script) in DEBATERS.items():
            scripted = {} if model else {"responses": script}  # it says what it is given
            chosen = kernel.model(model or f"scripted:{name}", **scripted)
            agents.append(aopkit.ReActAgent(name, chosen, tools=[calculate], sys_prompt=brief))
        async with aopkit.MsgHub(agents, "Motion: a four-day work week."):
            await aopkit.sequential(agents)
        return [f"{m.name}: {m.text}" for m in agents[-1].memory]


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
