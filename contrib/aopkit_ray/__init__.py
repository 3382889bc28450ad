"""aopkit on Ray: the same agents in actors across processes and machines.

``remote = aopkit_ray.to_dist(agent)`` runs ``agent`` in a Ray actor and returns a proxy that is
an :class:`aopkit.Agent`; :class:`AgentPool` puts many light agents in one actor.

This module is also the plugin (entry point ``ray``) that registers the runtime ``"ray"``
(``aopkit.pools(..., runtime="ray")``, ``agent.to_dist()``); it imports Ray only when a pool
is made, so every kernel loads it for free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aopkit import AopkitError, hookimpl

if TYPE_CHECKING:
    from ._host import KernelSpec, RemoteAgentError
    from ._proxy import AgentPool, RemoteAgent, pools, to_dist

__all__ = ["AgentPool", "KernelSpec", "RemoteAgent", "RemoteAgentError", "pools", "to_dist"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'aopkit_ray' has no attribute {name!r}")
    from . import _host, _proxy

    return getattr(_proxy, name, None) or getattr(_host, name)


class RayRuntime:
    """The runtime ``"ray"``: one actor per pool."""

    @staticmethod
    def pools(agents: Sequence[Any], size: int, **options: Any) -> list[Any]:
        return _proxy_module().pools(agents, size, **options)  # type: ignore[no-any-return]

    @staticmethod
    def to_dist(agent: Any, **options: Any) -> Any:
        return _proxy_module().to_dist(agent, **options)


def _proxy_module() -> Any:
    try:
        from . import _proxy
    except ImportError as exc:
        raise AopkitError(
            f"the runtime 'ray' needs Ray: pip install 'aopkit[ray]' ({exc})"
        ) from None
    return _proxy


@hookimpl
def register_runtimes(register: Callable[[str, Any], None]) -> None:
    register("ray", RayRuntime())
