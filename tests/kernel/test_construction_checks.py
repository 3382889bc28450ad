"""Standard agents and hubs check every argument when they are made, with errors that name the
argument; a toolkit belongs to the kernel of the agent using it; ``tools=[...]`` works."""

from __future__ import annotations

import pytest

import aopkit
from aopkit import (
    Agent,
    ConfigurationError,
    Kernel,
    LookupFailed,
    ModelAgent,
    MsgHub,
    ReActAgent,
    Toolkit,
    UserAgent,
    hookimpl,
)
from aopkit.blocks import ToolUseBlock
from aopkit.events import ToolFinished, ToolStarted
from aopkit.toolkit import ToolError


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def mul(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


class Events:
    def __init__(self):
        self.seen = []

    @hookimpl
    def event(self, event):
        if isinstance(event, (ToolStarted, ToolFinished)):
            self.seen.append(event)


def calling(*uses):
    return [[ToolUseBlock(f"c{i}", name, args) for i, (name, args) in enumerate(uses)], "done"]


async def test_tools_and_toolkit_take_a_list_of_functions(kernel):
    for option in ("tools", "toolkit"):
        model = kernel.model("scripted:m", responses=calling(("add", {"a": 2, "b": 3})))
        agent = ReActAgent("calc", model, kernel=kernel, **{option: [add, aopkit.tool(mul)]})
        assert sorted(agent.toolkit.tools) == ["add", "mul"]
        assert (await agent("2 + 3?")).text == "done"
        assert agent.memory[-2].blocks()[0].output == "5"


def test_toolkit_and_tools_together_is_an_error(kernel):
    with pytest.raises(ConfigurationError, match="toolkit= or tools="):
        ReActAgent("x", "scripted:x", toolkit=Toolkit([add]), tools=[mul], kernel=kernel)


async def test_a_toolkit_without_kernel_reports_to_its_agents_kernel():
    async with Kernel(environ={}) as one, Kernel(environ={}) as two:
        watch_one, watch_two, watch_default = Events(), Events(), Events()
        one.register(watch_one, "watch")
        two.register(watch_two, "watch")
        aopkit.default_kernel().register(watch_default, "watch-traps")
        try:
            shared = Toolkit([add])  # one toolkit, agents of two kernels
            for kernel in (one, two):
                model = kernel.model("scripted:m", responses=calling(("add", {"a": 1, "b": 1})))
                await ReActAgent("a", model, toolkit=shared, kernel=kernel)("1 + 1?")
            assert [e.type for e in watch_one.seen] == ["tool_started", "tool_finished"]
            assert [e.type for e in watch_two.seen] == ["tool_started", "tool_finished"]
            assert watch_default.seen == []
        finally:
            aopkit.default_kernel().unregister("watch-traps")


async def test_a_toolkit_secret_is_scrubbed_by_every_kernel_that_uses_it():
    async with Kernel(environ={}) as one, Kernel(environ={}) as two:
        shared = Toolkit([add])
        shared.keep_secret(headers={"Authorization": "Bearer sk-abcdefghijklmnop"})
        await shared.call(ToolUseBlock("c", "add", {"a": 1, "b": 2}), kernel=one)
        assert one.secrets.redact("sk-abcdefghijklmnop") == "***"
        assert two.secrets.redact("sk-abcdefghijklmnop") != "***"  # not used by it yet
        await shared.call(ToolUseBlock("c", "add", {"a": 1, "b": 2}), kernel=two)
        shared.keep_secret("later-secret-value")
        assert two.secrets.redact("later-secret-value") == "***"


def test_a_toolkit_bound_to_one_kernel_is_refused_by_an_agent_of_another():
    one, two = Kernel(environ={}), Kernel(environ={})
    with pytest.raises(aopkit.AopkitError, match="another kernel"):
        ReActAgent("a", two.model("scripted:m"), toolkit=Toolkit([add], kernel=one))
    agent = ReActAgent("a", one.model("scripted:m"), toolkit=Toolkit([add], kernel=one))
    assert agent.kernel is one  # without kernel=, the agent joins its model's kernel


def test_a_model_of_another_kernel_is_refused():
    one, two = Kernel(environ={}), Kernel(environ={})
    with pytest.raises(ConfigurationError, match="another kernel"):
        ModelAgent("a", one.model("scripted:m"), kernel=two)


def test_bad_model_names_fail_at_construction_naming_the_providers(kernel):
    with pytest.raises(ConfigurationError, match=r"provider:model.*scripted"):
        ModelAgent("a", "gpt-4o", kernel=kernel)
    with pytest.raises(LookupFailed, match=r"'nope'.*known: .*scripted"):
        ReActAgent("a", "nope:model", kernel=kernel)
    with pytest.raises(ConfigurationError, match="model must be"):
        ModelAgent("a", 42, kernel=kernel)


@pytest.mark.parametrize(
    ("make", "complaint"),
    [
        (lambda k: Agent("", kernel=k), "name must be a non-empty str"),
        (lambda k: Agent(None, kernel=k), "name must be a non-empty str"),
        (lambda k: Agent("a", memory=[], kernel=k), "memory must be a Memory"),
        (lambda k: Agent("a", kernel="default"), "kernel must be a Kernel"),
        (lambda k: ModelAgent("a", "scripted:x", sys_prompt=3, kernel=k), "sys_prompt"),
        (lambda k: ModelAgent("a", "scripted:x", faults="strict", kernel=k), "faults"),
        (lambda k: ReActAgent("a", "scripted:x", max_iters=-1, kernel=k), "max_iters"),
        (lambda k: ReActAgent("a", "scripted:x", max_iters=0, kernel=k), "max_iters"),
        (lambda k: ReActAgent("a", "scripted:x", max_iters=2.5, kernel=k), "max_iters"),
        (lambda k: ReActAgent("a", "scripted:x", max_iters=True, kernel=k), "max_iters"),
        (lambda k: ReActAgent("a", "scripted:x", parallel="yes", kernel=k), "parallel"),
        (lambda k: ReActAgent("a", "scripted:x", stream=1, kernel=k), "stream"),
        (lambda k: ReActAgent("a", "scripted:x", compress="short", kernel=k), "compress"),
        (lambda k: UserAgent("you", input="keyboard", kernel=k), "input must be"),
        (lambda k: MsgHub([], name="", kernel=k), "name must be"),
        (lambda k: MsgHub([], kernel=object()), "kernel must be"),
    ],
)
def test_every_bad_argument_fails_at_construction(kernel, make, complaint):
    with pytest.raises(ConfigurationError, match=complaint):
        make(kernel)


@pytest.mark.parametrize("toolkit", ["add", add, 42, [42], ["add"]])
def test_a_bad_toolkit_fails_at_construction(kernel, toolkit):
    with pytest.raises(ToolError):
        ReActAgent("a", "scripted:x", toolkit=toolkit, kernel=kernel)
