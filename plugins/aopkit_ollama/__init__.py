"""``ollama:<model>``: an Ollama server's ``/api/chat`` (JSON and NDJSON) over the kernel's HTTP
pool, with the ``ollama`` and ``ollama-multiagent`` formatters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aopkit

from .formatter import OllamaFormatter, OllamaMultiAgentFormatter
from .model import DEFAULT_BASE_URL, PATH, OllamaModel

__all__ = [
    "DEFAULT_BASE_URL",
    "PATH",
    "OllamaFormatter",
    "OllamaModel",
    "OllamaMultiAgentFormatter",
]


@aopkit.hookimpl
def register_models(register: Callable[[str, Any], None]) -> None:
    register("ollama", OllamaModel)


@aopkit.hookimpl
def register_formatters(register: Callable[[str, Any], None]) -> None:
    register(OllamaFormatter.name, OllamaFormatter())
    register(OllamaMultiAgentFormatter.name, OllamaMultiAgentFormatter())
