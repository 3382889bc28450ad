"""The Studio's cost to the agents: messages per second of agents offering 1,000 messages/s
(each on a fixed schedule, as if answers arrived at a steady rate),
with a Studio streaming to two connected browsers vs without a Studio (the floor), in one run.
Browsers are headless Chromium when Playwright and Chromium are installed, else two WebSocket
clients in another process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from _util import report

import aopkit

AGENTS = 20
PERIOD = AGENTS / 1000  # each agent replies once per period: 1,000 messages/s in all
SECONDS = 5.0
CHROMIUM = os.environ.get("AOPKIT_CHROMIUM", "/usr/bin/chromium")
CLIENT = """
import asyncio, sys, aiohttp
async def main(url, token):
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer " + token}) as http:
        async with http.ws_connect(url) as ws:
            async for _ in ws:
                pass
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class Echo(aopkit.Agent):
    async def reply(self, msg):
        return aopkit.Msg(self.name, "ok", "assistant")


async def throughput(kernel: aopkit.Kernel) -> float:
    sent = 0
    start = time.perf_counter()
    deadline = start + SECONDS

    async def run(agent: Echo, due: float) -> None:
        nonlocal sent
        while due < deadline:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await agent()
            agent.memory.clear()
            sent += 1
            due += PERIOD

    await asyncio.gather(
        *(run(Echo(f"a{i}", kernel=kernel), start + i * PERIOD / AGENTS) for i in range(AGENTS))
    )
    return sent / SECONDS


async def with_studio() -> tuple[float, str]:
    from aopkit_studio import attach

    kernel = aopkit.Kernel(environ={})
    studio = await attach(kernel)
    try:
        from playwright.async_api import async_playwright

        if not os.path.exists(CHROMIUM):
            raise ImportError(CHROMIUM)
    except ImportError:
        return await _with_clients(kernel, studio), "2 WebSocket clients"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        pages = [await browser.new_page() for _ in range(2)]
        for page in pages:
            await page.goto(studio.url)
            await page.wait_for_selector("#status.online")
        rate = await throughput(kernel)
        await asyncio.sleep(1)
        seen = [await page.evaluate("lastSeq") for page in pages]
        await browser.close()
    await studio.stop()
    return rate, f"2 Chromium pages (saw {min(seen)} of {studio._seq} events)"


async def _with_clients(kernel: aopkit.Kernel, studio: object) -> float:
    url = f"ws://127.0.0.1:{studio.port}/ws"  # type: ignore[attr-defined]
    clients = [
        subprocess.Popen([sys.executable, "-c", CLIENT, url, studio.token])  # type: ignore[attr-defined]
        for _ in range(2)
    ]
    while len(studio._clients) < 2:  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
    rate = await throughput(kernel)
    for client in clients:
        client.terminate()
        client.wait()
    await studio.stop()  # type: ignore[attr-defined]
    return rate


def main() -> None:
    without = asyncio.run(throughput(aopkit.Kernel(environ={})))
    rate, how = asyncio.run(with_studio())
    report(
        f"agents' messages/s, Studio streaming to {how}",
        rate,
        "msg/s",
        floor=without,
        floor_name="no Studio",
        target="≥ 0.9x",
    )


if __name__ == "__main__":
    main()
