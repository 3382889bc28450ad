"""aopkit on Ray: the same agents in actors across processes and machines.

``remote = aopkit_ray.to_dist(agent)`` runs ``agent`` in a Ray actor and returns a proxy that is
an :class:`aopkit.Agent`; :class:`AgentPool` puts many light agents in one actor.
"""

from __future__ import annotations

from ._host import KernelSpec, RemoteAgentError
from ._proxy import AgentPool, RemoteAgent, pools, to_dist

__all__ = ["AgentPool", "KernelSpec", "RemoteAgent", "RemoteAgentError", "pools", "to_dist"]
