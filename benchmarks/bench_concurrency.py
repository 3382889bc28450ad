"""Model calls at high concurrency against a loopback server (another process, a raw asyncio
protocol) that answers after 50 ms, each figure beside a bare aiohttp session with the same
connection limit, measured in the same run:

- 1,000 and 3,000 concurrent calls: wall time, CPU of the client process per call, the share
  of the run spent in cyclic GC, GC-tracked objects per call in flight, and cyclic garbage
  left per completed call; from three pairs of fresh processes, the sides taking turns (the
  median pair is reported);
- 1,000 concurrent ``ReActAgent`` replies (wall time);
- 100,000 ``ModelAgent``s replying once each (one model call), 1,024 connections: wall time,
  client CPU and peak RSS (``AOPKIT_BENCH_AGENTS`` sets another number).

Each side runs in a fresh process of its own, so that peak RSS and the collector's state are its
own."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _util import report

DELAY = 0.05
HOLD = 10.0  # seconds the server holds the calls whose objects are counted
AGENTS = int(os.environ.get("AOPKIT_BENCH_AGENTS", "100000"))
PAIRS = 3  # fresh processes per side for the 1,000 and 3,000 calls (see ``alternating``)
PROMPT = {"role": "user", "content": "hi"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def pending(port: int) -> int:
    """How many requests the server holds now."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /pending HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await reader.readuntil(b"\r\n\r\n")
    length = int(answer.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    count = int(await reader.readexactly(length))
    writer.close()
    await writer.wait_closed()
    return count


class GCTimer:
    """CPU seconds spent in cyclic garbage collection (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds, self._start = 0.0, 0.0
        gc.callbacks.append(self._on)

    def _on(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.seconds += time.process_time() - self._start


async def measure(
    call: Callable[[str], Awaitable[Any]], base: str, port: int, n: int
) -> dict[str, float]:
    """Time ``n`` concurrent calls (best of 3), then count what they leave and hold."""
    await call(base)  # connect once, as the others do
    timer = GCTimer()
    best: dict[str, float] = {}
    for _ in range(3):
        gc_before = timer.seconds
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(call(base) for _ in range(n)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if not best or wall < best["wall"]:
            best = {"wall": wall, "cpu": cpu, "gc": timer.seconds - gc_before}
    gc.collect()
    gc.disable()
    await asyncio.gather(*(call(base) for _ in range(n)))
    best["garbage"] = gc.collect() / n  # objects only the cyclic collector could free
    gc.enable()
    gc.collect()
    idle = len(gc.get_objects())
    calls = [asyncio.ensure_future(call(f"{base}/wait/{HOLD}")) for _ in range(n)]
    while await pending(port) < n:
        await asyncio.sleep(0.05)
    gc.collect()
    best["objects"] = (len(gc.get_objects()) - idle) / n
    await asyncio.gather(*calls)
    return best


async def bare(base: str, port: int, n: int, connections: int, agents: bool) -> dict[str, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0)
    # aiohttp's default total timeout (5 min) counts the wait for a free connection, which a
    # crowd of 100,000 calls on 1,024 connections outlasts: none, as the kernel's session.
    timeout = aiohttp.ClientTimeout(total=None) if agents else aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(url: str) -> Any:
            async with session.post(f"{url}/v1/messages", json={"messages": [PROMPT]}) as r:
                return await r.json()

        if agents:
            return await crowd(lambda: one(base), n)
        return await measure(one, base, port, n)


async def through_aopkit(
    base: str, port: int, n: int, connections: int, kind: str
) -> dict[str, float]:
    import aopkit

    async with aopkit.Kernel(environ={}, connections=connections) as kernel:
        model = kernel.model("anthropic:bench", base_url=base, api_key="bench")
        question = aopkit.Msg("user", "hi", "user")
        if kind == "agents":
            crowd_ = [aopkit.ModelAgent(f"a{i}", model) for i in range(n)]
            await model([question])
            replies = iter(crowd_)
            return await crowd(lambda: next(replies)(question), n)
        if kind == "react":
            await asyncio.gather(*(model([question]) for _ in range(n)))  # open n connections
            agents = [aopkit.ReActAgent(f"a{i}", model) for i in range(n)]
            walls = []
            for _ in range(3):
                start = time.perf_counter()
                await asyncio.gather(*(a(question) for a in agents))
                walls.append(time.perf_counter() - start)
            return {"wall": min(walls)}
        models: dict[str, Any] = {}

        def call(url: str) -> Any:
            if url not in models:
                models[url] = kernel.model("anthropic:bench", base_url=url, api_key="bench")
            return models[url]([question])

        return await measure(call, base, port, n)


async def crowd(reply: Callable[[], Awaitable[Any]], n: int) -> dict[str, float]:
    """``n`` replies at once, as one round of a simulation gathers them."""
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(reply() for _ in range(n)))
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def worker(kind: str, port: int, n: int, connections: int) -> None:
    base = f"http://127.0.0.1:{port}"
    if kind in ("bare", "bare-agents"):
        result = asyncio.run(bare(base, port, n, connections, kind == "bare-agents"))
    else:
        result = asyncio.run(through_aopkit(base, port, n, connections, kind))
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run(kind: str, port: int, n: int, connections: int) -> dict[str, float]:
    args = [sys.executable, __file__, "--worker", kind, str(port), str(n), str(connections)]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.splitlines()[-1]))


def alternating(port: int, n: int, times: int = PAIRS) -> tuple[dict[str, float], ...]:
    """(bare, aopkit) from ``times`` pairs of fresh processes, the two sides taking turns, so
    that a machine that speeds up or slows down during the run hits both alike: the pair
    whose CPU ratio is the median (one pair, or the best of each side, can mislead on a
    shared machine). Every pair's ratio is printed."""
    pairs = [(run("bare", port, n, n), run("calls", port, n, n)) for _ in range(times)]
    pairs.sort(key=lambda pair: pair[1]["cpu"] / pair[0]["cpu"])
    print(
        f"{n:,} concurrent model calls, client CPU ratio of each pair of processes: "
        + ", ".join(f"{ours['cpu'] / floor['cpu']:.2f}x" for floor, ours in pairs),
        flush=True,
    )
    return pairs[len(pairs) // 2]


def concurrent(port: int, n: int) -> None:
    floor, ours = alternating(port, n)
    name = f"{n:,} concurrent model calls"
    report(
        f"{name}, wall time ÷ 50 ms",
        ours["wall"] / DELAY,
        "x",
        floor=floor["wall"] / DELAY,
        floor_name="bare aiohttp session",
        target="within 1.2x of the bare session",
    )
    report(
        f"{name}, client CPU per call",
        ours["cpu"] / n * 1e6,
        "µs",
        floor=floor["cpu"] / n * 1e6,
        floor_name="bare aiohttp session",
        target="within 1.1x of the bare session",
    )
    print(
        f"{name}, share of the client's CPU in cyclic GC: {ours['gc'] / ours['cpu']:.1%}"
        f"  | bare aiohttp session: {floor['gc'] / floor['cpu']:.1%}",
        flush=True,
    )
    print(
        f"{name}, GC-tracked objects per call in flight: {ours['objects']:.1f}"
        f"  | bare aiohttp session: {floor['objects']:.1f}  | target at most 5 more",
        flush=True,
    )
    print(
        f"{name}, cyclic garbage per completed call: {ours['garbage']:.1f} objects"
        f"  | bare aiohttp session: {floor['garbage']:.1f}",
        flush=True,
    )


def load() -> str:
    """The machine's load average now (1, 5, 15 minutes): on a shared machine, the figures
    mean little without it."""
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    print(f"load average at the start: {load()} ({os.cpu_count()} CPUs)", flush=True)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("loopback_server.py")), str(port), str(DELAY)]
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        for n in (1_000, 3_000):
            concurrent(port, n)
        floor = run("bare", port, 1_000, 1_024)
        react = run("react", port, 1_000, 1_024)
        report(
            "1,000 concurrent ReAct replies, wall time ÷ 50 ms",
            react["wall"] / DELAY,
            "x",
            floor=floor["wall"] / DELAY,
            floor_name="bare aiohttp session",
            target="within 1.3x of the bare session",
        )
        floor, ours = run("bare-agents", port, AGENTS, 1_024), run("agents", port, AGENTS, 1_024)
    finally:
        server.terminate()
        server.wait()
    name = f"{AGENTS:,} ModelAgents replying once each (1,024 connections)"
    report(
        f"{name}, wall time",
        ours["wall"],
        "s",
        floor=floor["wall"],
        floor_name="bare aiohttp loop, same requests",
        target="within 1.2x of the bare loop",
    )
    report(
        f"{name}, client CPU per call",
        ours["cpu"] / AGENTS * 1e6,
        "µs",
        floor=floor["cpu"] / AGENTS * 1e6,
        floor_name="bare aiohttp loop",
    )
    report(
        f"{name}, peak RSS",
        ours["rss_mb"],
        "MB",
        floor=floor["rss_mb"],
        floor_name="bare aiohttp loop",
    )
    print(f"load average at the end: {load()}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
