"""The cost of serving: one chat completion through ``build_app`` (an aiohttp client on
loopback, keep-alive) beside the same agent called in-process (the floor), and beside an
aiohttp handler that reads the same body and answers JSON (the HTTP floor); then 200
conversations at once, served and in-process. The agent is a ``ModelAgent`` on a ``scripted:``
model: what is measured is the path around the model, not a model."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
from _util import report
from aiohttp import web

import aopkit
from aopkit_serve import build_app

TOKEN = "bench-token"
REQUESTS = 300
CONCURRENT = 200
BODY = {"model": "helper", "messages": [{"role": "user", "content": "How are you?"}]}


def agent(kernel: aopkit.Kernel) -> aopkit.ModelAgent:
    # enough answers for every call of the run (a few thousand: taking the first is cheap)
    model = kernel.model("scripted:bench", responses=["Fine, thanks."] * 5_000)
    return aopkit.ModelAgent("helper", model, sys_prompt="A helpful assistant.")


async def started(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def in_process(helper: aopkit.Agent, count: int, conversation: int = 0) -> float:
    """Seconds per reply of a fresh conversation's agent, as the server makes one."""
    start = time.perf_counter()
    for i in range(count):
        await helper.session(f"c{conversation}-{i}", keep=False)("How are you?")
    return (time.perf_counter() - start) / count


async def served(http: aiohttp.ClientSession, url: str, count: int, header: str = "") -> float:
    start = time.perf_counter()
    for i in range(count):
        headers = {"X-Aopkit-Conversation": f"{header}{i % 20}"} if header else {}
        async with http.post(f"{url}/v1/chat/completions", json=BODY, headers=headers) as r:
            assert r.status == 200, await r.text()
            await r.read()
    return (time.perf_counter() - start) / count


async def echo(http: aiohttp.ClientSession, url: str, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        async with http.post(f"{url}/echo", json=BODY) as r:
            await r.read()
    return (time.perf_counter() - start) / count


async def at_once(http: aiohttp.ClientSession, url: str) -> float:
    async def one(n: int) -> None:
        headers = {"X-Aopkit-Conversation": f"many{n}"}
        async with http.post(f"{url}/v1/chat/completions", json=BODY, headers=headers) as r:
            assert r.status == 200, await r.text()
            await r.read()

    start = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(CONCURRENT)))
    return time.perf_counter() - start


async def at_once_in_process(helper: aopkit.Agent) -> float:
    start = time.perf_counter()
    await asyncio.gather(
        *(helper.session(f"m{n}", keep=False)("How are you?") for n in range(CONCURRENT))
    )
    return time.perf_counter() - start


async def main() -> None:
    async with aopkit.Kernel(environ={}) as kernel:
        helper = agent(kernel)

        async def answer(request: web.Request) -> web.Response:
            await request.json()
            return web.json_response({"choices": [{"message": {"content": "Fine, thanks."}}]})

        floor_app = web.Application()
        floor_app.router.add_post("/echo", answer)
        memory_app = build_app(helper, token=TOKEN, protocols=["openai"])
        folder = Path(tempfile.mkdtemp())
        sqlite_app = build_app(
            helper,
            token=TOKEN,
            store=aopkit.SQLiteStore(folder / "s.sqlite3"),
            protocols=["openai"],
        )
        runners = [await started(app) for app in (floor_app, memory_app, sqlite_app)]
        (_, floor_url), (_, memory_url), (_, sqlite_url) = runners
        connector = aiohttp.TCPConnector(limit=0)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(connector=connector, headers=auth) as http:
            await served(http, memory_url, 20)  # warm up
            local = min([await in_process(helper, REQUESTS, n) for n in range(3)])
            http_floor = min([await echo(http, floor_url, REQUESTS) for _ in range(3)])
            memory = min([await served(http, memory_url, REQUESTS) for _ in range(3)])
            sqlite = min([await served(http, sqlite_url, REQUESTS, "s") for _ in range(3)])
            local_many = min([await at_once_in_process(helper) for _ in range(3)])
            many = min([await at_once(http, memory_url) for _ in range(3)])
        for runner, _ in runners:
            await runner.cleanup()
    ms = 1000
    report("in-process reply (fresh conversation)", local * ms, "ms")
    report(
        "HTTP floor: an aiohttp handler reading the JSON body, answering JSON",
        http_floor * ms,
        "ms",
    )
    report(
        "served chat completion, conversations in memory",
        memory * ms,
        "ms",
        floor=local * ms,
        floor_name="in-process",
    )
    print(
        f"  above the HTTP floor: {(memory - http_floor) * ms:.2f} ms "
        f"(ratio to it {memory / http_floor:.2f}x)"
    )
    report(
        "served, continuing 20 conversations in SQLite",
        sqlite * ms,
        "ms",
        floor=local * ms,
        floor_name="in-process",
    )
    report(
        f"{CONCURRENT} conversations at once, served",
        many * ms,
        "ms",
        floor=local_many * ms,
        floor_name=f"{CONCURRENT} at once in-process",
    )
    print(f"  served: {CONCURRENT / many:.0f} completions/s")


if __name__ == "__main__":
    asyncio.run(main())
