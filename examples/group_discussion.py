"""A group discussion in a MsgHub with a human in it.

Two model agents and a user agent discuss a question; every reply reaches everyone. Run it with
a real model (`python group_discussion.py openai:gpt-4o-mini`) and type your turns (you are shown
what the others said before each of them), or with no argument to watch a scripted run whose
"human" answers from a script.
"""

from __future__ import annotations

import asyncio
import sys

import aopkit

SCRIPTED = {
    "ada": [
        "Tea: it has less caffeine, so the afternoon stays calm.",
        "Fair, but the ritual of tea is part of the break itself.",
    ],
    "bob": [
        "Coffee: the break is short, and coffee works faster.",
        "Then let us agree: tea when there is time, coffee when there is not.",
    ],
}
HUMAN = iter(["I drink both, depending on the meeting.", "Agreed."])


async def scripted_human(agent: aopkit.UserAgent, msg: object) -> str:
    return next(HUMAN)


async def main(model_name: str | None) -> list[str]:
    async with aopkit.Kernel() as kernel:
        if model_name is None:  # a human at the terminal is shown the others' words anyway
            aopkit.show_chat(kernel)
        prompt = "You are {} in a short group discussion. Answer in one sentence."
        agents = []
        for name in SCRIPTED:
            model = (  # a multi-agent formatter tells the model who said what
                kernel.model(model_name, formatter=f"{model_name.split(':')[0]}-multiagent")
                if model_name
                else kernel.model(f"scripted:{name}", responses=SCRIPTED[name])
            )
            agents.append(aopkit.ModelAgent(name, model, sys_prompt=prompt.format(name.title())))
        you = aopkit.UserAgent("you", input=None if model_name else scripted_human, kernel=kernel)
        question = aopkit.Msg("host", "Tea or coffee for the afternoon break?", "system")
        async with aopkit.MsgHub([*agents, you], announcement=question):
            for _ in range(2):
                await aopkit.sequential([*agents, you])
    return [f"{m.name}: {m.text}" for m in you.memory]


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
