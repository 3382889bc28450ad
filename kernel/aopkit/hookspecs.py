"""The hook specifications: every way a plugin can extend aopkit.

Registration hooks receive a ``register`` callback; a plugin calls it once per thing it
contributes. The kernel calls each plugin's registration hooks when the plugin is registered, so
what a plugin contributes is always attributed to it, and a plugin that fails is dropped whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .events import Event
    from .kernel import Kernel

hookspec = pluggy.HookspecMarker("aopkit")
hookimpl = pluggy.HookimplMarker("aopkit")


@hookspec
def register_block_types(register: Callable[[type], None]) -> None:
    """Register content block classes: ``register(cls)``; ``cls.type`` is the JSON tag."""


@hookspec
def register_models(register: Callable[[str, Any], None]) -> None:
    """Register model providers: ``register(prefix, factory)``; ``prefix:model`` resolves to it."""


@hookspec
def register_formatters(register: Callable[[str, Any], None]) -> None:
    """Register formatters that turn messages into a provider's payload: ``register(name, fmt)``."""


@hookspec
def register_correctors(register: Callable[[str, Any], None]) -> None:
    """Register error correctors (fault tier 2, no model call): ``register(name, corrector)``."""


@hookspec
def register_critics(register: Callable[[str, Any], None]) -> None:
    """Register critique strategies (fault tier 3): ``register(name, critic)``."""


@hookspec
def register_compactors(register: Callable[[str, Any], None]) -> None:
    """Register history compaction strategies: ``register(name, compactor)``."""


@hookspec
def register_tools(register: Callable[[str, Any], None]) -> None:
    """Register tools agents can call: ``register(name, tool)``."""


@hookspec
def register_commands(register: Callable[..., None]) -> None:
    """Register ``aopkit`` CLI subcommands: ``register(name, run, help=..., arguments=...)``."""


@hookspec
def register_runtimes(register: Callable[[str, Any], None]) -> None:
    """Register where pools of agents run: ``register(name, runtime)``; ``runtime.pools(agents,
    size, **options)`` makes the pools, ``runtime.to_dist(agent, **options)`` (optional) one
    agent's remote proxy. ``aopkit.pools(..., runtime=name)`` and ``agent.to_dist()`` use it."""


@hookspec
def register_prices(register: Callable[[str, Any], None]) -> None:
    """Register what models cost: ``register("provider:model", Price(input=..., output=...))``."""


@hookspec
def register_run_options(register: Callable[..., None]) -> None:
    """Add flags to ``aopkit run`` (and ``chat``, ``demo``) that wire every kernel of the run:
    ``register(name, arguments, start)``; see :class:`aopkit.kernel.RunOption`."""


@hookspec
def event(event: Event, kernel: Kernel) -> None:
    """Observe every event of ``kernel``, in order; keep it fast, buffer any I/O."""


@hookspec(firstresult=True)
def escalate(incident: Any, kernel: Kernel) -> Any:
    """Hand an unresolvable fault to a human; return a resolution (or an awaitable of one)."""
