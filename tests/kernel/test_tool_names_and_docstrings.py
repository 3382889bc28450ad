"""Tool names every provider accepts, and descriptions without parameter lines whatever the
docstring style (reST, Google, NumPy)."""

from __future__ import annotations

import functools

import pytest

from aopkit import Tool, Toolkit, tool
from aopkit.blocks import ToolUseBlock
from aopkit.docstrings import parse_docstring
from aopkit.toolkit import ToolError


def power(base: float, exponent: int = 2) -> float:
    """Raise a number to a power."""
    return base**exponent


@pytest.mark.parametrize(
    "func",
    [lambda x: x, (lambda: None)],
    ids=["lambda", "lambda-no-args"],
)
def test_a_lambda_needs_a_name(func):
    with pytest.raises(ToolError, match=r"'<lambda>' is not a valid tool name.*pass name="):
        Tool(func)
    with pytest.raises(ToolError, match="pass name="):
        Toolkit([func])
    assert Tool(func, name="identity").name == "identity"


@pytest.mark.parametrize("name", ["has space", "dots.in.it", "", "x" * 65, "café", "a/b"])
def test_a_name_no_provider_accepts_is_refused(name):
    with pytest.raises(ToolError, match="not a valid tool name"):
        Tool(power, name=name)


def test_every_way_of_making_a_tool_checks_the_name():
    with pytest.raises(ToolError, match="not a valid tool name"):
        tool(name="bad name")(power)
    with pytest.raises(ToolError, match="not a valid tool name"):
        Toolkit().add(power, name="bad name")
    with pytest.raises(ToolError, match="not a valid tool name"):
        Tool(power).with_options(name="bad name")


async def test_a_partial_is_named_after_its_function_and_hides_what_it_fixes(kernel):
    square = Tool(functools.partial(power, exponent=2))
    assert square.name == "power"
    assert square.description == "Raise a number to a power."
    assert list(square.parameters["properties"]) == ["base"]  # what the partial fixes is hidden
    cube = Tool(functools.partial(power, exponent=3), name="cube")
    result = await Toolkit([cube]).call(ToolUseBlock("c", "cube", {"base": 2}), kernel=kernel)
    assert result.output == "8.0"  # base is a float


async def test_a_callable_object_is_named_after_its_class(kernel):
    class Lookup:
        """Find a word in the glossary."""

        def __call__(self, word: str) -> str:
            return word.upper()

    found = Tool(Lookup())
    assert (found.name, found.description) == ("Lookup", "Find a word in the glossary.")
    assert found.parameters["required"] == ["word"]
    result = await Toolkit([found]).call(ToolUseBlock("c", "Lookup", {"word": "ab"}), kernel=kernel)
    assert result.output == "AB"


async def test_an_async_callable_object_and_an_async_partial_are_awaited(kernel):
    class Fetch:
        async def __call__(self, url: str) -> str:
            return f"fetched {url}"

    async def greet(greeting: str, name: str) -> str:
        return f"{greeting}, {name}"

    toolkit = Toolkit([Fetch(), Tool(functools.partial(greet, "hello"), name="hello")])
    fetched = await toolkit.call(ToolUseBlock("c", "Fetch", {"url": "x"}), kernel=kernel)
    hello = await toolkit.call(ToolUseBlock("d", "hello", {"name": "ada"}), kernel=kernel)
    assert (fetched.output, hello.output) == ("fetched x", "hello, ada")
    assert not fetched.is_error and not hello.is_error


def test_something_not_callable_is_no_tool():
    with pytest.raises(ToolError, match="function or a callable"):
        Tool("search")


def rest(city: str, days: int = 3) -> str:
    """Forecast the weather of a city.

    Uses the national service.

    :param city: the city's name,
        in English
    :type city: str
    :param int days: how many days ahead
    :returns: a forecast, one line a day
    :rtype: str
    :raises ValueError: for an unknown city
    """
    return city


def google(city: str, days: int = 3) -> str:
    """Forecast the weather of a city.

    Uses the national service.

    Args:
        city (str): the city's name,
            in English
        days: how many days ahead

    Returns:
        a forecast, one line a day

    Raises:
        ValueError: for an unknown city
    """
    return city


def numpy(city: str, days: int = 3) -> str:
    """Forecast the weather of a city.

    Uses the national service.

    Parameters
    ----------
    city : str
        the city's name,
        in English
    days : int
        how many days ahead

    Returns
    -------
    str
        a forecast, one line a day
    """
    return city


@pytest.mark.parametrize("func", [rest, google, numpy])
def test_every_docstring_style_gives_the_same_description_and_parameters(func):
    summary, arguments = parse_docstring(func)
    assert summary == "Forecast the weather of a city. Uses the national service."
    assert arguments == {"city": "the city's name, in English", "days": "how many days ahead"}
    made = Tool(func)
    assert made.description == summary
    assert made.parameters["properties"]["city"]["description"] == "the city's name, in English"
    assert made.parameters["properties"]["days"]["description"] == "how many days ahead"


def test_rest_fields_alone_leave_an_empty_description():
    def only_fields(x: int) -> int:
        """:param x: a number
        :returns: the same number"""
        return x

    assert parse_docstring(only_fields) == ("", {"x": "a number"})
