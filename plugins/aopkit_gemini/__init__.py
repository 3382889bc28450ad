"""``gemini:<model>``: Google's Gemini API (``generateContent`` and its SSE stream) over the
kernel's HTTP pool, with the ``gemini`` and ``gemini-multiagent`` formatters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aopkit

from .formatter import DEFAULT_BASE_URL, GeminiFormatter, GeminiMultiAgentFormatter
from .model import GeminiModel
from .schema import SchemaError, to_gemini_schema

__all__ = [
    "DEFAULT_BASE_URL",
    "GeminiFormatter",
    "GeminiModel",
    "GeminiMultiAgentFormatter",
    "SchemaError",
    "to_gemini_schema",
]


@aopkit.hookimpl
def register_models(register: Callable[[str, Any], None]) -> None:
    register("gemini", GeminiModel)


@aopkit.hookimpl
def register_formatters(register: Callable[[str, Any], None]) -> None:
    register(GeminiFormatter.name, GeminiFormatter())
    register(GeminiMultiAgentFormatter.name, GeminiMultiAgentFormatter())
