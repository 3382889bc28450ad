"""The kernel's own plugin: registers the standard block types through the same hook as any
plugin. It is always loaded and cannot be blocked."""

from __future__ import annotations

from collections.abc import Callable

from .blocks import STANDARD_BLOCKS
from .hookspecs import hookimpl


@hookimpl
def register_block_types(register: Callable[[type], None]) -> None:
    for cls in STANDARD_BLOCKS:
        register(cls)
