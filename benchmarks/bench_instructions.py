"""Instructions, not seconds: the hot paths counted with valgrind's callgrind.

On a shared or virtual machine, timed pairs of runs differ by more than a change worth making
(docs/benchmarks.md, 2026-12-01: the same tree measured 266 to 546 µs of collector time a
reply from one run to the next). The instructions a process executes do not depend on the
machine's load. Each workload runs in a child process under callgrind twice, with ``SMALL``
and ``SMALL + COUNT`` repetitions, so the startup (interpreter, imports, kernel) cancels out;
each figure is printed beside a floor counted the same way. The children run with a fixed hash
seed, and read bytecode compiled once, before the counts, into a cache of the benchmark's own
(``PYTHONPYCACHEPREFIX``): the counts repeat from run to run, and another process writing
bytecode beside the sources (a test run) cannot change one count of a pair. Skipped where
valgrind is not installed. Slow: about a minute per child process, sixteen of them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _util import report

HERE = Path(__file__).parent
SMALL, COUNT = 1, 2_000

# Each workload is run as ``python -c CODE N``: N repetitions of the work counted.
AGENT_REPLY = """
import asyncio, sys, aopkit
class Echo(aopkit.Agent):
    async def reply(self, msg):
        return aopkit.Msg(self.name, msg.text, "assistant")
async def main(n):
    agent, msg = Echo("e", kernel=aopkit.Kernel(environ={})), aopkit.Msg("u", "hi", "user")
    for _ in range(n):
        await agent(msg)
        agent.memory.clear()
asyncio.run(main(int(sys.argv[1])))
"""

AGENT_REPLY_FLOOR = """
import asyncio, sys, aopkit
async def reply(msg):
    return aopkit.Msg("e", msg.text, "assistant")
async def main(n):
    aopkit.Kernel(environ={})
    msg = aopkit.Msg("u", "hi", "user")
    for _ in range(n):
        await reply(msg)
asyncio.run(main(int(sys.argv[1])))
"""

REACT_REPLY = """
import asyncio, sys, bench_react
bench_react.N = int(sys.argv[1])
asyncio.run(bench_react.replies())
"""

REACT_REPLY_FLOOR = """
import asyncio, sys, aopkit, bench_react
aopkit.Kernel(environ={})
bench_react.N = int(sys.argv[1])
asyncio.run(bench_react.by_hand())
"""

POOL_ROUND = """
import asyncio, gc, sys, aopkit
from bench_simulation import Guesser, average
AGENTS = 20_000
async def main(rounds):
    kernel = aopkit.Kernel(environ={})
    agents = [Guesser(f"g{i}", i % 4, kernel) for i in range(AGENTS)]
    gc.collect(); gc.freeze()
    play = aopkit.Rounds(aopkit.pools(agents, AGENTS), run="count", kernel=kernel).play
    avg = 50.0
    for _ in range(rounds):
        q = aopkit.Msg("host", "guess", "user", metadata={"average": avg})
        avg = (await play(q, aggregate=average)).aggregates["average"]
asyncio.run(main(int(sys.argv[1])))
"""

POOL_ROUND_FLOOR = """
import sys, aopkit
from bench_simulation import Plain, floor_round
plain = [Plain(i % 4) for i in range(20_000)]
aopkit.Kernel(environ={})
avg = 50.0
for _ in range(int(sys.argv[1])):
    avg = floor_round(plain, avg)
"""

CODEC_ROUND_TRIP = """
import sys, aopkit, bench_codec
codec = aopkit.Kernel(environ={}).codec
for _ in range(int(sys.argv[1])):
    codec.loads(codec.dumps(bench_codec.MSG))
"""

CODEC_ROUND_TRIP_FLOOR = """
import json, sys, aopkit, bench_codec
data = aopkit.Kernel(environ={}).codec.dump(bench_codec.MSG)
for _ in range(int(sys.argv[1])):
    json.loads(json.dumps(data))
"""

ROUNDS = 3  # the pool round's repetitions (each is 20,000 agents), against SMALL


def instructions(code: str, repetitions: int, env: dict[str, str]) -> int:
    """What callgrind counts for ``python -c code repetitions``."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            code,
            str(repetitions),
        ],
        capture_output=True,
        text=True,
        cwd=HERE,
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_repetition(code: str, count: int, env: dict[str, str]) -> float:
    """Instructions per repetition of ``code``'s work, its startup subtracted."""
    return (instructions(code, SMALL + count, env) - instructions(code, SMALL, env)) / count


def compiled(codes: list[str], env: dict[str, str]) -> None:
    """Run each of ``codes`` once, outside callgrind, writing the bytecode of all it imports
    into ``env``'s cache."""
    for code in codes:
        run = [sys.executable, "-c", code, str(SMALL)]
        writing = {**env, "PYTHONDONTWRITEBYTECODE": ""}  # empty: bytecode is written
        subprocess.run(run, cwd=HERE, env=writing, check=True, capture_output=True)


# (what is counted, its workload, the floor's, the floor's name, repetitions, per how many)
FIGURES = (
    (
        "agent reply (await agent(msg)), instructions per reply",
        (AGENT_REPLY, AGENT_REPLY_FLOOR, "a coroutine making the same Msg", COUNT, 1),
    ),
    (
        "ReAct reply (one tool call, then the answer), instructions per reply",
        (REACT_REPLY, REACT_REPLY_FLOOR, "the same messages and tool call by hand", COUNT, 1),
    ),
    (
        "Msg JSON round trip (5 blocks, strict), instructions per round trip",
        (
            CODEC_ROUND_TRIP,
            CODEC_ROUND_TRIP_FLOOR,
            "json.dumps + json.loads of the same dict",
            COUNT,
            1,
        ),
    ),
    (
        "pool round of the guess-2/3 game, 20,000 agents, instructions per agent",
        (POOL_ROUND, POOL_ROUND_FLOOR, "plain loop over plain objects", ROUNDS - SMALL, 20_000),
    ),
)


def main() -> None:
    if shutil.which("valgrind") is None:
        print("instruction counts: skipped (valgrind is not installed)")
        return
    with tempfile.TemporaryDirectory() as cache:
        env = {
            **os.environ,
            "PYTHONPATH": str(HERE),
            "PYTHONHASHSEED": "0",
            "PYTHONPYCACHEPREFIX": cache,
        }
        compiled([each for _, (code, floor, *_) in FIGURES for each in (code, floor)], env)
        for name, (code, floor_code, floor_name, count, per) in FIGURES:
            figure, unit = name.rsplit(", ", 1)
            report(
                figure,
                per_repetition(code, count, env) / per,
                unit,
                floor=per_repetition(floor_code, count, env) / per,
                floor_name=floor_name,
            )


if __name__ == "__main__":
    main()
