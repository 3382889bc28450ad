"""The Studio's HTTP side without a browser: the token, origins, answers, and never blocking."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from aopkit import Agent, Msg
from aopkit.cli import build_parser
from aopkit_studio import Studio, attach
from aopkit_studio.schema import problem


class Echo(Agent):
    async def reply(self, msg):
        return Msg(self.name, "ok", "assistant")


def base(studio):
    return f"http://127.0.0.1:{studio.port}"


@pytest.mark.parametrize("path", ["/", "/static/studio.js", "/ws", "/api/runs"])
async def test_no_token_is_401(studio, path):
    async with aiohttp.ClientSession() as http:
        async with http.get(base(studio) + path) as response:
            assert response.status == 401
        async with http.get(base(studio) + path, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401


async def test_the_token_logs_in_with_a_cookie_and_leaves_the_address_bar(studio):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(studio.url) as response:
            assert response.status == 200
            assert response.url.query == {}  # redirected to "/" without the token
            assert "Content-Security-Policy" in response.headers
        async with http.get(base(studio) + "/static/studio.js") as response:
            assert response.status == 200  # the cookie now carries the token


async def test_a_websocket_from_another_origin_is_refused(studio):
    headers = {"Authorization": f"Bearer {studio.token}", "Origin": "http://evil.example"}
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(base(studio) + "/ws", headers=headers)
        assert info.value.status == 403


async def test_catch_up_from_a_sequence_number(kernel, studio):
    headers = {"Authorization": f"Bearer {studio.token}"}
    await Echo("a", kernel=kernel)()
    await Echo("b", kernel=kernel)()
    await asyncio.sleep(studio.flush * 5)
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.ws_connect(base(studio) + "/ws?since=0") as ws:
            assert (await ws.receive_json())["kind"] == "state"
            everything = (await ws.receive_json())["events"]
        assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
        since = everything[3]["seq"]
        async with http.ws_connect(base(studio) + f"/ws?since={since}") as ws:
            await ws.receive_json()
            rest = (await ws.receive_json())["events"]
        assert rest == everything[4:]


async def test_answers_are_checked_before_they_reach_the_agent(kernel, studio):
    from aopkit.faults import Incident

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    waiting = asyncio.ensure_future(studio.escalate(Incident("m", "T", "bad", "q", schema=schema)))
    await asyncio.sleep(0)
    (incident,) = studio._incidents
    url = f"{base(studio)}/api/incidents/{incident}"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {studio.token}"}) as http:
        for body, error in [
            ({"action": "answer", "answer": "{"}, "the answer is not JSON"),
            ({"action": "answer", "answer": "{}"}, "at $.n: required field is missing"),
            ({"action": "answer", "answer": 3}, "answer must be the answer's JSON text"),
            ({"action": "explode"}, "action must be retry, answer or abort"),
        ]:
            async with http.post(url, json=body) as response:
                assert (response.status, error in await response.text()) == (400, True)
        cross = {"Origin": "http://evil.example"}
        async with http.post(url, json={"action": "abort"}, headers=cross) as response:
            assert response.status == 403
        assert not waiting.done()
        async with http.post(url, json={"action": "answer", "answer": '{"n": 2}'}) as response:
            assert response.status == 200
        assert (await waiting).answer == '{"n": 2}'
        async with http.post(url, json={"action": "abort"}) as response:
            assert response.status == 404


async def test_a_full_buffer_drops_and_counts_never_blocks(kernel):
    from loguru import logger

    warnings: list[str] = []
    sink = logger.add(warnings.append, level="WARNING")
    studio = Studio(kernel, buffer=10)
    kernel.register(studio, "studio-under-test")  # registered, never started: nothing drains it
    agent = Echo("e", kernel=kernel)
    for _ in range(10):
        await agent()
    assert (len(studio._buffer), studio.dropped) == (10, 20)  # 3 events a reply
    logger.remove(sink)
    assert ["dropping events (counted)" in w for w in warnings] == [True]


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ({"a": [1, "x"]}, "at $.a[1]: expected integer, got string"),
        ({"a": [], "b": True}, "at $: unexpected field 'b'"),
        ({"a": [], "c": None}, None),
        ({"a": True}, "at $.a: expected array, got boolean"),
    ],
)
def test_the_schema_check_names_the_bad_field(value, found):
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "array", "items": {"type": "integer"}},
            "c": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["a"],
        "additionalProperties": False,
    }
    assert problem(value, schema) == found


async def test_attach_is_one_call_and_the_cli_has_a_studio_command(kernel, tmp_path):
    assert kernel.commands.owners["studio"] == "studio"  # found through its entry point
    args = build_parser(kernel).parse_args(["studio", "--port", "0", "--traces", str(tmp_path)])
    assert (args.port, args.host) == (0, "127.0.0.1")
    studio = await attach(kernel, port=0)
    try:
        assert studio.url.startswith("http://127.0.0.1:")
    finally:
        await studio.stop()


async def test_approval_decisions_are_checked_and_guarded_like_incidents(kernel, studio):
    from aopkit import ApprovalRequest
    from aopkit.durable import PendingCall

    request = ApprovalRequest(
        "buyer", (PendingCall("c1", "buy", {"item": "boat"}), PendingCall("c2", "pay", {})), "k"
    )
    waiting = asyncio.ensure_future(studio.escalate(request))
    await asyncio.sleep(0)
    (approval,) = studio._approvals
    url = f"{base(studio)}/api/approvals/{approval}"
    async with aiohttp.ClientSession() as anonymous, anonymous.post(url, json={}) as response:
        assert response.status == 401
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {studio.token}"}) as http:
        approve = {"action": "approve"}
        for body, error in [
            ({"decisions": {"c1": approve}}, "one decision for each of ['c1', 'c2']"),
            ({"decisions": {"c1": approve, "c2": {"action": "maybe"}}}, "c2: action must be"),
            ({"decisions": {"c1": approve, "c2": {"action": "edit"}}}, "c2: give arguments"),
            ({"decisions": {"c1": approve, "c2": {"action": "reject", "reason": 3}}}, "reason"),
            ({"decisions": "yes"}, "one decision for each"),
        ]:
            async with http.post(url, json=body) as response:
                assert (response.status, error in await response.text()) == (400, True)
        cross = {"Origin": "http://evil.example"}
        async with http.post(url, json={}, headers=cross) as response:
            assert response.status == 403
        assert not waiting.done()
        good = {"c1": {"action": "edit", "arguments": {"item": "raft"}}, "c2": approve}
        async with http.post(url, json={"decisions": good}) as response:
            assert response.status == 200
        decided = await waiting
        assert decided["c1"].arguments == {"item": "raft"} and decided["c2"].action == "approve"
        async with http.post(url, json={"decisions": good}) as response:
            assert response.status == 404
