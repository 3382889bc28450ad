"""Usage, prices and budgets under hostile input: numbers too large for a float, a price so
high its cost would overflow, agent names made to break the report."""

from __future__ import annotations

import json

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
