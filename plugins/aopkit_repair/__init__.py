"""First-party correctors for fault tier 2: ``fences``, ``json-repair`` and ``coerce``.

They fix malformed model output without a second model call, and say so when they cannot:
never an empty object, never an invented value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aopkit

from .correctors import Coerce, Fences, JsonRepair

__all__ = ["Coerce", "Fences", "JsonRepair"]


@aopkit.hookimpl
def register_correctors(register: Callable[[str, Any], None]) -> None:
    register("fences", Fences())
    register("json-repair", JsonRepair())
    register("coerce", Coerce())
