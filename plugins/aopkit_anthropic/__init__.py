"""``anthropic:<model>``: Anthropic's Messages API (JSON and SSE) over the kernel's HTTP pool,
with the ``anthropic`` and ``anthropic-multiagent`` formatters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aopkit

from .formatter import AnthropicFormatter, AnthropicMultiAgentFormatter
from .model import ANSWER_TOOL, API_VERSION, DEFAULT_BASE_URL, AnthropicModel

__all__ = [
    "ANSWER_TOOL",
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "AnthropicFormatter",
    "AnthropicModel",
    "AnthropicMultiAgentFormatter",
]


@aopkit.hookimpl
def register_models(register: Callable[[str, Any], None]) -> None:
    register("anthropic", AnthropicModel)


@aopkit.hookimpl
def register_formatters(register: Callable[[str, Any], None]) -> None:
    register(AnthropicFormatter.name, AnthropicFormatter())
    register(AnthropicMultiAgentFormatter.name, AnthropicMultiAgentFormatter())
