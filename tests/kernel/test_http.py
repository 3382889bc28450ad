import asyncio
import email.utils
import time

import pytest
from aiohttp import web

from aopkit.http import (
    Request,
    ndjson,
    provider_message,
    retry_after,
    sse_events,
    stream_object,
)
from aopkit.models import ModelRejected, ModelUnavailable
from aopkit.secret import Secret, redact


async def lines_of(*chunks: bytes):
    for chunk in chunks:
        yield chunk


def test_retry_after_in_seconds_milliseconds_and_http_dates():
    assert retry_after({"Retry-After": "7"}) == 7.0
    assert retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert retry_after({"Retry-After": later}) in (29.0, 30.0, 31.0)  # whole seconds, rounded up
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert retry_after({"Retry-After": past}) == 0.0
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({}) is None


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (
            '{"error": {"message": "Rate limit", "type": "rate_limit_error"}}',
            "",
            "rate_limit_error: Rate limit",
        ),
        (
            '{"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}}',
            "",
            "RESOURCE_EXHAUSTED: Quota",
        ),
        ('{"error": "model \'x\' not found"}', "", "model 'x' not found"),
        ('{"code": "Throttling", "message": "slow down"}', "", "slow down"),
        ("<html><body>502 Bad Gateway</body></html>", "text/html", "HTML page instead of JSON"),
        ("", "", "no details"),
        (
            'id:1\nevent:error\n:HTTP_STATUS/429\ndata:{"code":"Throttling","message":"slow"}\n',
            "text/event-stream",
            "slow",
        ),
    ],
)
def test_provider_message(body, content_type, expected):
    assert expected in provider_message(body, content_type)


async def test_sse_events_are_parsed_and_an_unterminated_event_is_dropped():
    stream = lines_of(
        b": keep-alive\n",
        b"event: delta\n",
        b'data: {"a":\n',
        b"data: 1}\n",
        b"\n",
        b"data: [DONE]\n",
        b"\n",
        b'data: {"cut',
    )
    assert [e async for e in sse_events(stream)] == [("delta", '{"a":\n1}'), ("message", "[DONE]")]


async def test_ndjson_garbled_line_is_a_retryable_error():
    stream = lines_of(b'{"a": 1}\n', b"\n", b'{"b": ')
    seen = []
    with pytest.raises(ModelUnavailable, match="stream cut or garbled"):
        async for obj in ndjson(stream, "m"):
            seen.append(obj)
    assert seen == [{"a": 1}]


@pytest.mark.parametrize("data", [b"null", b"[1, 2]", b'"text"', b"42", b'{"a": '])
def test_a_stream_event_that_is_not_a_json_object_is_retryable(data):
    with pytest.raises(ModelUnavailable, match="stream cut or garbled"):
        stream_object(data, "m")
    assert stream_object(b'{"a": [1]}', "m") == {"a": [1]}


async def test_ndjson_null_line_is_a_retryable_error():
    with pytest.raises(ModelUnavailable, match="stream cut or garbled: b'null'"):
        [obj async for obj in ndjson(lines_of(b'{"a": 1}\n', b"null\n"), "m")]


@pytest.mark.parametrize("body", ["null", "[]", '"ok"', "7"])
async def test_an_answer_that_is_not_a_json_object_is_retryable(kernel, serve, body):
    async def answer(request):
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/", answer)
    request = Request("p:m", kernel.pool, await serve(app), {}, secrets=kernel.secrets)
    with pytest.raises(ModelUnavailable, match="not a JSON object") as info:
        await request.send()
    assert info.value.status == 200


async def test_requests_map_statuses_and_never_leak_the_key(kernel, serve):
    key = Secret("sk-test-DO-NOT-LEAK-123")

    async def handler(request):
        status = int(request.match_info["status"])
        echoed = request.headers.get("Authorization", "")
        headers = {"Retry-After": "2"} if status == 429 else {}
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body = {"error": {"message": f"bad key {echoed}", "type": kind}}
        return web.json_response(body, status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/{status}", handler)
    base = await serve(app)
    auth = {"Authorization": f"Bearer {key.reveal()}"}
    for status, kind in [
        (429, ModelUnavailable),
        (503, ModelUnavailable),
        (401, ModelRejected),
        (404, ModelRejected),
    ]:
        kernel.secrets.add(key)
        request = Request(
            "p:m", kernel.pool, f"{base}/{status}", {}, headers=auth, secrets=kernel.secrets
        )
        with pytest.raises(kind) as info:
            await request.send()
        assert info.value.status == status
        assert key.reveal() not in str(info.value)
        assert "bad key Bearer ***" in str(info.value)
    assert info.type is ModelRejected


async def test_connection_refused_and_timeouts_are_retryable(kernel, serve):
    refused = Request("p:m", kernel.pool, "http://127.0.0.1:9/x", {})
    with pytest.raises(ModelUnavailable, match="connection failed"):
        await refused.send()

    async def slow(request):
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/slow", slow)
    base = await serve(app)
    with pytest.raises(ModelUnavailable, match=r"no answer within 0\.2 s"):
        await Request("p:m", kernel.pool, f"{base}/slow", {}, timeout=0.2).send()


async def test_one_pooled_session_per_kernel(kernel):
    first = kernel.pool.session()
    assert kernel.pool.session() is first
    await kernel.aclose()
    assert first.closed
    assert kernel.pool.session() is not first  # reopened on demand


def test_secrets_never_print():
    secret = Secret("hunter2")
    assert (
        "hunter2" not in repr(secret)
        and "hunter2" not in str(secret)
        and "hunter2" not in f"{secret}"
    )
    assert secret.reveal() == "hunter2" and Secret(secret) == secret
    assert redact("key=hunter2!", secret) == "key=***!"
    # Pickling (shipping to another process) is for named secrets only: see test_secret.py.


def test_extra_body_fields_merge_into_nested_objects():
    from aopkit.http import merged

    payload = {"model": "m", "generationConfig": {"temperature": 0.2, "topK": 3}}
    extra = {"generationConfig": {"temperature": 0.9}, "seed": 1}
    assert merged(payload, extra) == {
        "model": "m",
        "generationConfig": {"temperature": 0.9, "topK": 3},
        "seed": 1,
    }
    assert payload["generationConfig"]["temperature"] == 0.2, "the payload is not changed"


async def test_a_provider_may_read_the_wait_from_the_error_body(kernel, serve):
    async def busy(request):
        return web.json_response(
            {"error": {"message": "slow down", "retryDelay": "7s"}}, status=429
        )

    app = web.Application()
    app.router.add_post("/", busy)
    base = await serve(app)
    request = Request(
        "p:m",
        kernel.pool,
        base + "/",
        {},
        retry_after_in_body=lambda body: 7.0 if "7s" in body else None,
    )
    with pytest.raises(ModelUnavailable) as info:
        await request.send()
    assert info.value.retry_after == 7.0
