"""Serve agents to other programs: ``aopkit serve MODULE:OBJECT``, or :func:`build_app` to mount
the same aiohttp application in a host's own. See docs/serve.md.

The server's modules load on first use: every kernel loads this plugin, few of them serve.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aopkit

if TYPE_CHECKING:
    from ._a2a import ask_client
    from ._a2a_agent import A2AAgent, RemoteAgentError
    from ._app import PROTOCOLS, SERVICE, build_app
    from ._service import (
        Conversation,
        ConversationBusy,
        Events,
        InvalidConversation,
        Service,
        UnknownAgent,
    )

_PUBLIC = {
    "A2AAgent": "_a2a_agent",
    "RemoteAgentError": "_a2a_agent",
    "ask_client": "_a2a",
    "PROTOCOLS": "_app",
    "SERVICE": "_app",
    "build_app": "_app",
    "Conversation": "_service",
    "ConversationBusy": "_service",
    "Events": "_service",
    "InvalidConversation": "_service",
    "Service": "_service",
    "UnknownAgent": "_service",
}
__all__ = [
    "PROTOCOLS",
    "SERVICE",
    "A2AAgent",
    "Conversation",
    "ConversationBusy",
    "Events",
    "InvalidConversation",
    "RemoteAgentError",
    "Service",
    "UnknownAgent",
    "ask_client",
    "build_app",
]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)


@aopkit.hookimpl
def register_commands(register: Callable[..., None]) -> None:
    register(
        "serve",
        _serve,
        help="serve agents over HTTP (OpenAI, A2A, MCP, AG-UI)",
        arguments=_arguments,
    )


# The command's module loads when the command line is built or run, not with every kernel.
def _arguments(parser: Any) -> None:
    from ._command import arguments

    arguments(parser)


def _serve(args: Any, kernel: aopkit.Kernel) -> Any:
    from ._command import serve

    return serve(args, kernel)
