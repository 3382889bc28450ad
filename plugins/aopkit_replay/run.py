"""``aopkit run --record CASSETTE`` / ``--replay CASSETTE``: every model a program's kernels
make (``kernel.model(name)``, ``ModelAgent(..., "provider:model")``) records to, or answers
from, one cassette, with no change to the program."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

import aopkit
from aopkit.cli import UsageError

from .cassette import Cassette, CassetteError, Mode, read_cassette_file, share_cassette
from .model import ReplayModel, replay_model


def arguments(parser: Any) -> None:
    parser.add_argument(
        "--record", metavar="CASSETTE", help="record every model call of the run to CASSETTE"
    )
    parser.add_argument(
        "--replay",
        metavar="CASSETTE",
        help="answer every model call from CASSETTE: offline, no key, no network",
    )


def start(args: Any) -> Cassettes | None:
    if args.record and args.replay:
        raise UsageError("--record and --replay: give one of the two")
    if args.replay and not Path(args.replay).is_file():
        raise UsageError(f"--replay {args.replay}: no such cassette")
    if args.replay:  # a file that is no cassette is the user's to fix, before the program runs
        try:
            read_cassette_file(Path(args.replay).resolve(), "replay")
        except CassetteError as exc:
            raise UsageError(f"--replay {args.replay}: {exc}") from None
    # resolved now: a path given on the command line is relative to where it was typed, even
    # if the program changes its working folder before it makes a kernel
    if args.record:
        return Cassettes(str(Path(args.record).resolve()), "record")
    return Cassettes(str(Path(args.replay).resolve()), "replay") if args.replay else None


@attrs.define
class Cassettes:
    """Puts a replay model under each kernel's models. The run's kernels share one cassette
    (one file, one position per request), scrubbed of every one of their secrets."""

    path: str
    mode: Mode
    kernels: list[aopkit.Kernel] = attrs.Factory(list)
    cassette: Cassette | None = None

    def attach(self, kernel: aopkit.Kernel) -> None:
        self.kernels.append(kernel)
        if self.cassette is None:
            self.cassette = Cassette(
                Path(self.path).resolve(), self.mode, kernel.codec, self.redact
            )
        share_cassette(kernel, self.cassette)
        kernel.model_wrappers.append(functools.partial(self.wrap, kernel))

    def redact(self, text: str) -> str:
        for kernel in self.kernels:
            text = kernel.secrets.redact(text)
        return text

    def wrap(self, kernel: aopkit.Kernel, name: str, build: Callable[[], Any]) -> Any:
        if name.partition(":")[0] == "replay":  # the program's own cassette: leave it be
            return build()
        if self.mode == "replay":  # the real model is never built: no key needed
            return replay_model(name, kernel=kernel, cassette=self.path, mode="replay")
        return ReplayModel.wrap(build(), cassette=self.path, mode=self.mode)

    def finish(self) -> None:
        """Every take is written as it is recorded: nothing is left to do."""
