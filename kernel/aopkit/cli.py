"""The ``aopkit`` command line. Plugins add subcommands through the ``register_commands`` hook
and flags of ``aopkit run`` through ``register_run_options``.

Exit status: 0 done; 1 the work failed; 2 wrong usage (a bad flag, an unknown provider, a
missing key or file); 130 interrupted (Ctrl-C); 141 the output pipe was closed (``| head``).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from typing import IO, TYPE_CHECKING, Any, NoReturn

from .errors import AopkitError, LookupFailed
from .kernel import Kernel, RunPart, each_kernel

if TYPE_CHECKING:
    from loguru import Message

INTERRUPTED = 130
PIPE_CLOSED = 141


class UsageError(AopkitError):
    """The command was used wrongly (a bad flag, a missing file): one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Bad flags are a :class:`UsageError` (one line), not argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def usage_report(kernel: Kernel) -> str:
    """What a command prints on exit about the kernel's work: its faults and its usage."""
    return f"{kernel.faults.render()}\n{kernel.usage.render()}"


def console_sink(stream: IO[str]) -> Callable[[Message], None]:
    """A loguru sink writing to ``stream`` that goes quiet once the reader closes the pipe
    (``aopkit demo | head``): the rest of the output is dropped, not a traceback per line."""

    def write(message: Message) -> None:
        try:
            stream.write(message)
            stream.flush()
        except BrokenPipeError:
            discard(stream)

    return write


def discard(stream: IO[str]) -> None:
    """Point ``stream``'s descriptor at /dev/null: the closed pipe is never written again, not
    even by the interpreter's last flush."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no descriptor (a test's StringIO): nothing to protect
        pass


def _plugins(args: Any, kernel: Kernel) -> int:
    """List loaded plugins as JSON: name, version, hooks, and what each registered."""
    json.dump(kernel.plugins(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def build_parser(kernel: Kernel) -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="aopkit", description="aopkit: agents that pass messages")
    parser.add_argument("--version", action="version", version=f"aopkit {__version__}")
    parser.add_argument(
        "--fault-report",
        action="store_true",
        help="print the fault report (every fault and the tier that resolved it) at the end",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub = subparsers.add_parser("plugins", help=_plugins.__doc__)
    sub.set_defaults(run=_plugins, run_options=False)
    for name, command in kernel.commands.objects.items():
        if name == "plugins":
            continue
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        if command.run_options:
            group = sub.add_argument_group("run options (from plugins)")
            for option in kernel.run_options.objects.values():
                option.arguments(group)
        if command.arguments is not None:
            command.arguments(sub)
        sub.set_defaults(run=command.run, run_options=command.run_options)
    return parser


@contextmanager
def run_options(args: Any, kernel: Kernel, *kernels: Kernel) -> Iterator[list[RunPart]]:
    """Start the run options given in ``args`` (from ``kernel``'s plugins) and wire ``kernels``
    and every kernel created inside the block; at its end finish each of them (even when
    another's finish fails), last started first. A kernel is wired once, even when it is
    both given and the default one."""
    with ExitStack() as stack:
        parts: list[RunPart] = []
        for option in kernel.run_options.objects.values():
            part = option.start(args)
            if part is not None:
                parts.append(part)
                stack.callback(part.finish)
        wired: list[Kernel] = []

        def attach(created: Kernel) -> None:
            if any(created is known for known in wired):
                return
            wired.append(created)
            for part in parts:
                part.attach(created)

        stack.enter_context(each_kernel(attach))
        for given in kernels:
            attach(given)
        yield parts


def main(argv: Sequence[str] | None = None, kernel: Kernel | None = None) -> int:
    try:
        return _main(argv, kernel)
    except BrokenPipeError:
        discard(sys.stdout)
        return PIPE_CLOSED


def _main(argv: Sequence[str] | None, kernel: Kernel | None) -> int:
    kernel = kernel or Kernel()
    parser = build_parser(kernel)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return _fail(kernel, exc, 2)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    prog = f"aopkit {args.command}"
    try:
        try:
            # ``run`` wires the program's kernels only; other commands work in this one
            given = () if args.command == "run" else (kernel,)
            with run_options(args, kernel, *given) if args.run_options else nullcontext():
                code = _finish(args.run(args, kernel))
        finally:
            if args.fault_report:
                print(kernel.faults.render(), file=_open_stdout())
        _open_stdout().flush()
        return code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BaseException as exc:
        if any(isinstance(cause, BrokenPipeError) for cause in causes(exc)):
            discard(sys.stdout)
            return PIPE_CLOSED
        if wrong_usage(exc):
            return _fail(kernel, exc, 2, prog)
        if isinstance(exc, AopkitError):
            return _fail(kernel, exc, 1, prog)
        raise


def _open_stdout() -> IO[str]:
    """Standard output, or standard error if the program run closed it."""
    return sys.stderr if sys.stdout is None or sys.stdout.closed else sys.stdout


def _finish(result: Any) -> int:
    return int(completed(result) or 0)


def completed(result: Any) -> Any:
    """``result``, run to its end with ``asyncio.run`` if it is awaitable (an async command's
    or program's coroutine)."""
    if inspect.isawaitable(result):
        return asyncio.run(_awaited(result))
    return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _fail(kernel: Kernel, exc: BaseException, code: int, prog: str = "aopkit") -> int:
    text = str(exc) if isinstance(exc, UsageError) else f"{prog}: error: {exc}"
    if _refused_key(exc):
        text += " (check the provider's API key: its environment variable or the config file)"
    print(kernel.secrets.redact(text), file=sys.stderr)
    return code


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def wrong_usage(exc: BaseException) -> bool:
    """Is ``exc`` (or its cause) the user's to fix before trying again: a bad flag, an unknown
    provider, a missing key, a key the model refuses?"""
    from .secret import SecretMissing

    return _refused_key(exc) or any(
        isinstance(cause, (UsageError, LookupFailed, SecretMissing)) for cause in causes(exc)
    )


def _refused_key(exc: BaseException) -> bool:
    from .models import ModelError

    return any(
        isinstance(cause, ModelError) and cause.status in (401, 403) for cause in causes(exc)
    )


if __name__ == "__main__":
    raise SystemExit(main())
