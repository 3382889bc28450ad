"""``openai:<model>``: OpenAI chat completions (JSON and SSE) over the kernel's HTTP pool, and
OpenAI-compatible servers (vLLM, DeepSeek, llama.cpp server, LiteLLM...) through ``base_url``;
with the ``openai`` and ``openai-multiagent`` formatters. ``openai-responses:<model>``: the
Responses API, with the ``openai-responses`` and ``openai-responses-multiagent`` formatters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aopkit

from .formatter import OpenAIFormatter, OpenAIMultiAgentFormatter, wire_name
from .model import ANSWER_TOOL, DEFAULT_BASE_URL, SCHEMA_NAME, OpenAIModel
from .responses_formatter import ResponsesFormatter, ResponsesMultiAgentFormatter
from .responses_model import OpenAIResponsesModel

__all__ = [
    "ANSWER_TOOL",
    "DEFAULT_BASE_URL",
    "SCHEMA_NAME",
    "OpenAIFormatter",
    "OpenAIModel",
    "OpenAIMultiAgentFormatter",
    "OpenAIResponsesModel",
    "ResponsesFormatter",
    "ResponsesMultiAgentFormatter",
    "wire_name",
]


@aopkit.hookimpl
def register_models(register: Callable[[str, Any], None]) -> None:
    register("openai", OpenAIModel)
    register("openai-responses", OpenAIResponsesModel)


@aopkit.hookimpl
def register_formatters(register: Callable[[str, Any], None]) -> None:
    register(OpenAIFormatter.name, OpenAIFormatter())
    register(OpenAIMultiAgentFormatter.name, OpenAIMultiAgentFormatter())
    register(ResponsesFormatter.name, ResponsesFormatter())
    register(ResponsesMultiAgentFormatter.name, ResponsesMultiAgentFormatter())
