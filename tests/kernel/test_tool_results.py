"""Every tool call has exactly one result, whatever stops a reply: an outside cancel at each
point where the reply waits, an interrupt, a tool that fails, never returns or is cancelled from
within; and what finished keeps its real result."""

import asyncio
import sys

import attrs
import pytest

from aopkit import Msg, ReActAgent, Toolkit, ToolResultBlock, ToolUseBlock, hookimpl
from aopkit.errors import ReplyError
from aopkit.events import MessageSent, ToolFinished, ToolStarted
from aopkit.faults import FaultPolicy, Resolution, Unresolved
from aopkit.models import ModelRejected
from aopkit_scripted import ScriptedModel
from tests.kernel.helpers import Recorder
from tests.tool_history import assert_answered

Q = Msg("user", "Work it out.", "user")


@attrs.frozen
class Value:
    value: int


class Paced(ScriptedModel):
    """A scripted model that lets the event loop turn before it answers (and between chunks),
    as a model behind a network would: each turn is a point where a reply can be cancelled."""

    waiting = None  # the request being answered, while the answer is on its way

    async def _complete(self, **request):
        self.waiting = request
        for _ in range(2):
            await asyncio.sleep(0)
        self.waiting = None
        return await super()._complete(**request)

    async def _stream(self, **request):
        async for chunk in super()._stream(**request):
            self.waiting = request
            await asyncio.sleep(0)
            self.waiting = None
            yield chunk


class Work:
    """``step(n)`` takes n turns of the event loop; what started and what finished is kept."""

    def __init__(self):
        self.started, self.finished = set(), set()

    async def step(self, n: int) -> str:
        """Do n units of work."""
        self.started.add(n)
        for _ in range(n):
            await asyncio.sleep(0)
        self.finished.add(n)
        return f"done {n}"


class Answerer:
    """A human who takes a few turns of the loop, then answers with arguments."""

    def __init__(self, *resolutions):
        self.resolutions = list(resolutions)
        self.seen = []

    deciding = False

    @hookimpl
    async def escalate(self, incident):
        self.seen.append(incident)
        self.deciding = True
        for _ in range(3):
            await asyncio.sleep(0)
        self.deciding = False
        return self.resolutions.pop(0) if self.resolutions else None


def uses(*ns, prefix="c"):
    return [ToolUseBlock(f"{prefix}{n}", "step", {"n": n}) for n in ns]


def script():
    """Three parallel calls of different lengths, arguments only a human can fix (tier 4),
    a single call, then the closing summary (max_iters=3), then the structured answer."""
    return [
        uses(1, 3, 6),
        [ToolUseBlock("c2", "step", {"n": "two"})],
        uses(4),
        "Summary: all done.",
        '{"value": 7}',
    ]


def react(kernel, work, *, parallel=True, stream=False, responses=None):
    model = Paced("brain", kernel=kernel, responses=script() if responses is None else responses)
    return ReActAgent(
        "helper",
        model,
        toolkit=Toolkit([work.step], kernel=kernel),
        sys_prompt="Be careful.",
        max_iters=3,
        parallel=parallel,
        stream=stream,
        faults=FaultPolicy(rounds=0),
        kernel=kernel,
    )


def where(agent, human):
    """What the reply is waiting for."""
    waiting = agent.model.waiting
    if human.deciding:
        return "a human"
    if waiting is None:
        return "tools or the loop"
    if waiting["structured"] is not None:
        return "the structured answer"
    return "the model" if waiting["tools"] else "the closing summary"


def check_results(agent, work):
    """Finished calls have their real result; the others say whether they started. Returns
    what was seen: a step stopped with some calls finished, calls not run."""
    seen = set()
    for msg in agent.memory:
        kinds = set()
        for result in msg.blocks(ToolResultBlock):
            n = int(result.id[1:])
            if n in work.finished:
                assert (result.output, result.is_error) == (f"done {n}", False), result
                kinds.add("finished")
            elif n in work.started:
                assert result.is_error and "before it finished" in result.output, result
                kinds.add("stopped")
            else:
                assert result.is_error and result.output.startswith("not run"), result
                kinds.add("not run")
        if {"finished", "stopped"} <= kinds:
            seen.add("some finished, some stopped")
        seen |= kinds & {"not run"}
    return seen


async def check_valid(kernel, agent, recorder):
    ids = [m.id for m in agent.memory]
    assert len(ids) == len(set(ids)), "a message is stored twice"
    assert ids.count(Q.id) <= 1, "the input is stored once"
    assert Q.id not in ids or agent.memory[0] is Q, "the input comes first"
    assert not any(m.metadata.get("closing") for m in agent.memory), "no stale instruction"
    await assert_answered(kernel, agent.messages())
    started = {e.call_id for e in recorder.of(ToolStarted)}
    assert started == {e.call_id for e in recorder.of(ToolFinished)}, "a tool span stays open"


@pytest.mark.parametrize("structured", [False, True], ids=["text", "structured"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
@pytest.mark.parametrize("how", ["cancel", "interrupt"])
async def test_memory_stays_valid_whenever_the_reply_is_stopped(
    kernel, how, parallel, stream, structured
):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    human = Answerer(*[Resolution("answer", {"n": 2})] * 1000)
    kernel.register(human, "human")
    points, seen = 0, set()
    while True:  # stop the reply after 0, 1, 2... turns of the loop, until it ends by itself
        recorder.events.clear()
        work = Work()
        agent = react(kernel, work, parallel=parallel, stream=stream)
        running = asyncio.ensure_future(agent(Q, structured=Value if structured else None))
        for _ in range(points):
            await asyncio.sleep(0)
        if running.done():
            result = await running
            assert result == Value(7) if structured else result.text == "Summary: all done."
            break
        seen.add(where(agent, human))
        if how == "cancel":
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running  # cancelling is the caller's decision: it reaches the caller
        else:
            agent.interrupt()
            await running
        seen |= check_results(agent, work)
        await check_valid(kernel, agent, recorder)
        agent.model.responses = ["Carrying on."]
        assert (await agent(Msg("user", "Go on.", "user"))).text == "Carrying on."
        await assert_answered(kernel, agent.messages())
        points += 1
    expected = {
        "the model",
        "tools or the loop",
        "a human",
        "the closing summary",
        "some finished, some stopped",
    }
    expected |= {"the structured answer"} if structured else set()
    expected |= set() if parallel else {"not run"}
    assert expected <= seen, (
        f"stopped at {points} points, never while waiting for {expected - seen}"
    )


async def test_a_reply_cancelled_by_wait_for_leaves_every_call_answered(kernel):
    """The issue's example: the caller gives up while tools run."""
    never = asyncio.Event()

    async def hang(n: int) -> str:
        """Wait for ever."""
        await never.wait()
        return "never"

    def quick(n: int) -> str:
        """Return at once."""
        return f"quick {n}"

    model = kernel.model(
        "scripted:brain",
        responses=[
            [ToolUseBlock("h", "hang", {"n": 1}), ToolUseBlock("q", "quick", {"n": 2})],
            "Sorry about that.",
        ],
    )
    agent = ReActAgent(
        "helper", model, toolkit=Toolkit([hang, quick], kernel=kernel), kernel=kernel
    )
    with pytest.raises(asyncio.TimeoutError):  # TimeoutError itself from Python 3.11
        await asyncio.wait_for(agent(Q), 0.2)
    results = {r.id: r for r in agent.memory[-1].blocks(ToolResultBlock)}
    assert results["q"].output == "quick 2" and not results["q"].is_error
    assert results["h"].is_error and results["h"].output.startswith("cancelled before")
    await assert_answered(kernel, agent.messages())
    assert (await agent(Msg("user", "And?", "user"))).text == "Sorry about that."
    sent = model.calls[-1]["messages"]
    assert [m.text for m in sent if m.role == "user" and m.name == "user"] == [Q.text, "And?"]


async def test_an_interrupt_keeps_what_finished_and_marks_only_the_rest(kernel):
    done = asyncio.Event()
    never = asyncio.Event()

    async def send_email(to: str) -> str:
        """Send an email (a side effect the model must not repeat)."""
        done.set()
        return f"sent to {to}"

    async def wait(n: int) -> str:
        """Never returns."""
        await never.wait()
        return "never"

    model = kernel.model(
        "scripted:brain",
        responses=[
            [ToolUseBlock("e", "send_email", {"to": "bo"}), ToolUseBlock("w", "wait", {"n": 1})]
        ],
    )
    agent = ReActAgent(
        "helper", model, toolkit=Toolkit([send_email, wait], kernel=kernel), kernel=kernel
    )
    running = asyncio.ensure_future(agent(Q))
    await done.wait()
    await asyncio.sleep(0)
    agent.interrupt()
    reply = await running
    assert reply.metadata["interrupted"] is True
    email, waited = agent.memory[-2].blocks(ToolResultBlock)
    assert (email.output, email.is_error) == ("sent to bo", False)
    assert waited.is_error and waited.output.startswith("interrupted before it finished")
    await assert_answered(kernel, agent.messages())


async def test_calls_after_an_interrupted_one_are_marked_not_run(kernel):
    started = asyncio.Event()

    async def wait(n: int) -> str:
        """Never returns."""
        started.set()
        await asyncio.Event().wait()
        return "never"

    calls = [ToolUseBlock(f"w{n}", "wait", {"n": n}) for n in range(3)]
    model = kernel.model("scripted:brain", responses=[calls])
    agent = ReActAgent(
        "helper", model, toolkit=Toolkit([wait], kernel=kernel), parallel=False, kernel=kernel
    )
    running = asyncio.ensure_future(agent(Q))
    await started.wait()
    agent.interrupt()
    await running
    outputs = [r.output for r in agent.memory[-2].blocks(ToolResultBlock)]
    assert outputs[0].startswith("interrupted before it finished")
    assert outputs[1:] == ["not run: the reply was interrupted before this call started"] * 2


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is new in 3.11")
async def test_a_tool_cancelled_from_within_is_an_error_result_not_a_cancelled_reply(kernel):
    async def flaky(n: int) -> str:
        """Its inner work gets cancelled by someone else."""
        inner = asyncio.ensure_future(asyncio.sleep(10))
        asyncio.get_running_loop().call_soon(inner.cancel)
        await inner
        return "never"

    async def fine(n: int) -> str:
        """Works."""
        await asyncio.sleep(0.01)
        return "fine"

    model = kernel.model(
        "scripted:brain",
        responses=[
            [ToolUseBlock("f", "flaky", {"n": 1}), ToolUseBlock("g", "fine", {"n": 2})],
            "One of them failed.",
        ],
    )
    agent = ReActAgent(
        "helper", model, toolkit=Toolkit([flaky, fine], kernel=kernel), kernel=kernel
    )
    assert (await agent(Q)).text == "One of them failed."
    flaky_result, fine_result = agent.memory[2].blocks(ToolResultBlock)
    assert flaky_result.is_error and "CancelledError" in flaky_result.output
    assert fine_result.output == "fine"
    await assert_answered(kernel, agent.messages())


async def test_a_step_enters_memory_whole_even_when_others_speak_meanwhile(kernel):
    """A message observed while tools run (another agent of a hub) lands before the step, so a
    call and its results stay adjacent, as the providers require."""
    running = asyncio.Event()
    release = asyncio.Event()

    async def slow(n: int) -> str:
        """Takes a while."""
        running.set()
        await release.wait()
        return "slow done"

    model = kernel.model(
        "scripted:brain", responses=[[ToolUseBlock("s", "slow", {"n": 1})], "Done."]
    )
    agent = ReActAgent("helper", model, toolkit=Toolkit([slow], kernel=kernel), kernel=kernel)
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    replying = asyncio.ensure_future(agent(Q))
    await running.wait()
    assert [e.msg.blocks(ToolUseBlock)[0].id for e in recorder.of(MessageSent)] == ["s"]
    assert len(agent.memory) == 1, "the open step is not in memory yet"
    await agent.observe(Msg("carol", "Meanwhile, hello.", "user"))
    release.set()
    await replying
    assert [m.name for m in agent.memory] == ["user", "carol", "helper", "tools", "helper"]
    await assert_answered(kernel, agent.messages())


async def test_the_closing_instruction_is_for_one_call_only(kernel):
    work = Work()
    agent = react(kernel, work, responses=[uses(1), uses(2), uses(3), "Summary."])
    reply = await agent(Q)
    assert reply.metadata["max_iters"] is True
    assert "used all your steps" in agent.model.calls[-1]["messages"][-1].text
    assert not any("used all your steps" in m.text for m in agent.memory)


async def test_an_empty_history_is_refused_before_any_call(kernel):
    model = kernel.model("scripted:brain", responses=["never"])
    with pytest.raises(ModelRejected, match="no message to send"):
        await model([])
    assert model.calls == [] and model.responses == ["never"]
    agent = ReActAgent("helper", model, kernel=kernel)
    with pytest.raises(ReplyError, match="no message to send"):
        await agent()


# -- tool arguments through all four tiers -----------------------------------------------------
def bad(call_id="b", n="two"):
    return [ToolUseBlock(call_id, "step", {"n": n})]


def tiered(kernel, work, *responses, policy=None):
    model = kernel.model("scripted:brain", responses=list(responses))
    return ReActAgent(
        "helper", model, toolkit=Toolkit([work.step], kernel=kernel), faults=policy, kernel=kernel
    )


async def test_unfixable_arguments_reach_a_human_whose_answer_becomes_the_arguments(kernel):
    human = Answerer(Resolution("answer", '{"n": 2}'))
    kernel.register(human, "human")
    work = Work()
    agent = tiered(kernel, work, bad("b1"), bad("b2"), bad("b3"), "It is done.")
    assert (await agent(Q)).text == "It is done."
    [incident] = human.seen
    assert incident.target == "arguments of step" and "n: expected an integer" in incident.reason
    assert "← step failed: invalid arguments" in incident.request, "the human sees the calls"
    assert incident.outputs == ['{"n": "two"}'] * 3
    assert [t["tier"] for t in incident.tiers].count(3) == 2, "two tier-3 rounds were spent"
    results = [r for m in agent.memory for r in m.blocks(ToolResultBlock)]
    assert [r.is_error for r in results] == [True, True, False]
    assert results[-1].output == "done 2"
    last_call = agent.memory[-3].blocks(ToolUseBlock)[0]
    assert last_call.input == {"n": 2}, "the call as it ran is what the model sees"
    [fault] = kernel.faults.faults
    assert (fault.tier, fault.resolver, fault.calls) == (4, "human (answer)", 2)
    await assert_answered(kernel, agent.messages())


async def test_a_human_retry_gives_the_model_its_rounds_again(kernel):
    human = Answerer(Resolution("retry"))
    kernel.register(human, "human")
    work = Work()
    agent = tiered(
        kernel,
        work,
        bad("b1"),
        bad("b2"),
        bad("b3"),
        bad("b4", 5),
        "Done.",
        policy=FaultPolicy(rounds=2),
    )
    assert (await agent(Q)).text == "Done."
    assert len(human.seen) == 1 and work.finished == {5}
    (retry,) = [f for f in kernel.faults.faults if f.tier == 4]
    assert retry.resolver == "human (retry)"
    await assert_answered(kernel, agent.messages())


async def test_a_human_abort_ends_the_reply_and_leaves_memory_valid(kernel):
    kernel.register(Answerer(Resolution("abort")), "human")
    agent = tiered(kernel, Work(), bad("b1"), bad("b2"), bad("b3"))
    with pytest.raises(ReplyError) as caught:
        await agent(Q)
    assert isinstance(caught.value.__cause__, Unresolved)
    assert "aborted by a human" in str(caught.value)
    await assert_answered(kernel, agent.messages())
    assert len([m for m in agent.memory if m.blocks(ToolUseBlock)]) == 2


async def test_with_no_one_to_ask_the_incident_is_kept_and_the_model_goes_on(kernel, tmp_path):
    work = Work()
    agent = tiered(kernel, work, bad("b1"), "I could not compute it.", policy=FaultPolicy(rounds=0))
    assert (await agent(Q)).text == "I could not compute it."
    [incident] = kernel.incidents.load()
    assert incident["target"] == "arguments of step" and incident["resolution"] is None
    [fault] = kernel.faults.faults
    assert fault.tier is None and "unresolved" in kernel.faults.render()
    [result] = agent.memory[2].blocks(ToolResultBlock)
    assert result.is_error and "invalid arguments" in result.output
    await assert_answered(kernel, agent.messages())


async def test_a_call_the_model_gives_up_is_reported_as_not_fixed(kernel):
    agent = tiered(kernel, Work(), bad("b1"), "Never mind.")
    await agent(Q)
    [fault] = kernel.faults.faults
    assert fault.tier is None and fault.resolver == "not fixed before the reply ended"
    assert "unresolved (not fixed before the reply ended)" in kernel.faults.render()
    agent.model.add([ToolUseBlock("b2", "step", {"n": 3})], "Fine.")
    await agent(Msg("user", "Again.", "user"))
    assert fault.tier is None, "a later good call does not resolve an old reply's fault"


async def test_a_cancel_while_a_human_decides_leaves_memory_valid(kernel):
    deciding = asyncio.Event()

    class Slow:
        @hookimpl
        async def escalate(self, incident):
            deciding.set()
            await asyncio.Event().wait()

    kernel.register(Slow(), "slow-human")
    agent = tiered(kernel, Work(), bad("b1"), policy=FaultPolicy(rounds=0))
    running = asyncio.ensure_future(agent(Q))
    await deciding.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert agent.memory.messages() == [Q], "the step waiting for a human is not stored"
    await assert_answered(kernel, agent.messages())
