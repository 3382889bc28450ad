"""Descriptions from docstrings: the summary, and the text of each argument in Google style
(``Args:`` / ``name (type): text``), NumPy style (``Parameters`` / ``name : type``) or reST
(``:param name: text``). The summary stops at the first section or field, so argument,
return and exception lines never leak into it."""

from __future__ import annotations

import inspect
import re

_GOOGLE_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params):\s*$")
_GOOGLE_ARG = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ARG = re.compile(r"^(\*{0,2}\w+)\s*(:.*)?$")
_REST_FIELD = re.compile(
    r"^:(param|parameter|arg|argument|key|keyword|type|returns?|rtype|raises?|except|exception"
    r"|yields?|ytype|var|ivar|cvar|meta)\b[^:]*:"
)
_REST_PARAM = re.compile(
    r"^:(?:param|parameter|arg|argument|key|keyword)\s+(?:[^:]*\s)?(\*{0,2}\w+)\s*:(.*)$"
)
_ANY_SECTION = re.compile(
    r"^(Returns?|Yields?|Raises?|Examples?|Notes?|See Also|References|Attributes|Warnings?)"
    r"\s*:?\s*$"
)


def parse_docstring(obj: object) -> tuple[str, dict[str, str]]:
    """(description, {argument: text}) of an object's docstring."""
    doc = inspect.getdoc(obj) or ""
    lines = doc.splitlines()
    summary: list[str] = []
    for line in lines:
        if (
            _GOOGLE_SECTION.match(line.strip())
            or _ANY_SECTION.match(line.strip())
            or _REST_FIELD.match(line.strip())
            or (line.strip() == "Parameters")
        ):
            break
        summary.append(line)
    description = " ".join(" ".join(summary).split())
    return description, _numpy_args(lines) or _google_args(lines) or _rest_args(lines)


def _rest_args(lines: list[str]) -> dict[str, str]:
    """``:param name: text`` (or ``:param type name: text``), continued on indented lines."""
    args: dict[str, str] = {}
    current = None
    for line in lines:
        stripped = line.strip()
        match = _REST_PARAM.match(stripped)
        if match:
            current = match.group(1).lstrip("*")
            args[current] = match.group(2).strip()
        elif _REST_FIELD.match(stripped) or not stripped or not line.startswith(" "):
            current = None
        elif current is not None:
            args[current] = f"{args[current]} {stripped}".strip()
    return args


def _google_args(lines: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    inside, current, indent = False, None, 0
    for line in lines:
        stripped = line.strip()
        if _GOOGLE_SECTION.match(stripped):
            inside, current = True, None
            continue
        if not inside:
            continue
        if stripped and not line.startswith(" ") and stripped.endswith(":"):
            break  # the next section
        if not stripped:
            continue
        level = len(line) - len(line.lstrip())
        match = _GOOGLE_ARG.match(stripped)
        if match and (current is None or level <= indent):
            current, indent = match.group(1).lstrip("*"), level
            args[current] = match.group(3).strip()
        elif current is not None:
            args[current] = f"{args[current]} {stripped}".strip()
    return args


def _numpy_args(lines: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for i, line in enumerate(lines):
        if (
            line.strip() == "Parameters"
            and i + 1 < len(lines)
            and set(lines[i + 1].strip()) == {"-"}
        ):
            start = i + 2
            break
    else:
        return args
    current = None
    for line in lines[start:]:
        stripped = line.strip()
        if stripped and not line.startswith(" "):
            if _ANY_SECTION.match(stripped) or (set(stripped) == {"-"}):
                break
            match = _NUMPY_ARG.match(stripped)
            if match:
                current = match.group(1).lstrip("*")
                args[current] = ""
                continue
        if current is not None and stripped:
            if set(stripped) == {"-"}:
                args.pop(current, None)
                break
            args[current] = f"{args[current]} {stripped}".strip()
    return args
