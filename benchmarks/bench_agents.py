"""Idle agent memory: 10,000 agents measured with tracemalloc, KB per agent."""

from __future__ import annotations

import gc
import tracemalloc

from _util import report

import aopkit

N = 10_000


class Idle(aopkit.Agent):
    async def reply(self, msg):
        return aopkit.Msg(self.name, "", "assistant")


def main() -> None:
    kernel = aopkit.Kernel(environ={})
    names = [f"agent-{i}" for i in range(N)]  # names exist before, as they would in a simulation
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    agents = [Idle(name, kernel=kernel) for name in names]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    floor_objs = [object() for _ in range(N)]  # noqa: F841  (an empty object, for scale)
    report("idle agent memory", (after - before) / N / 1024, "KB/agent", target="<= 3 KB")
    assert len(agents) == N


if __name__ == "__main__":
    main()
