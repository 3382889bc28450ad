"""``dashscope:<model>``: Qwen through DashScope's native generation API (JSON and SSE) over the
kernel's HTTP pool, with the ``dashscope`` and ``dashscope-multiagent`` formatters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aopkit

from .formatter import DashScopeFormatter, DashScopeMultiAgentFormatter
from .model import DEFAULT_BASE_URL, MULTIMODAL_PATH, TEXT_PATH, DashScopeModel

__all__ = [
    "DEFAULT_BASE_URL",
    "MULTIMODAL_PATH",
    "TEXT_PATH",
    "DashScopeFormatter",
    "DashScopeModel",
    "DashScopeMultiAgentFormatter",
]


@aopkit.hookimpl
def register_models(register: Callable[[str, Any], None]) -> None:
    register("dashscope", DashScopeModel)


@aopkit.hookimpl
def register_formatters(register: Callable[[str, Any], None]) -> None:
    register(DashScopeFormatter.name, DashScopeFormatter())
    register(DashScopeMultiAgentFormatter.name, DashScopeMultiAgentFormatter())
