"""``aopkit run FILE.py | MODULE | MODULE:CALLABLE [args...]``: run a program with the run
options (``--chat``, ``--trace``, ``--studio``, ``--record``/``--replay``, ``--usage``) wired
into every kernel it uses, so the program itself carries none of that wiring."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import os
import runpy
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .cli import UsageError, causes


def arguments(parser: Any) -> None:
    parser.add_argument(
        "target",
        metavar="FILE.py | MODULE | MODULE:CALLABLE",
        help="a script (run as __main__), a module (as python -m), or a callable to call "
        "(sync or async)",
    )
    parser.add_argument("args", nargs="...", help="the program's own arguments (its sys.argv[1:])")


def run(args: Any, kernel: Any) -> int:
    """Run a program with its agents' chat view, trace, Studio, cassettes or usage switched on."""
    program = load(args.target)
    with _argv([args.target, *args.args]):
        try:
            result = program()
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
        except SystemExit as exc:
            return _exit_status(exc.code)
        except Exception as exc:
            if any(isinstance(cause, BrokenPipeError) for cause in causes(exc)):
                raise  # the CLI ends it quietly
            # The program's own failure: its traceback, as ``python FILE.py`` would show it.
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
            return 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def load(target: str) -> Callable[[], Any]:
    """What running ``target`` means, checked before anything runs: a :class:`UsageError` if
    the file, module or callable is not there."""
    module, sep, name = target.partition(":")
    if target.endswith(".py") or os.sep in target or (os.altsep and os.altsep in target):
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"aopkit run: no such file: {target}")
        return lambda: _run_path(path)
    if not module or (sep and not name):
        raise UsageError(f"aopkit run: expected FILE.py, MODULE or MODULE:CALLABLE, got {target!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as ``python -m`` does: modules of the current folder
    if not sep:
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise UsageError(f"aopkit run: no module named {module!r}")
        return lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)
    try:
        obj: Any = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            raise UsageError(f"aopkit run: no module named {module!r}") from None
        raise
    for part in name.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"aopkit run: {module!r} has no attribute {name!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"aopkit run: {target} is a {type(obj).__name__}, not a callable")
    return obj  # type: ignore[no-any-return]


def _run_path(path: Path) -> None:
    sys.path.insert(0, str(path.resolve().parent))  # as ``python FILE.py`` does
    runpy.run_path(str(path), run_name="__main__")


@contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _exit_status(code: object) -> int:
    """``sys.exit(code)`` as Python reports it: None is 0, a number itself, anything else is
    printed and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
