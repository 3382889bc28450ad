"""Usage on replies, totals per agent, model and kernel, prices, and budgets checked before
the call that would exceed them."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from aopkit import (
    Agent,
    AgentPool,
    Budget,
    BudgetExceeded,
    JSONFileStore,
    JsonlTrace,
    Kernel,
    ModelAgent,
    Msg,
    MsgHub,
    Price,
    ReActAgent,
    ReplyError,
    Toolkit,
    ToolUseBlock,
    Usage,
    load_session,
    save_session,
)
from aopkit.errors import AopkitError, DecodeError
from aopkit.events import BudgetReached, ModelCallFinished, ModelCallStarted
from aopkit.models import ChatModel, ChatResponse, ModelUnavailable
from aopkit.retry import RetryPolicy
from aopkit.usage import estimate_tokens
from tests.kernel.helpers import Recorder
from tests.tool_history import assert_answered

HI = Msg("user", "hi", "user")


def answer(text: str = "ok", usage: Usage | None = None) -> ChatResponse:
    from aopkit import TextBlock

    return ChatResponse([TextBlock(text)], usage, "stop")


class Slow(ChatModel):
    """Answers after a pause, counting the calls that reached it (so that budgets can be seen
    to stop calls before they are made)."""

    provider = "slow"

    def __init__(self, model, *, kernel, delay=0.02):
        super().__init__(model, kernel=kernel)
        self.delay, self.made = delay, 0
        self.lock = threading.Lock()

    async def _complete(self, **request):
        with self.lock:
            self.made += 1
        await asyncio.sleep(self.delay)
        return answer("done", Usage(10, 5))


# -- usage on replies ---------------------------------------------------------------------------
async def test_a_reply_carries_its_usage_through_save_load_and_the_trace(kernel, tmp_path):
    kernel.prices["scripted:m"] = Price(input=2.0, output=8.0)
    trace = JsonlTrace(tmp_path / "trace.jsonl")
    kernel.register(trace, "trace")
    model = kernel.model("scripted:m", responses=[answer("one", Usage(100, 20))])
    agent = ModelAgent("judge", model, kernel=kernel)
    reply = await agent(HI)
    usage = Usage.of(reply)
    assert (usage.input_tokens, usage.output_tokens, usage.calls, usage.retries) == (100, 20, 1, 0)
    assert usage.cost == pytest.approx((100 * 2 + 20 * 8) / 1e6)
    assert usage.cached_input_tokens is None  # not reported: unknown, not 0

    store = JSONFileStore(tmp_path / "sessions")
    await save_session(store, "s", agent)
    again = ModelAgent("judge", kernel.model("scripted:m"), kernel=kernel)
    await load_session(store, "s", again)
    assert Usage.of(again.memory.messages()[-1]) == usage

    trace.close()
    sent = [
        json.loads(line)
        for line in (tmp_path / "trace.jsonl").read_text().splitlines()
        if '"message_sent"' in line
    ]
    assert Usage.of(kernel.codec.load(sent[-1]["msg"])) == usage


async def test_a_message_no_model_made_has_no_usage(kernel):
    from tests.kernel.helpers import Echo

    reply = await Echo("echo", kernel=kernel)(HI)
    assert "usage" not in reply.metadata and Usage.of(reply) is None


def test_usage_metadata_that_is_not_usage_is_a_clear_error():
    bad = Msg("a", "x", "assistant", metadata={"usage": {"input_tokens": "many"}})
    with pytest.raises(DecodeError, match=r"metadata\.usage\.input_tokens"):
        Usage.of(bad)


def noop() -> str:
    """Do nothing."""
    return "done"


@pytest.mark.parametrize(
    "usages",
    [
        [Usage(None, None)],
        [Usage(0, 0)],
        [Usage(10, 5, 0.25), Usage(None, 3, cached_input_tokens=0, reasoning_tokens=2)],
        [Usage(7, None, cache_write_tokens=4), Usage(1, 1, cached_input_tokens=5), Usage(2, 2)],
    ],
)
async def test_usage_metadata_is_what_the_codec_makes_of_the_usage(kernel, monkeypatch, usages):
    """A reply's ``metadata["usage"]`` is made from the sums, not by the codec, so it must be
    exactly what the codec makes of the same usage (unknown counts null, unused ones left out,
    in the same order)."""
    price = Price(input=1.0, output=2.0)
    kernel.prices["scripted:p"] = price
    steps = [
        ChatResponse([ToolUseBlock(f"c{i}", "noop", {})], u, "tool_use")
        for i, u in enumerate(usages[:-1])
    ]
    model = kernel.model("scripted:p", responses=[*steps, answer("done", usages[-1])])
    agent = ReActAgent("a", model, tools=[noop], kernel=kernel)
    dump = kernel.codec.dump

    def no_usage(value, *args):
        assert not isinstance(value, Usage), "the codec dumped a reply's usage"
        return dump(value, *args)

    monkeypatch.setattr(kernel.codec, "dump", no_usage)
    reply = await agent(HI)
    want = Usage()
    for u in usages:
        want = want + Usage(
            u.input_tokens,
            u.output_tokens,
            u.seconds,
            cached_input_tokens=u.cached_input_tokens,
            cache_write_tokens=u.cache_write_tokens,
            reasoning_tokens=u.reasoning_tokens,
            calls=1,
            cost=price.cost(u),
        )
    assert json.dumps(reply.metadata["usage"]) == json.dumps(dump(want))
    assert json.dumps(agent.usage.usage_data()) == json.dumps(dump(want))


async def test_a_react_reply_sums_every_step_and_retries(kernel):
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    model = kernel.model(
        "scripted:m",
        responses=[
            ModelUnavailable("scripted:m", "overloaded", status=503),
            ChatResponse([ToolUseBlock("c1", "add", {"a": 1, "b": 2})], Usage(50, 10), "tool_use"),
            answer("3", Usage(70, 4, reasoning_tokens=2, cached_input_tokens=40)),
        ],
        retry=RetryPolicy(attempts=3, initial=0, max_wait=0, jitter=0),
    )
    agent = ReActAgent("calc", model, toolkit=Toolkit([add], kernel=kernel), kernel=kernel)
    usage = Usage.of(await agent(HI))
    assert (usage.calls, usage.retries) == (2, 1)
    assert (usage.input_tokens, usage.output_tokens) == (120, 14)
    assert (usage.cached_input_tokens, usage.reasoning_tokens) == (40, 2)
    assert usage.cost is None  # no price known


# -- events name the agent and hub --------------------------------------------------------------
async def test_model_call_events_name_the_agent_and_its_hubs(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    alice = ModelAgent("alice", kernel.model("scripted:a", responses=["a1", "a2"]), kernel=kernel)
    await kernel.model("scripted:x", responses=["direct"])([HI])  # outside any agent
    async with MsgHub([alice], name="room", kernel=kernel):
        await alice(HI)
    await alice(HI)
    started = [(e.agent, e.hubs) for e in recorder.of(ModelCallStarted)]
    finished = [(e.agent, e.hubs) for e in recorder.of(ModelCallFinished)]
    assert started == finished == [(None, ()), ("alice", ("room",)), ("alice", ())]
    assert recorder.of(ModelCallFinished)[1].usage["calls"] == 1
    rows = {line.split()[0]: line.split() for line in kernel.usage.render().splitlines()[:6]}
    assert rows["alice"][1] == "2" and rows["(no"][2] == "1"  # the direct call has its row


async def test_an_agent_inside_another_counts_towards_both(kernel):
    inner = ModelAgent("inner", kernel.model("scripted:i", responses=["inner says"]), kernel=kernel)

    async def ask_inner() -> str:
        """Ask the inner agent."""
        return (await inner(Msg("outer", "help", "user"))).text

    outer = ReActAgent(
        "outer",
        kernel.model("scripted:o", responses=[[ToolUseBlock("t", "ask_inner", {})], "done"]),
        toolkit=Toolkit([ask_inner], kernel=kernel),
        kernel=kernel,
    )
    outer.budget = Budget(calls=3)
    reply = await outer(HI)
    assert Usage.of(reply).calls == 3  # its own two and the inner agent's one
    assert inner.usage.usage.calls == 1 and outer.usage.usage.calls == 3
    assert kernel.usage.total.usage.calls == 3


async def test_an_agent_inside_another_across_hubs_is_charged_once_everywhere(kernel):
    """The inner agent's call counts once towards each account: both agents', both replies',
    and each hub's, even the hub both agents are in; its events name each hub once."""
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    inner = ModelAgent("inner", kernel.model("scripted:i", responses=["inner says"]), kernel=kernel)

    async def ask_inner() -> str:
        """Ask the inner agent."""
        return (await inner(Msg("outer", "help", "user"))).text

    outer = ReActAgent(
        "outer",
        kernel.model("scripted:o", responses=[[ToolUseBlock("t", "ask_inner", {})], "done"]),
        toolkit=Toolkit([ask_inner], kernel=kernel),
        kernel=kernel,
    )
    shared = MsgHub([outer, inner], name="shared", kernel=kernel)
    side = MsgHub([inner], name="side", kernel=kernel)
    async with shared, side:
        reply = await outer(HI)
    assert Usage.of(reply).calls == 3
    assert (outer.usage.usage.calls, inner.usage.usage.calls) == (3, 1)
    assert (shared.usage.usage.calls, side.usage.usage.calls) == (3, 1)
    assert kernel.usage.total.usage.calls == 3
    hubs = [(e.agent, e.hubs) for e in recorder.of(ModelCallStarted)]
    assert hubs == [
        ("outer", ("shared",)),
        ("inner", ("shared", "side")),
        ("outer", ("shared",)),
    ]


async def test_an_agent_asking_itself_is_charged_once_per_call(kernel):
    model = kernel.model("scripted:r", responses=[[ToolUseBlock("t", "again", {})], "deep", "top"])

    async def again() -> str:
        """Ask yourself."""
        return (await agent(Msg("self", "again", "user"))).text

    agent = ReActAgent("self", model, toolkit=Toolkit([again], kernel=kernel), kernel=kernel)
    agent.budget = Budget(calls=3)
    reply = await agent(HI)
    assert reply.text == "top" and Usage.of(reply).calls == 3
    assert agent.usage.usage.calls == 3 and agent.usage.refused == 0


async def test_a_reply_in_a_hub_without_model_calls_charges_nothing(kernel):
    from aopkit import Agent

    class Echo(Agent):
        async def reply(self, msg):
            return Msg(self.name, "ok", "assistant")

    echo = Echo("echo", kernel=kernel)
    async with MsgHub([echo], name="quiet", budget=Budget(calls=0), kernel=kernel) as hub:
        reply = await echo(HI)
    assert "usage" not in reply.metadata and hub.usage.usage.calls == 0
    assert "echo" not in kernel.usage.agents or echo.usage.usage.calls == 0


# -- totals and the report ----------------------------------------------------------------------
async def test_totals_per_agent_model_and_kernel_and_the_report(kernel):
    kernel.prices["scripted:priced"] = {"input": 1.0, "output": 1.0}
    a = ModelAgent("a", kernel.model("scripted:priced", responses=[answer("x", Usage(10, 5))] * 2))
    b = ModelAgent("b", kernel.model("scripted:free", responses=[answer("y", Usage(None, None))]))
    a._kernel = b._kernel = kernel
    assert kernel.usage.render() == "Usage report: no model calls."
    await a(HI)
    await a(HI)
    await b(HI)
    assert kernel.usage.agents["a"].usage.tokens == 30
    assert kernel.usage.agents["b"].usage.input_tokens is None  # unknown stays unknown
    assert kernel.usage.total.usage.calls == 3
    assert kernel.usage.total.unreported == 1 and kernel.usage.total.unpriced == 1
    report = kernel.usage.render()
    lines = report.splitlines()
    assert lines[0] == "Usage report:"
    assert lines[1].split() == ["agent", "calls", "retries", "input", "cached", "output",
                                "reasoning", "cost"]  # fmt: skip
    row = {line.split()[0]: line.split() for line in lines if line.split()}
    assert row["a"][1:4] == ["2", "0", "20"] and row["a"][-1] == "$0.000030"
    assert row["b"][3] == "?" and row["b"][-1] == "?"
    assert row["total"][1] == "3"
    assert row["scripted:free"][1] == "1"
    assert "1 call(s) without token counts" in report
    assert "no price (scripted:free)" in report
    data = kernel.usage.as_dict()
    json.dumps(data)  # JSON-ready
    assert data["agents"]["a"]["calls"] == 2 and data["total"]["unpriced"] == 1


async def test_totals_do_not_grow_with_history(kernel):
    agent = ModelAgent("a", kernel.model("scripted:m", responses=["x"] * 300), kernel=kernel)
    async with MsgHub([agent], kernel=kernel) as hub:
        for _ in range(300):
            await agent(HI)
    assert agent.usage.usage.calls == hub.usage.usage.calls == 300
    assert len(kernel.usage.agents) == 1 and len(kernel.usage.models) == 1
    assert kernel.usage.agents["a"]._held == (0, 0, 0.0)


async def test_totals_cleared_in_the_middle_of_a_reply_count_its_later_calls(kernel):
    """A reply works out the accounts of its model once; clearing the totals makes new
    kernel, model and agent accounts, which its next call must be charged to, and so must the
    next call of the reply it is part of."""

    def forget() -> str:
        """Clear the totals."""
        kernel.usage.clear()
        return "cleared"

    model = kernel.model(
        "scripted:m",
        responses=[
            ChatResponse([ToolUseBlock("c", "forget", {})], Usage(5, 5), "tool_use"),
            answer("done", Usage(1, 1)),
        ],
    )
    inner = ReActAgent("a", model, tools=[forget], kernel=kernel)

    class Outer(Agent):
        async def reply(self, msg):
            await self.kernel.model("scripted:o", responses=["before"])(HI)
            reply = await inner(HI)
            await self.kernel.model("scripted:o", responses=["after"])(HI)
            return reply

    outer = Outer("outer", kernel=kernel)
    reply = await outer(HI)
    assert Usage.of(reply).calls == 4  # the reply's own account lives as long as the reply
    usage = kernel.usage
    assert usage.total.calls == 2, "the inner call and the outer one after the clear"
    assert usage.models["scripted:m"].calls == usage.models["scripted:o"].calls == 1
    assert usage.agent("a").calls == 1, "the inner agent's next call, in the new account"
    assert usage.agent("outer").calls == 2, "the outer reply's calls after the clear"


def test_prices_are_checked_and_priced_as_documented():
    price = Price(input=1.0, output=4.0, cached_input=0.5, cache_write=2.0, reasoning=8.0)
    usage = Usage(
        1_000_000, 1_000_000, cached_input_tokens=200_000, cache_write_tokens=100_000,
        reasoning_tokens=250_000,
    )  # fmt: skip
    # plain input 700k at 1, cached 200k at .5, written 100k at 2, plain output 750k at 4,
    # reasoning 250k at 8
    assert price.cost(usage) == pytest.approx(0.7 + 0.1 + 0.2 + 3.0 + 2.0)
    assert Price(1, 4).cost(usage) == pytest.approx(1 + 4)  # parts at the full rates
    assert Price(1, 4).cost(Usage(None, 3)) is None
    bad_prices = (
        {"input": -1, "output": 1},
        {"input": "1", "output": 1},
        {"input": 1},
        {"input": 1, "output": float("nan")},
        {"input": 1, "output": 1, "typo": 2},
    )
    for bad in bad_prices:
        with pytest.raises(AopkitError, match="price"):
            Price.of(bad)
    kernel = Kernel(load_entrypoints=False)
    with pytest.raises(AopkitError, match="provider:model"):
        kernel.prices["no-colon"] = Price(1, 1)
    with pytest.raises(AopkitError, match="provider:model"):
        Kernel(load_entrypoints=False, prices={"nope": Price(1, 1)})


# -- budgets ------------------------------------------------------------------------------------
async def test_an_agent_budget_refuses_the_call_before_it_is_made(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    model = kernel.model("scripted:m", responses=["1", "2", "3"])
    agent = ModelAgent("judge", model, kernel=kernel)
    agent.budget = Budget(calls=2)
    await agent(HI)
    await agent(HI)
    with pytest.raises(BudgetExceeded) as caught:
        await agent(HI)
    assert len(model.calls) == 2  # the third call never reached the model
    error = caught.value
    assert (error.account, error.limit, error.allowed, error.used) == (
        "agent 'judge'",
        "calls",
        2,
        2,
    )
    assert "judge" in str(error) and "scripted:m" in str(error) and "not made" in str(error)
    (event,) = recorder.of(BudgetReached)
    assert (event.account, event.limit, event.agent) == ("agent 'judge'", "calls", "judge")
    assert "1 call(s) refused" in kernel.usage.render()
    agent.budget = Budget(calls=3)  # raise it, and work goes on
    assert (await agent(HI)).text == "3"


async def test_the_history_stays_valid_when_a_budget_stops_a_react_agent(kernel):
    def look(q: str) -> str:
        """Look something up."""
        return f"found {q}"

    calls = [ToolUseBlock("c1", "look", {"q": "a"}), ToolUseBlock("c2", "look", {"q": "b"})]
    model = kernel.model("scripted:m", responses=[calls, "never"])
    agent = ReActAgent("r", model, toolkit=Toolkit([look], kernel=kernel), kernel=kernel)
    agent.budget = Budget(calls=1)
    with pytest.raises(BudgetExceeded):
        await agent(HI)
    history = agent.memory.messages()
    assert [m.role for m in history] == ["user", "assistant", "user"]
    await assert_answered(kernel, history)


async def test_one_agent_out_of_budget_leaves_the_others_working(kernel):
    poor = ModelAgent("poor", kernel.model("scripted:p", responses=["p"] * 5), kernel=kernel)
    rich = ModelAgent("rich", kernel.model("scripted:r", responses=["r"] * 5), kernel=kernel)
    poor.budget = Budget(calls=1)
    async with MsgHub([poor, rich], kernel=kernel):
        await poor(HI)
        with pytest.raises(BudgetExceeded):
            await poor(HI)
        assert (await rich(HI)).text == "r"
        assert (await rich(HI)).text == "r"
    assert [m.text for m in poor.memory.messages()][-1] == "r"  # it still observes


async def test_a_hub_budget_covers_one_run(kernel):
    a = ModelAgent("a", kernel.model("scripted:a", responses=["a"] * 9), kernel=kernel)
    b = ModelAgent("b", kernel.model("scripted:b", responses=["b"] * 9), kernel=kernel)
    hub = MsgHub([a, b], name="debate", budget=Budget(calls=3), kernel=kernel)
    async with hub:
        await a(HI)
        await b(None)
        await a(None)
        with pytest.raises(BudgetExceeded, match="hub 'debate'"):
            await b(None)
        assert hub.usage.usage.calls == 3 and hub.usage.refused == 1
    await b(None)  # outside the hub: only its own budget (none) applies
    async with hub:  # a new run starts afresh
        assert hub.usage.usage.calls == 0
        await b(None)


async def test_a_kernel_budget_covers_every_agent_and_direct_calls(tmp_path):
    async with Kernel(budget=Budget(calls=2)) as kernel:
        assert kernel.usage.budget == Budget(calls=2)
        await kernel.model("scripted:m", responses=["1"])([HI])
        agent = ModelAgent("a", kernel.model("scripted:n", responses=["2", "3"]), kernel=kernel)
        await agent(HI)
        with pytest.raises(BudgetExceeded, match="budget of kernel"):
            await agent(HI)


async def test_a_token_budget_counts_the_expected_input(kernel):
    model = kernel.model("scripted:m", responses=[answer("x", Usage(40, 10))] * 3)
    agent = ModelAgent("a", model, kernel=kernel)
    agent.budget = Budget(tokens=100)
    await agent(HI)  # 50 used
    long = Msg("user", "word " * 60, "user")  # 300 characters: about 75 tokens expected
    assert estimate_tokens([long]) == 75
    with pytest.raises(BudgetExceeded) as caught:
        await agent(long)
    assert caught.value.limit == "tokens" and caught.value.used == 50
    needed = estimate_tokens(agent.messages())  # the whole history it would send
    assert caught.value.needed == needed > 75
    assert f"expected to use {needed} tokens" in str(caught.value)
    assert len(model.calls) == 1


async def test_a_cost_budget_needs_a_price_and_stops_at_the_limit(kernel):
    model = kernel.model("scripted:m", responses=[answer("x", Usage(1000, 1000))] * 5)
    agent = ModelAgent("a", model, kernel=kernel)
    agent.budget = Budget(cost=0.01)
    with pytest.raises(BudgetExceeded, match="has no price"):
        await agent(HI)
    assert model.calls == []
    kernel.prices["scripted:m"] = Price(input=1.0, output=3.0)  # $0.004 a call
    await agent(HI)
    await agent(HI)
    # $0.008 spent: the third call's input is expected to cost far less than the $0.002 left,
    # so it is made (and its output takes the total past the limit, as documented) ...
    await agent(HI)
    assert agent.usage.usage.cost == pytest.approx(0.012)
    with pytest.raises(BudgetExceeded) as caught:  # ... and nothing more is made
        await agent(HI)
    assert caught.value.limit == "cost" and caught.value.used == pytest.approx(0.012)
    assert len(model.calls) == 3


async def test_fifty_concurrent_calls_against_ten_make_exactly_ten(kernel):
    model = Slow("s", kernel=kernel)
    agent = ModelAgent("busy", model, kernel=kernel)
    agent.budget = Budget(calls=10)
    results = await asyncio.gather(*(agent(HI) for _ in range(50)), return_exceptions=True)
    assert model.made == 10
    assert sum(isinstance(r, Msg) for r in results) == 10
    assert all(isinstance(r, (Msg, BudgetExceeded)) for r in results)
    assert agent.usage.usage.calls == 10 and agent.usage.refused == 40


def test_threads_share_a_budget_exactly():
    kernel = Kernel(load_entrypoints=False, budget=Budget(calls=10))
    model = Slow("s", kernel=kernel, delay=0.01)
    outcomes: list[object] = []

    def worker() -> None:
        async def run() -> list[object]:
            return await asyncio.gather(*(model([HI]) for _ in range(10)), return_exceptions=True)

        outcomes.extend(asyncio.run(run()))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert model.made == 10
    assert sum(isinstance(o, ChatResponse) for o in outcomes) == 10
    assert kernel.usage.total.usage.calls == 10 and kernel.usage.total.refused == 30


async def test_a_cancelled_call_releases_its_reservation(kernel):
    model = Slow("s", kernel=kernel, delay=10)
    agent = ModelAgent("a", model, kernel=kernel)
    agent.budget = Budget(calls=2, tokens=10_000)
    task = asyncio.ensure_future(agent(HI))
    while model.made == 0:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    account = agent.usage
    assert account._held == (0, 0, 0.0)
    assert account.usage.calls == 1 and account.unreported == 1  # made, tokens unknown


async def test_a_stream_reserves_when_read_and_is_refused_there(kernel):
    model = kernel.model("scripted:m", responses=["hello world, streamed"] * 2)
    kernel.usage.budget = Budget(calls=1)
    never_read = await model([HI], stream=True)  # holds nothing until read
    chunks = [c async for c in await model([HI], stream=True)]
    assert chunks[-1].text == "hello world, streamed"
    with pytest.raises(BudgetExceeded):
        async for _ in never_read:
            pass
    assert kernel.usage.total._held == (0, 0, 0.0)


async def test_calls_a_reply_makes_in_tasks_and_threads_of_its_own_are_its_usage(kernel):
    """A reply's scope is made at its first call, wherever that is: calls in tasks it gathers
    and scopes asked for in threads it starts are all the one reply's (the pool's path and
    the usual one)."""
    from aopkit.usage import current_scope

    model = kernel.model("scripted:m", responses=[answer("x", Usage(3, 1))] * 4)
    seen: list[object] = []

    class Fanned(Agent):
        async def reply(self, msg: object) -> Msg:
            await asyncio.gather(model([HI]), model([HI]))
            barrier = threading.Barrier(4)

            def ask() -> object:
                barrier.wait()
                return current_scope()

            seen.extend(await asyncio.gather(*(asyncio.to_thread(ask) for _ in range(4))))
            return Msg(self.name, "done", "assistant")

    pooled = (await AgentPool([Fanned("p", kernel=kernel)]).reply_all(HI))[0]
    usual = await Fanned("u", kernel=kernel)(HI)
    for reply in (pooled, usual):
        usage = Usage.of(reply)
        assert (usage.calls, usage.input_tokens, usage.output_tokens) == (2, 6, 2)
    assert len({id(s) for s in seen[:4]}) == 1 and len({id(s) for s in seen[4:]}) == 1
    assert seen[0] is not seen[4] and seen[0].agent == "p" and seen[4].agent == "u"


async def test_budget_errors_pass_through_agents_unwrapped(kernel):
    agent = ModelAgent("a", kernel.model("scripted:m", responses=["x"]), kernel=kernel)
    agent.budget = Budget(calls=0)
    with pytest.raises(BudgetExceeded):
        await agent(HI)
    assert not issubclass(BudgetExceeded, ReplyError) and issubclass(BudgetExceeded, AopkitError)


def test_budgets_are_checked():
    for bad in ({"calls": -1}, {"tokens": 1.5}, {"cost": "1"}, {"calls": True}):
        with pytest.raises(AopkitError, match="budget"):
            Budget(**bad)
    kernel = Kernel(load_entrypoints=False)
    agent = ModelAgent("a", Slow("s", kernel=kernel), kernel=kernel)
    with pytest.raises(AopkitError, match=r"aopkit\.Budget"):
        agent.budget = 10  # type: ignore[assignment]
    with pytest.raises(AopkitError, match=r"aopkit\.Budget"):
        MsgHub([], budget={"calls": 1}, kernel=kernel)  # type: ignore[arg-type]


async def test_sessions_of_an_agent_share_its_budget(kernel):
    agent = ModelAgent("desk", kernel.model("scripted:m", responses=["x"] * 5), kernel=kernel)
    agent.budget = Budget(calls=2)
    await agent.session("ann")(HI)
    await agent.session("bob")(HI)
    with pytest.raises(BudgetExceeded, match="agent 'desk'"):
        await agent.session("cy")(HI)
    assert agent.usage.usage.calls == 2


async def test_a_stream_left_midway_is_charged_and_releases_its_reservation(kernel):
    model = kernel.model(
        "scripted:m", responses=["a long answer, streamed in chunks"], chunk_size=4
    )
    kernel.usage.budget = Budget(calls=5, tokens=1_000)
    stream = await model([HI], stream=True)
    async for _ in stream:
        break  # the consumer stops reading after the first chunk
    await stream.aclose()
    total = kernel.usage.total
    assert total._held == (0, 0, 0.0)
    assert total.usage.calls == 1 and total.unreported == 1  # made; its usage never arrived


def test_usages_add_what_each_knows():
    a = Usage(10, None, 0.5, cached_input_tokens=4, calls=1, cost=0.25)
    b = Usage(None, None, 0.25, reasoning_tokens=3, calls=2, retries=1)
    total = a + b
    assert (total.input_tokens, total.output_tokens, total.seconds) == (10, None, 0.75)
    assert (total.cached_input_tokens, total.reasoning_tokens) == (4, 3)
    assert (total.calls, total.retries, total.cost, total.tokens) == (3, 1, 0.25, 10)
    assert sum([a, b, Usage()], Usage()) == total  # Usage() is nothing
    assert (Usage() + Usage()).input_tokens is None  # unknown stays unknown


def test_a_scope_is_made_by_new_scope_not_by_its_class(kernel):
    from aopkit.usage import Scope, new_scope, new_where

    with pytest.raises(TypeError, match="new_scope"):
        Scope("a", kernel.usage)
    scope = new_scope("a", new_where(kernel.usage))
    assert scope.agent == "a" and scope.reply is None and scope.hubs == ()
    assert [a.label for a in scope.accounts] == ["agent 'a'", "reply"]
