"""The kernel's connection limit (``Kernel(connections=N)`` / ``AOPKIT_CONNECTIONS``), and what
a model call leaves behind: no reference cycle (only the cyclic collector could free one, and
at thousands of calls in flight its passes cost a third of the run), no connection held after
a cancellation, retries as before."""

from __future__ import annotations

import asyncio
import gc

import attrs
import pytest
from aiohttp import web

import aopkit
from aopkit.errors import ConfigurationError
from aopkit.models import ModelRejected, ModelUnavailable
from aopkit.retry import RetryPolicy
from tests.kernel.helpers import Recorder

ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "m",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 3, "output_tokens": 1},
}
FAST_RETRY = RetryPolicy(attempts=3, initial=0.01, jitter=0.0)


class Counting:
    """A loopback server's handler that counts requests under way (each holds a connection)
    and answers after ``delay``; ``/fail/...`` paths answer HTTP 503 once, then succeed."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.now, self.most, self.seen = delay, 0, 0, 0
        self.failed: set[str] = set()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen += 1
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.now -= 1
        if request.path.startswith("/fail") and request.path not in self.failed:
            self.failed.add(request.path)
            return web.json_response({"error": {"message": "busy"}}, status=503)
        if request.path.startswith("/reject"):
            return web.json_response({"error": {"message": "no such model"}}, status=404)
        return web.json_response(ANSWER)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        return app


def model_of(kernel: aopkit.Kernel, base: str) -> aopkit.ChatModel:
    model: aopkit.ChatModel = kernel.model("anthropic:m", base_url=base, api_key="k")
    model.retry = FAST_RETRY
    return model


# -- the option ------------------------------------------------------------------------------


async def test_the_limit_is_1024_unless_given():
    async with aopkit.Kernel(environ={}, load_entrypoints=False) as kernel:
        assert kernel.pool.limit == 1024
    async with aopkit.Kernel(environ={}, connections=5, load_entrypoints=False) as kernel:
        assert kernel.pool.limit == 5
    async with aopkit.Kernel(environ={"AOPKIT_CONNECTIONS": " 7 "}, load_entrypoints=False) as k:
        assert k.pool.limit == 7
    async with aopkit.Kernel(
        environ={"AOPKIT_CONNECTIONS": "7"}, connections=3, load_entrypoints=False
    ) as kernel:
        assert kernel.pool.limit == 3, "the argument wins over the environment"


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "8", [3]])
def test_a_bad_limit_is_refused_saying_where(bad):
    with pytest.raises(ConfigurationError, match=r"Kernel\(connections=\.\.\.\) must be a whole"):
        aopkit.Kernel(environ={}, connections=bad, load_entrypoints=False)


@pytest.mark.parametrize("bad", ["0", "-3", "many", "1.5", "1e3"])
def test_a_bad_limit_in_the_environment_is_refused_naming_it(bad):
    with pytest.raises(ConfigurationError, match="AOPKIT_CONNECTIONS must be a whole") as info:
        aopkit.Kernel(environ={"AOPKIT_CONNECTIONS": bad}, load_entrypoints=False)
    assert bad in str(info.value)


async def test_the_limit_caps_calls_in_flight_over_all_servers(serve):
    both = Counting(delay=0.2)  # one count over two servers
    bases = [await serve(both.app()), await serve(both.app())]
    async with aopkit.Kernel(environ={}, plugins="anthropic", connections=3) as kernel:
        models = [model_of(kernel, base) for base in bases]
        answers = await asyncio.gather(*(models[i % 2]("hi") for i in range(12)))
        assert [a.text for a in answers] == ["ok"] * 12, "calls beyond the limit wait, not fail"
        assert both.seen == 12 and both.most == 3

        # One server alone may use every connection: there is no limit per host.
        alone = Counting(delay=0.2)
        model = model_of(kernel, await serve(alone.app()))
        await asyncio.gather(*(model("hi") for _ in range(9)))
        assert alone.most == 3


async def test_calls_waiting_for_a_connection_hold_no_request(serve):
    """Calls beyond the limit wait before aiohttp builds their request: a crowd far larger
    than the limit holds a waiting future each, not a request the collector walks again and
    again while it waits."""
    from aiohttp import ClientRequest

    server = Counting(delay=0.5)
    async with aopkit.Kernel(environ={}, plugins="anthropic", connections=3) as kernel:
        model = model_of(kernel, await serve(server.app()))
        calls = [asyncio.ensure_future(model("hi")) for _ in range(30)]
        while server.now < 3:
            await asyncio.sleep(0.01)
        requests = [o for o in gc.get_objects() if isinstance(o, ClientRequest)]
        assert len(requests) <= 3, f"{len(requests)} requests built for 3 connections"
        del requests
        assert [a.text for a in await asyncio.gather(*calls)] == ["ok"] * 30
        assert server.most == 3


async def test_a_call_waits_for_its_connection_before_it_starts(serve):
    """A call waits for its turn before anything else: while it waits, neither its request
    nor its call record nor its budget ticket exists, and observers hear of it only when it
    starts. Everything a waiting call holds, the collector walks again and again."""
    from aopkit.events import ModelCallStarted
    from aopkit.http import Request
    from aopkit.models import _Call
    from aopkit.usage import Ticket

    server = Counting(delay=0.5)
    async with aopkit.Kernel(environ={}, plugins="anthropic", connections=2) as kernel:
        recorder = Recorder()
        kernel.register(recorder, "recorder")
        model = model_of(kernel, await serve(server.app()))
        agents = [aopkit.ModelAgent(f"a{i}", model) for i in range(20)]

        def ours(built: object) -> bool:  # not left by an earlier test's kernel
            return not isinstance(built, Ticket) or built.accounts[0] is kernel.usage.total

        replies = [asyncio.ensure_future(agent("hi")) for agent in agents]
        while server.now < 2:
            await asyncio.sleep(0.01)
        for kind in (Request, _Call, Ticket):
            built = sum(isinstance(o, kind) and ours(o) for o in gc.get_objects())
            assert built <= 2, f"{built} {kind.__name__} objects for 2 connections"
        assert len(recorder.of(ModelCallStarted)) == 2
        assert kernel.progress.in_flight == 2
        assert [r.text for r in await asyncio.gather(*replies)] == ["ok"] * 20
        assert len(recorder.of(ModelCallStarted)) == 20 and server.most == 2
        assert kernel.pool.turn()._free == 2


async def test_a_pool_round_of_model_agents_keeps_to_the_limit(serve):
    """A pool runs its replies' first steps in one task, one after another: each call's turn is
    lent to that task until the call's request takes it, so none is taken by another's call."""
    server = Counting(delay=0.05)
    async with aopkit.Kernel(environ={}, plugins="anthropic", connections=2) as kernel:
        model = model_of(kernel, await serve(server.app()))
        pool = aopkit.AgentPool([aopkit.ModelAgent(f"a{i}", model) for i in range(30)])
        for _ in range(2):
            replies = await asyncio.wait_for(pool.reply_all("hi"), 20)
            assert [r.text for r in replies] == ["ok"] * 30
        assert server.seen == 60 and server.most == 2
        assert (kernel.pool.turn()._free, kernel.pool.turn()._lent) == (2, set())


async def test_a_call_refused_after_its_wait_gives_its_connection_back(serve):
    server = Counting(delay=0.3)
    async with aopkit.Kernel(environ={}, plugins="anthropic", connections=1) as kernel:
        model = model_of(kernel, await serve(server.app()))
        busy = asyncio.ensure_future(model("hi"))
        while server.now < 1:
            await asyncio.sleep(0.01)
        refused = aopkit.ModelAgent("r", model)
        refused.budget = aopkit.Budget(calls=0)
        with pytest.raises(aopkit.BudgetExceeded):
            await asyncio.wait_for(refused("hi"), 5)  # refused once the connection was free
        assert (await busy).text == "ok"
        assert (await asyncio.wait_for(model("again"), 5)).text == "ok"
        assert (kernel.pool.turn()._free, kernel.pool.turn()._lent) == (1, set())


async def serving_media(serve, path: str, handler) -> tuple[Counting, str]:
    """A counting model server that also serves ``path`` (a medium) with ``handler``."""
    server = Counting()
    app = server.app()
    app.router.add_get(path, handler)
    return server, await serve(app)


def inlining(model: aopkit.ChatModel) -> aopkit.ChatModel:
    """``model`` told its server takes no media URLs: it fetches each medium to inline it."""
    model.capabilities = attrs.evolve(model.capabilities, media_urls=False)
    return model


async def test_media_fetched_inside_a_call_uses_the_calls_connection(serve):
    """With one connection, a call that must fetch an image to inline it fetches it on the
    connection it waited for (no second turn, no deadlock), then sends on the next free one."""
    png = b"\x89PNG\r\n\x1a\n fake"

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    server, base = await serving_media(serve, "/cat.png", image)
    async with aopkit.Kernel(environ={}, plugins="anthropic", connections=1) as kernel:
        model = inlining(model_of(kernel, base))
        picture = aopkit.Msg(
            "user", [aopkit.ImageBlock(aopkit.URLSource(f"{base}/cat.png"))], "user"
        )
        answers = await asyncio.wait_for(asyncio.gather(model([picture]), model([picture])), 10)
        assert [a.text for a in answers] == ["ok", "ok"] and server.seen == 2
        assert kernel.pool.turn()._free == 1


async def test_a_call_stopped_before_its_request_gives_its_connection_back(serve, tmp_path):
    """With one connection, a call stopped between its wait and its request: cancelled while
    it fetches an image to inline, or failing on a missing file. Each leaves the connection
    free and nothing lent, and the next call goes through."""
    from aopkit.formatting import MediaError

    async def stalled(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        await response.write(b"\x89PNG")
        await asyncio.sleep(30)
        return response

    server, base = await serving_media(serve, "/stalled.png", stalled)
    async with aopkit.Kernel(environ={}, plugins="anthropic", connections=1) as kernel:
        model = inlining(model_of(kernel, base))
        turns = kernel.pool.turn()

        def showing(url: str) -> aopkit.Msg:
            return aopkit.Msg("user", [aopkit.ImageBlock(aopkit.URLSource(url))], "user")

        fetching = asyncio.ensure_future(model([showing(f"{base}/stalled.png")]))
        while turns._free:  # the call's turn, lent to the fetch
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        fetching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetching
        assert (turns._free, turns._lent) == (1, set())

        with pytest.raises(MediaError, match=r"missing\.png"):
            await model([showing(str(tmp_path / "missing.png"))])
        assert (turns._free, turns._lent) == (1, set())
        assert (await asyncio.wait_for(model("hi"), 5)).text == "ok" and server.seen == 1


async def test_cancelled_calls_give_their_connections_back(serve):
    slow, fast = Counting(delay=30), Counting(delay=0.2)
    async with aopkit.Kernel(environ={}, plugins="anthropic", connections=2) as kernel:
        stuck = model_of(kernel, await serve(slow.app()))
        calls = [asyncio.ensure_future(stuck("hi")) for _ in range(4)]  # two wait for a slot
        while slow.now < 2:
            await asyncio.sleep(0.01)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        model = model_of(kernel, await serve(fast.app()))
        answers = await asyncio.wait_for(asyncio.gather(model("a"), model("b")), 5)
        assert [a.text for a in answers] == ["ok", "ok"]
        assert fast.most == 2, "both connections were free again"
        assert slow.seen == 2, "the calls cancelled while waiting were never sent"


async def test_retries_work_under_the_limit(serve):
    server = Counting()
    base = await serve(server.app())
    async with aopkit.Kernel(environ={}, plugins="anthropic", connections=1) as kernel:
        models = [model_of(kernel, f"{base}/fail/{i}") for i in range(3)]
        answers = await asyncio.gather(*(m("hi") for m in models))
        assert [a.text for a in answers] == ["ok"] * 3
        assert server.seen == 6 and server.most == 1
        assert kernel.faults.by_tier() == {"tier 1": 3}


# -- what a call leaves behind ----------------------------------------------------------------


async def calls_leave_no_cycles(run, times: int = 10) -> int:
    """Objects the cyclic collector finds after ``run()`` ran ``times`` times (0 when every
    object a call made was freed by its reference count)."""
    await run()  # the first call opens the session and a connection, which stay
    gc.collect()
    gc.disable()
    try:
        for _ in range(times):
            await run()
        return gc.collect()
    finally:
        gc.enable()


async def test_a_call_leaves_no_reference_cycles(serve):
    server = Counting()
    base = await serve(server.app())
    async with aopkit.Kernel(environ={}, plugins="anthropic") as kernel:
        model = model_of(kernel, base)
        agent = aopkit.ModelAgent("a", model)

        async def answered():
            await model("hi")

        async def replied():
            agent.memory.clear()
            await agent("hi")

        crowd = [aopkit.ModelAgent(f"a{i}", model) for i in range(20)]

        async def replied_at_once():  # each reply a task, as a simulation's round runs them
            await asyncio.gather(*(each("hi") for each in crowd))

        assert await calls_leave_no_cycles(answered) == 0
        assert await calls_leave_no_cycles(replied) == 0
        assert await calls_leave_no_cycles(replied_at_once) == 0


async def test_a_failed_call_leaves_no_reference_cycles(serve):
    server = Counting()
    base = await serve(server.app())
    async with aopkit.Kernel(environ={}, plugins="anthropic") as kernel:
        rejected = model_of(kernel, f"{base}/reject")
        unavailable = model_of(kernel, f"{base}/fail")
        unavailable.retry = RetryPolicy(attempts=1)

        async def rejected_call():
            with pytest.raises(ModelRejected):
                await rejected("hi")

        async def unavailable_call():
            server.failed.clear()  # fails every time
            with pytest.raises(ModelUnavailable):
                await unavailable("hi")

        assert await calls_leave_no_cycles(rejected_call) == 0
        assert await calls_leave_no_cycles(unavailable_call) == 0
