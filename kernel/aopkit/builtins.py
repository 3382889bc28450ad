"""The kernel's own plugin: the standard block types, the ``run`` and ``chat`` commands and
their flags, registered through the same hooks as any plugin's. It is always loaded and cannot
be blocked. The command modules load only when a command runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .blocks import STANDARD_BLOCKS
from .hookspecs import hookimpl


@hookimpl
def register_block_types(register: Callable[[type], None]) -> None:
    for cls in STANDARD_BLOCKS:
        register(cls)


@hookimpl
def register_runtimes(register: Callable[[str, Any], None]) -> None:
    from .pool import LocalRuntime

    register("local", LocalRuntime())


@hookimpl
def register_compactors(register: Callable[[str, Any], None]) -> None:
    from .compaction import BUILTIN_COMPACTORS

    for name, compactor in BUILTIN_COMPACTORS.items():
        register(name, compactor)


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    register("run", _run, arguments=_run_arguments, run_options=True)
    register("chat", _chat, arguments=_chat_arguments, run_options=True)


def _run(args: Any, kernel: Any) -> Any:
    """Run a program with the run options wired into its kernels (FILE.py, MODULE:CALLABLE)."""
    from .cli_run import run

    return run(args, kernel)


def _run_arguments(parser: Any) -> None:
    from .cli_run import arguments

    arguments(parser)


def _chat(args: Any, kernel: Any) -> Any:
    """Talk to a model in the terminal: streamed answers, tools, the reports on exit."""
    from .cli_chat import run

    return run(args, kernel)


def _chat_arguments(parser: Any) -> None:
    from .cli_chat import arguments

    arguments(parser)


@hookimpl
def register_run_options(register: Callable[..., None]) -> None:
    register("chat", _options("chat_arguments"), _options("start_chat"))
    register("progress", _options("progress_arguments"), _options("start_progress"))
    register("trace", _options("trace_arguments"), _options("start_trace"))
    register("usage", _options("usage_arguments"), _options("start_usage"))


def _options(name: str) -> Callable[[Any], Any]:
    """``run_options.<name>``, loaded when a command uses it, not by every kernel."""

    def call(given: Any) -> Any:
        from . import run_options

        return getattr(run_options, name)(given)

    return call
