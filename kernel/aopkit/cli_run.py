"""``aopkit run FILE.py | MODULE | MODULE:CALLABLE [args...]``: run a program with the run
options (``--chat``, ``--trace``, ``--studio``, ``--record``/``--replay``, ``--usage``) wired
into every kernel it uses, so the program itself carries none of that wiring."""

from __future__ import annotations

import importlib
import importlib.util
import os
import runpy
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from .cli import UsageError, causes, completed

PROG = "aopkit run"


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
            result = completed(program())
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
    if ":" in target:  # MODULE:CALLABLE, or FILE.py:CALLABLE
        obj = load_object(target, PROG, "FILE.py, MODULE or MODULE:CALLABLE")
        if not callable(obj):
            raise UsageError(f"{PROG}: {target} is a {type(obj).__name__}, not a callable")
        return obj  # type: ignore[no-any-return]
    if _is_path(target):
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"{PROG}: no such file: {target}")
        return lambda: _run_path(path)
    _search_current_folder()
    try:
        found = importlib.util.find_spec(target)  # imports the parent packages
    except ModuleNotFoundError as exc:
        if not _is_missing(exc, target):
            raise  # a parent package is there but fails on an import of its own
        found = None
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise UsageError(f"{PROG}: no module named {target!r}")
    return lambda: runpy.run_module(target, run_name="__main__", alter_sys=True)


def load_object(target: str, prog: str, expected: str = "MODULE:OBJECT") -> Any:
    """The object ``MODULE:NAME`` (or ``FILE.py:NAME``; NAME may be dotted) names; a
    :class:`UsageError` (said by ``prog``) if it is not there."""
    module, sep, name = target.rpartition(":")
    if not sep or not module or not name:
        raise UsageError(f"{prog}: expected {expected}, got {target!r}")
    obj: Any = import_module(module, prog)
    for part in name.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{prog}: {module!r} has no attribute {name!r}")
        obj = getattr(obj, part)
    return obj


def import_module(name: str, prog: str) -> ModuleType:
    """The module ``name``, found as ``python -m`` finds it (the current folder first), or a
    ``FILE.py`` loaded from its path. A :class:`UsageError` (said by ``prog``) if it is not
    there; an error raised by the module's own code is left as it is."""
    if _is_path(name):
        path = Path(name)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None or not path.is_file():
            raise UsageError(f"{prog}: no such file: {name}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    _search_current_folder()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if _is_missing(exc, name):
            raise UsageError(f"{prog}: no module named {name!r}") from None
        raise


def _is_missing(exc: ModuleNotFoundError, name: str) -> bool:
    """Is ``exc`` about ``name`` (or a package of its path) itself, not about something its
    code imports?"""
    return exc.name is not None and (name == exc.name or name.startswith(exc.name + "."))


def _is_path(target: str) -> bool:
    return target.endswith(".py") or os.sep in target or bool(os.altsep and os.altsep in target)


def _search_current_folder() -> None:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as ``python -m`` does


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


def _exit_status(code: object) -> int:
    """``sys.exit(code)`` as Python reports it: None is 0, a number itself, anything else is
    printed and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
