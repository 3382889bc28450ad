import enum
from typing import Literal, Optional

import attrs
import pytest

from aopkit import ImageBlock, Tool, Toolkit, ToolUseBlock, URLSource, tool
from aopkit.events import ToolFinished, ToolStarted
from aopkit.toolkit import ToolError
from tests.kernel.helpers import Recorder


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


@attrs.frozen
class Place:
    city: str
    country: Optional[str] = None  # noqa: UP045


def forecast(place: Place, days: int = 3, unit: Unit = Unit.C, api_key: str = "") -> str:
    """Get the weather forecast.

    Args:
        place: Where to look.
        days: How many days ahead,
            at most seven.
        unit: Temperature unit.
        api_key: The service key (set by the program).
    """
    return f"{place.city}: sunny for {days} days in {unit.value} ({len(api_key)}-char key)"


async def search(query: str, limit: int = 5, mode: Literal["web", "news"] = "web") -> list[str]:
    """Search the web.

    Parameters
    ----------
    query : str
        What to look for.
    limit : int
        How many results.
    """
    return [f"{mode} result {i} for {query}" for i in range(limit)]


def use(name, **arguments):
    return ToolUseBlock(f"call-{name}", name, arguments)


def test_schema_from_signature_hints_and_docstrings():
    made = Tool(forecast, preset={"api_key": "k-123"})
    assert made.description == "Get the weather forecast."
    params = made.parameters
    assert params["required"] == ["place"]
    assert "api_key" not in params["properties"], "preset arguments are hidden from the model"
    assert params["properties"]["days"] == {
        "type": "integer",
        "description": "How many days ahead, at most seven.",
        "default": 3,
    }
    assert params["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"]
    assert params["properties"]["place"]["properties"]["country"]["anyOf"][1] == {"type": "null"}
    numpy = Tool(search).parameters["properties"]
    assert numpy["query"]["description"] == "What to look for."
    assert numpy["mode"] == {"type": "string", "enum": ["web", "news"], "default": "web"}


async def test_calls_convert_arguments_and_run_sync_and_async_tools(kernel):
    toolkit = Toolkit([Tool(forecast, preset={"api_key": "k-123"}), search], kernel=kernel)
    result = await toolkit.call(use("forecast", place={"city": "Paris"}, days=2, unit="fahrenheit"))
    assert not result.is_error
    assert result.output == "Paris: sunny for 2 days in fahrenheit (5-char key)"
    found = await toolkit.call(use("search", query="tea", limit=2))
    assert found.output == '["web result 0 for tea", "web result 1 for tea"]'


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"days": 2}, "place: required argument is missing"),
        ({"place": {"city": 3}}, "place.city: expected a string"),
        ({"place": {"city": "x"}, "unit": "kelvin"}, "unit: 'kelvin' is not a valid Unit"),
        ({"place": {"city": "x"}, "api_key": "stolen"}, "api_key: is set by the program"),
        ({"place": {"city": "x"}, "colour": "red"}, "colour: unexpected argument"),
    ],
)
async def test_bad_arguments_come_back_as_error_results(kernel, arguments, message):
    toolkit = Toolkit([Tool(forecast, preset={"api_key": "k"})], kernel=kernel)
    result = await toolkit.call(use("forecast", **arguments))
    assert result.is_error and message in result.output


async def test_unparsed_arguments_unknown_tools_and_failing_tools(kernel):
    def explode(x: int) -> int:
        raise ZeroDivisionError("division by zero")

    toolkit = Toolkit([explode], kernel=kernel)
    raw = ToolUseBlock("c1", "explode", {}, raw_input='{"x": 1')
    assert "not a JSON object" in (await toolkit.call(raw)).output
    unknown = await toolkit.call(use("nope"))
    assert unknown.is_error and "unknown tool 'nope'; available tools: explode" in unknown.output
    failed = await toolkit.call(use("explode", x=1))
    assert failed.is_error and failed.output == "ZeroDivisionError: division by zero"


async def test_tool_groups_switch_on_and_off(kernel):
    @tool(group="web")
    async def fetch(url: str) -> str:
        """Fetch a page."""
        return url

    toolkit = Toolkit([fetch, search], kernel=kernel)
    assert [s.name for s in toolkit.specs()] == ["fetch", "search"]
    toolkit.set_group("web", False)
    assert [s.name for s in toolkit.specs()] == ["search"]
    assert (await toolkit.call(use("fetch", url="x"))).is_error
    toolkit.set_group("web", True)
    assert (await toolkit.call(use("fetch", url="x"))).output == "x"
    with pytest.raises(ToolError, match="no tool is in group 'nope'"):
        toolkit.set_group("nope", True)


async def test_streaming_tools_yield_partial_results(kernel):
    async def count(n: int):
        """Count slowly."""
        for i in range(n):
            yield f"{i} "

    toolkit = Toolkit([count], kernel=kernel)
    partial = [r.output async for r in toolkit.stream(use("count", n=3))]
    assert partial == ["0 ", "0 1 ", "0 1 2 "]
    assert (await toolkit.call(use("count", n=2))).output == "0 1 "
    assert [r.output async for r in toolkit.stream(use("count", n=0))] == [""]  # still ends
    empty = await toolkit.call(use("count", n=0))
    assert empty.output == "" and not empty.is_error


async def test_a_plain_tool_streamed_yields_its_one_result_and_its_failures(kernel):
    def fail(n: int) -> int:
        """Fail."""
        raise ValueError(f"no {n}")

    toolkit = Toolkit([search, fail], kernel=kernel)
    [result] = [r async for r in toolkit.stream(use("search", query="x", limit=1))]
    assert result == await toolkit.call(use("search", query="x", limit=1))
    [failed] = [r async for r in toolkit.stream(use("fail", n=3))]
    assert failed.is_error and failed.output == "ValueError: no 3"
    [unknown] = [r async for r in toolkit.stream(use("nope"))]
    assert unknown.is_error and "unknown tool 'nope'" in unknown.output


async def test_tools_may_return_media_blocks(kernel):
    def snapshot() -> list:
        """Take a picture."""
        return [ImageBlock(URLSource("file:///tmp/shot.png")), "taken"]

    result = await Toolkit([snapshot], kernel=kernel).call(use("snapshot"))
    assert result.output[0] == ImageBlock(URLSource("file:///tmp/shot.png"))
    assert result.output[1].text == "taken"


async def test_tool_calls_are_events(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    await Toolkit([search], kernel=kernel).call(use("search", query="x", limit=1))
    assert [e.tool for e in recorder.of(ToolStarted)] == ["search"]
    [finished] = recorder.of(ToolFinished)
    assert finished.error is None and finished.call_id == "call-search"


async def test_plugins_contribute_tools(kernel):
    from aopkit import hookimpl

    class Plugin:
        @hookimpl
        def register_tools(self, register):
            register("shout", lambda text: text.upper())

    kernel.register(Plugin(), "shouter")
    toolkit = Toolkit(kernel=kernel)
    toolkit.add_registered("shout")
    assert (await toolkit.call(use("shout", text="hi"))).output == "HI"


def test_definition_errors_are_clear():
    with pytest.raises(ToolError, match="preset arguments \\['nope'\\]"):
        Tool(search, preset={"nope": 1})

    def odd(x: complex) -> None:
        """Odd."""

    with pytest.raises(ToolError, match="tool 'odd', argument 'x'"):
        Tool(odd)
    with pytest.raises(ToolError, match="already has a tool named 'search'"):
        Toolkit([search, search])


async def test_adding_a_tool_under_other_options_keeps_its_schema(kernel):
    base = Tool(search)
    toolkit = Toolkit(kernel=kernel)
    renamed = toolkit.add(base, name="web_search", group="web")
    assert renamed.spec.name == "web_search" and renamed.parameters == base.parameters
    assert base.name == "search", "the original is not changed"
    assert (await toolkit.call(use("web_search", query="x", limit=1))).output == (
        '["web result 0 for x"]'
    )
    with pytest.raises(ToolError, match=r"\['preset'\] cannot be changed"):
        toolkit.add(base, preset={"limit": 1})
