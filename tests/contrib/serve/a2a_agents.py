"""Agents the A2A tests serve (an `aopkit serve` subprocess serves `a2a_agents.py:served`)."""

from __future__ import annotations

import asyncio

import aopkit
from aopkit.faults import DEFAULT_POLICY, Fault, Incident, escalate
from aopkit_serve import ask_client

SECRET = "sk-a2a-secret-0123456789"


class Echo(aopkit.Agent):
    """Replies ``#n <text>``: the n-th user message it remembers, and that message's text (so a
    conversation that lost its state, or saw another's, shows it)."""

    description = "Echoes what it hears."

    async def reply(self, msg: aopkit.Msg | list[aopkit.Msg] | None) -> aopkit.Msg:
        said = [m.text for m in self.memory if m.role == "user"]
        return aopkit.Msg(self.name, f"#{len(said)} {said[-1] if said else ''}", "assistant")


class Asker(aopkit.Agent):
    """Asks the A2A client (a human, through a user agent) for a colour, then names it."""

    async def reply(self, msg: aopkit.Msg | list[aopkit.Msg] | None) -> aopkit.Msg:
        human = aopkit.UserAgent("client", input=ask_client, kernel=self.kernel)
        await human.observe(aopkit.Msg(self.name, "Which colour?", "assistant"))
        said = await human()
        return aopkit.Msg(self.name, f"you chose {said.text}", "assistant")


class Escalating(aopkit.Agent):
    """Hits a fault no tier resolves (tier 4): the human's answer is its reply."""

    async def reply(self, msg: aopkit.Msg | list[aopkit.Msg] | None) -> aopkit.Msg:
        incident = Incident(model="m", target="Answer", reason="no valid answer", request="?")
        fault = Fault("invalid", "m", "no valid answer", None, None)
        resolution = await escalate(self.kernel, incident, fault, DEFAULT_POLICY)
        assert resolution is not None
        return aopkit.Msg(self.name, f"resolved: {resolution.answer}", "assistant")


class Slow(aopkit.Agent):
    """Sleeps as many seconds as the last line of what it was told says."""

    async def reply(self, msg: aopkit.Msg | list[aopkit.Msg] | None) -> aopkit.Msg:
        seconds = self.memory.messages()[-1].text.rsplit(" ", 1)[-1]
        await asyncio.sleep(float(seconds))
        return aopkit.Msg(self.name, f"slept {seconds}", "assistant")


class Failing(aopkit.Agent):
    """Fails with a secret in its error."""

    async def reply(self, msg: aopkit.Msg | list[aopkit.Msg] | None) -> aopkit.Msg:
        self.kernel.secrets.add(SECRET)
        raise RuntimeError(f"the database refused key {SECRET}")


def served() -> list[aopkit.Agent]:
    return [Echo("echo"), Asker("asker")]
