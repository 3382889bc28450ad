"""``replay:<provider>:<model>``: record any model's answers to a cassette file and replay them
offline (tests, demos, fault-injection runs): no key, no network, no wrapped plugin needed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aopkit

from .cassette import VERSION, CassetteError, CassetteMiss, fingerprint
from .model import ReplayModel, replay_model

__all__ = ["VERSION", "CassetteError", "CassetteMiss", "ReplayModel", "fingerprint", "replay_model"]


@aopkit.hookimpl
def register_models(register: Callable[[str, Any], None]) -> None:
    register("replay", replay_model)


@aopkit.hookimpl
def register_run_options(register: Callable[..., None]) -> None:
    register("cassette", _arguments, _start)


def _arguments(parser: Any) -> None:  # the run module loads when a command uses it
    from . import run

    run.arguments(parser)


def _start(args: Any) -> Any:
    from . import run

    return run.start(args)
