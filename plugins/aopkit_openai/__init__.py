"""``openai:<model>``: OpenAI chat completions (JSON and SSE) over the kernel's HTTP pool, and
OpenAI-compatible servers (vLLM, DeepSeek, llama.cpp server, LiteLLM...) through ``base_url``;
with the ``openai`` and ``openai-multiagent`` formatters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aopkit

from .formatter import OpenAIFormatter, OpenAIMultiAgentFormatter, wire_name
from .model import ANSWER_TOOL, DEFAULT_BASE_URL, SCHEMA_NAME, OpenAIModel

__all__ = [
    "ANSWER_TOOL",
    "DEFAULT_BASE_URL",
    "SCHEMA_NAME",
    "OpenAIFormatter",
    "OpenAIModel",
    "OpenAIMultiAgentFormatter",
    "wire_name",
]


@aopkit.hookimpl
def register_models(register: Callable[[str, Any], None]) -> None:
    register("openai", OpenAIModel)


@aopkit.hookimpl
def register_formatters(register: Callable[[str, Any], None]) -> None:
    register(OpenAIFormatter.name, OpenAIFormatter())
    register(OpenAIMultiAgentFormatter.name, OpenAIMultiAgentFormatter())
