"""1,000 concurrent model calls, and 1,000 concurrent ReAct replies, against a loopback server
(another process) that answers after 50 ms: wall time ÷ 50 ms, beside the same 1,000 requests
made with a bare aiohttp session (same connection limit) in the same run."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from _util import report

import aopkit

N, DELAY = 1_000, 0.05


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bare(url: str) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024)) as session:

        async def one() -> None:
            async with session.post(url, json={"messages": []}) as response:
                await response.json()

        await one()  # connect once, as the others do
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(N)))
        return time.perf_counter() - start


async def through_aopkit(base: str, react: bool) -> float:
    async with aopkit.Kernel(environ={}) as kernel:
        model = kernel.model("anthropic:bench", base_url=base, api_key="bench")
        question = [aopkit.Msg("user", "hi", "user")]
        await model(question)
        if react:
            agents = [aopkit.ReActAgent(f"a{i}", model, kernel=kernel) for i in range(N)]
            start = time.perf_counter()
            await asyncio.gather(*(a(question[0]) for a in agents))
        else:
            start = time.perf_counter()
            await asyncio.gather(*(model(question) for _ in range(N)))
        return time.perf_counter() - start


def main() -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("loopback_server.py")), str(port), str(DELAY)]
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        floor = min(asyncio.run(bare(base + "/v1/messages")) for _ in range(3)) / DELAY
        calls = min(asyncio.run(through_aopkit(base, react=False)) for _ in range(3)) / DELAY
        replies = min(asyncio.run(through_aopkit(base, react=True)) for _ in range(3)) / DELAY
    finally:
        server.terminate()
        server.wait()
    report(
        "1,000 concurrent model calls, wall time ÷ 50 ms",
        calls,
        "x",
        floor=floor,
        floor_name="bare aiohttp session",
        target="within 1.2x of the bare session",
    )
    report(
        "1,000 concurrent ReAct replies, wall time ÷ 50 ms",
        replies,
        "x",
        floor=floor,
        floor_name="bare aiohttp session",
        target="within 1.3x of the bare session",
    )


if __name__ == "__main__":
    main()
