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
    from . import run

    register("cassette", run.arguments, run.start)
