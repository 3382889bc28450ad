"""The targets of the malformed-output corpus (``malformed_outputs.jsonl``, field ``schema``).

A few shapes models are commonly asked for, chosen so that repairs meet an enum, a literal,
optional fields, a nested object, a list of objects and a flat tool-arguments object.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import attrs


class Stance(enum.Enum):
    PRO = "pro"
    CON = "con"
    NEUTRAL = "neutral"


@attrs.frozen
class Verdict:
    """A judge's decision on a debate."""

    winner: str
    stance: Stance
    score: int
    reasons: list[str]
    confident: bool = False


@attrs.frozen
class Address:
    street: str
    city: str
    postcode: str


@attrs.frozen
class Person:
    """A contact extracted from a text."""

    name: str
    age: int | None = None
    email: str | None = None
    address: Address | None = None
    tags: list[str] = attrs.Factory(list)


@attrs.frozen
class SearchArgs:
    """The arguments of a web-search tool call."""

    query: str
    limit: int = 10
    exact: bool = False
    lang: str | None = None
    min_score: float = 0.0


@attrs.frozen
class Task:
    title: str
    priority: Literal["low", "medium", "high"]
    hours: float
    done: bool = False


@attrs.frozen
class TaskList:
    """A plan as a list of tasks."""

    tasks: list[Task]


SCHEMAS: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (Verdict, Person, SearchArgs, TaskList)
}
