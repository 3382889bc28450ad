"""Usage, prices and budgets under hostile input: numbers too large for a float, a price so
high its cost would overflow, agent names made to break the report."""

from __future__ import annotations

import json
import sys
import threading

import pytest

from aopkit import (
    Budget,
    JSONFileStore,
    JsonlTrace,
    Kernel,
    ModelAgent,
    Msg,
    Price,
    Usage,
    save_session,
)
from aopkit.blocks import TextBlock
from aopkit.errors import AopkitError, DecodeError
from aopkit.models import ChatResponse

HUGE = 10**400  # an int no float can hold


@pytest.mark.parametrize("field", ["calls", "tokens", "cost"])
def test_a_huge_whole_number_is_a_budget_without_practical_limit(field):
    assert getattr(Budget(**{field: HUGE}), field) == HUGE


@pytest.mark.parametrize("rate", [HUGE, 1e300, float("inf"), float("nan"), -1])
def test_a_rate_no_cost_could_be_stored_with_is_refused(rate):
    with pytest.raises(AopkitError, match="price input"):
        Price(input=rate, output=1)
    with pytest.raises(AopkitError, match="price reasoning"):
        Price(input=1, output=1, reasoning=rate)


def test_prices_that_are_not_a_mapping_are_a_clear_error():
    with pytest.raises(AopkitError, match="mapping of 'provider:model' names"):
        Kernel(load_entrypoints=False, prices=[("a:b", Price(1, 1))])  # type: ignore[arg-type]


def test_a_float_field_given_a_huge_int_is_a_decode_error():
    usage = {"input_tokens": 1, "output_tokens": 1, "seconds": HUGE}
    with pytest.raises(DecodeError, match=r"seconds: .* too large"):
        Usage.of(Msg("a", "x", "assistant", metadata={"usage": usage}))


async def test_the_most_expensive_price_still_stores_and_traces_every_reply(kernel, tmp_path):
    kernel.prices["scripted:m"] = Price(input=1e9, output=1e9)
    trace = tmp_path / "trace.jsonl"
    sink = JsonlTrace(trace)
    kernel.register(sink, "trace")
    big = ChatResponse([TextBlock("x")], Usage(10**12, 10**12), "stop")
    agent = ModelAgent("a", kernel.model("scripted:m", responses=[big, big]), kernel=kernel)
    await agent("one")
    await agent("two")  # every event written: the inputs and the replies with their usage
    await save_session(JSONFileStore(tmp_path / "s"), "s", agent)  # the cost is a finite number
    sink.close()
    lines = trace.read_text().splitlines()
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds.count("model_call_finished") == 2 and kinds.count("message_sent") == 4
    assert kernel.usage.total.usage.cost == pytest.approx(4e15)


@pytest.mark.parametrize(
    "name", ["two\nlines", "\x1b[2J\x1b]0;pwned\x07clear", "\u202eevil", "x" * 10_000]
)
async def test_the_usage_report_shows_hostile_names_escaped_on_one_short_line(kernel, name):
    agent = ModelAgent(name, kernel.model("scripted:m", responses=["ok"]), kernel=kernel)
    await agent("hi")
    report = kernel.usage.render()
    assert not any(c in report for c in "\x1b\x07\u202e")
    row = report.splitlines()[3]  # the report title, the header, its rule, then the agent
    assert row.split()[1:3] == ["1", "0"]  # calls and retries in their columns
    assert max(map(len, report.splitlines())) < 200


@pytest.mark.parametrize("field", ["input_tokens", "calls", "retries", "cost", "seconds"])
def test_a_stored_usage_with_a_negative_count_is_a_decode_error(field):
    usage = {"input_tokens": 1, "output_tokens": 1, field: -1}
    with pytest.raises(DecodeError, match=f"metadata.usage.{field}: negative"):
        Usage.of(Msg("a", "x", "assistant", metadata={"usage": usage}))


def answered(usage: Usage) -> ChatResponse:
    return ChatResponse([TextBlock("ok")], usage, "stop")


@pytest.mark.parametrize("count", [2**64, HUGE, -1, 1.5, True, "12", float("nan")], ids=repr)
async def test_a_count_no_call_can_have_is_unknown_and_spoils_no_other(kernel, count):
    """Sums are kept as one number a count each: a count that is no real count (too large,
    negative, not a whole number) must neither spill into another count nor fail the call."""
    usages = [
        Usage(count, 5, 0.5),
        Usage(3, count, 0.5),
        Usage(3, 5, 0.5, cached_input_tokens=count, reasoning_tokens=count),
    ]
    model = kernel.model("scripted:m", responses=[answered(u) for u in usages])
    agent = ModelAgent("a", model, kernel=kernel)
    replies = [await agent(f"q{i}") for i in range(3)]
    first, second, third = (r.metadata["usage"] for r in replies)
    assert first["input_tokens"] is None and first["output_tokens"] == 5
    assert second["input_tokens"] == 3 and second["output_tokens"] is None
    assert (third["input_tokens"], third["output_tokens"]) == (3, 5)
    assert "cached_input_tokens" not in third and "reasoning_tokens" not in third
    total = kernel.usage.total
    assert total.usage == Usage(6, 10, 1.5, calls=3)
    assert total.unreported == 2 and total.unpriced == 3


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -1.0, 10**400])
async def test_seconds_no_call_can_take_count_as_none(kernel, seconds):
    model = kernel.model("scripted:m", responses=[answered(Usage(3, 5, seconds))])
    reply = await ModelAgent("a", model, kernel=kernel)("q")
    assert reply.metadata["usage"] == {
        "input_tokens": 3,
        "output_tokens": 5,
        "seconds": 0.0,
        "calls": 1,
    }
    assert kernel.usage.total.usage == Usage(3, 5, 0.0, calls=1)


def test_the_largest_counts_a_call_can_have_stay_in_their_own_sums(kernel):
    """The largest count a call can report, over and over, in every kind of count at once."""
    from aopkit.usage import LIMIT, Account, Ticket

    big = LIMIT - 1
    usage = Usage(
        big,
        big,
        1.0,
        cached_input_tokens=big,
        cache_write_tokens=big,
        reasoning_tokens=big,
    )
    account = Account("a")
    for _ in range(1000):
        kernel.usage.settle(Ticket("scripted:m", (account,)), usage, 2**20, report=False)
    n = 1000
    assert account.usage == Usage(
        n * big,
        n * big,
        n * 1.0,
        cached_input_tokens=n * big,
        cache_write_tokens=n * big,
        reasoning_tokens=n * big,
        calls=n,
        retries=n * 2**20,
    )
    assert (account.unreported, account.unpriced) == (0, n)


def test_threads_charging_the_same_accounts_lose_no_call(kernel):
    """CPython 3.11 switches threads only at calls and loops, so an unlocked ``+=`` on an
    account happens to hold; charging through any call without the lock loses about a third
    of the calls here (tried), and a free-threaded Python would lose them anyway."""
    from aopkit.usage import Account, Ticket

    shared = (kernel.usage.total, Account("a"))
    ticket = Ticket("scripted:m", shared)

    def charge() -> None:
        for _ in range(5000):
            kernel.usage.settle(ticket, Usage(1, 2, 0.001), 0, report=False)

    threads = [threading.Thread(target=charge) for _ in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between any two bytecodes: a race shows
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    for account in shared:
        assert (account.calls, account.usage.input_tokens, account.usage.output_tokens) == (
            40_000,
            40_000,
            80_000,
        )
