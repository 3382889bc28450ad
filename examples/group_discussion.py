"""A group discussion in a MsgHub with a human in it.

Two model agents and a user agent discuss a question; every reply reaches everyone. Run it with
a real model (`python group_discussion.py openai:gpt-4o-mini`) and type your turns, or with no
argument to watch a scripted run whose "human" answers from a script.
"""

from __future__ import annotations

import asyncio
import sys

from loguru import logger

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
    async with aopkit.Kernel() as kernel:  # closing it releases its HTTP session
        kernel.register(aopkit.ChatLog(), "chat")

        def model(name: str) -> object:
            if model_name:
                formatter = f"{model_name.split(':')[0]}-multiagent"
                return kernel.model(model_name, formatter=formatter)
            return kernel.model("scripted:" + name, responses=SCRIPTED[name])

        prompt = "You are {} in a short group discussion. Answer in one sentence."
        ada = aopkit.ModelAgent("ada", model("ada"), sys_prompt=prompt.format("Ada"), kernel=kernel)
        bob = aopkit.ModelAgent("bob", model("bob"), sys_prompt=prompt.format("Bob"), kernel=kernel)
        you = aopkit.UserAgent("you", input=None if model_name else scripted_human, kernel=kernel)
        question = aopkit.Msg("host", "Tea or coffee for the afternoon break?", "system")
        async with aopkit.MsgHub([ada, bob, you], announcement=question):
            for _ in range(2):
                await aopkit.sequential([ada, bob, you])
    return [f"{m.name}: {m.text}" for m in you.memory]


if __name__ == "__main__":
    logger.remove()
    logger.add(sys.stderr, level="CHAT", format="{message}")
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
