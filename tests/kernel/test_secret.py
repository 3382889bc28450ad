"""Secrets: named secrets read where they are used, pickled as names only; a kernel's secrets
scrubbed in every spelling a server may echo; no transport exception kept as a cause."""

from __future__ import annotations

import copy
import json
import pickle
import secrets

import pytest
from aiohttp import web
from loguru import logger

import aopkit
from aopkit.http import HTTPChatModel, Request, join_url
from aopkit.models import ModelRejected, ModelUnavailable
from aopkit.secret import Secret, SecretMissing, SecretNotPortable, Secrets, names_a_credential


def value() -> str:
    return "sk-" + secrets.token_hex(12)


def test_a_secret_prints_as_stars_and_a_named_one_as_its_name(monkeypatch):
    key = value()
    monkeypatch.setenv("AOPKIT_TEST_KEY", key)
    for secret in (Secret(key), Secret.from_env("AOPKIT_TEST_KEY")):
        secret.reveal()
        assert key not in repr(secret) + str(secret) + f"{secret}" + repr([secret])
    assert repr(Secret.from_env("AOPKIT_TEST_KEY")) == "Secret('env:AOPKIT_TEST_KEY')"
    assert Secret(Secret.from_env("AOPKIT_TEST_KEY")).source == "env:AOPKIT_TEST_KEY"
    assert copy.deepcopy(Secret(key)).reveal() == key


def test_a_named_secret_is_read_on_first_use_where_it_is_used(monkeypatch, tmp_path):
    secret = Secret.from_env("AOPKIT_TEST_KEY")
    monkeypatch.delenv("AOPKIT_TEST_KEY", raising=False)
    with pytest.raises(SecretMissing, match="AOPKIT_TEST_KEY is not set on "):
        secret.reveal()
    monkeypatch.setenv("AOPKIT_TEST_KEY", "later-value")
    assert secret.reveal() == "later-value"

    path = tmp_path / "key"
    with pytest.raises(SecretMissing, match="cannot be read"):
        Secret.from_file(path).reveal()
    path.write_text("")
    with pytest.raises(SecretMissing, match="is empty"):
        Secret.from_file(path).reveal()
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(SecretMissing, match="not UTF-8"):
        Secret.from_file(path).reveal()
    path.write_text("  from-a-file\n")
    assert Secret.from_file(path).reveal() == "from-a-file"


def test_only_names_travel_in_pickles(monkeypatch, tmp_path):
    key = value()
    monkeypatch.setenv("AOPKIT_TEST_KEY", key)
    named = Secret.from_env("AOPKIT_TEST_KEY")
    named.reveal()  # even once read, the value stays behind
    data = pickle.dumps(named)
    assert key.encode() not in data and b"AOPKIT_TEST_KEY" in data
    monkeypatch.setenv("AOPKIT_TEST_KEY", "the-other-process-value")
    assert pickle.loads(data).reveal() == "the-other-process-value"

    (tmp_path / "key").write_text(key)
    data = pickle.dumps(Secret.from_file(tmp_path / "key"))
    assert key.encode() not in data and pickle.loads(data).reveal() == key

    with pytest.raises(SecretNotPortable, match="api_key_env"):
        pickle.dumps({"nested": [Secret(key)]})


def test_redact_catches_every_spelling_of_every_secret():
    known = Secrets()
    odd = 'p"a\\ss/wörd+1'
    known.add(odd, "abc", None, "")  # "abc" is too short to be masked
    text = f"{odd} {json.dumps(odd)} {json.dumps(odd, ensure_ascii=False)} abc"
    from urllib.parse import quote, quote_plus

    text += f" {quote(odd, safe='')} {quote_plus(odd)}"
    redacted = known.redact(text)
    assert redacted == '*** "***" "***" abc *** ***'
    assert known.redact_bytes(odd.encode() + b"!") == b"***!"
    assert odd in known and "abc" not in known


def test_credential_headers_and_urls_are_recognised():
    for name in ["Authorization", "proxy-authorization", "api-key", "X-API-Key", "x-goog-api-key",
                 "Cookie", "X-Auth-Token", "X-Client-Secret", "x-amz-security-token"]:  # fmt: skip
        assert names_a_credential(name), name
    for name in ["Content-Type", "Accept", "anthropic-version", "X-DashScope-SSE", "User-Agent"]:
        assert not names_a_credential(name), name

    known = Secrets()
    token, password, cookie = value(), value(), value()
    import base64

    basic = base64.b64encode(f"me:{password}".encode()).decode()
    known.add_headers(
        {
            "Authorization": f"Bearer {token}",
            "Proxy-Authorization": f"Basic {basic}",
            "Cookie": f"theme=dark; session={cookie}",
            "X-Plain": Secret("marked-by-the-program"),
            "Accept": "application/json",
        }
    )
    echoed = f"{token} {password} me:{password} {basic} {cookie} marked-by-the-program"
    assert known.redact(echoed).replace("***", "").strip() == ""
    assert known.redact("application/json theme") == "application/json theme"

    url_key, url_password = "a+b/" + value(), value()
    known.add_url(f"https://user:{url_password}@host/v1?api-version=1&key={url_key}")
    assert url_password not in known.redact(f"{url_password} {url_key} {url_key.replace('+', ' ')}")
    assert url_key not in known.redact(url_key) and "1" in known.redact("api-version=1")


def test_join_url_keeps_the_base_query_after_the_path():
    assert join_url("http://h/v1", "/chat") == "http://h/v1/chat"
    assert join_url("http://h/v1/?api-version=2", "/chat") == "http://h/v1/chat?api-version=2"
    assert (
        join_url("http://h/v1?key=k", "/m:stream?alt=sse") == "http://h/v1/m:stream?alt=sse&key=k"
    )


class Echo(HTTPChatModel):
    provider = "echo"
    env_prefix = "ECHO"
    formatter_name = "openai"


async def test_the_key_comes_from_the_named_variable_or_file(kernel, tmp_path, monkeypatch):
    env_kernel = aopkit.Kernel(environ={"MY_KEY": "from-the-kernel-env"}, load_entrypoints=False)
    env_kernel.register(__import__("aopkit_openai"), "openai")
    model = Echo("m", kernel=env_kernel, api_key_env="MY_KEY")
    assert model.api_key is not None and model.api_key.reveal() == "from-the-kernel-env"
    with pytest.raises(SecretMissing, match="NOPE"):
        Echo("m", kernel=env_kernel, api_key_env="NOPE")

    process_kernel = aopkit.Kernel(load_entrypoints=False)
    process_kernel.register(__import__("aopkit_openai"), "openai")
    monkeypatch.setenv("ECHO_API_KEY", "from-the-process")
    model = Echo("m", kernel=process_kernel)  # the provider's variable, by name
    assert model.api_key is not None and model.api_key.source == "env:ECHO_API_KEY"
    (tmp_path / "key").write_text("from-a-file")
    model = Echo("m", kernel=process_kernel, api_key_file=tmp_path / "key")
    assert model.api_key is not None and model.api_key.reveal() == "from-a-file"


async def test_credentials_in_headers_and_urls_stay_hidden_in_the_model(kernel):
    key, token, tenant = value(), value(), value()
    kernel.secrets.add(tenant)
    model = Echo(
        "m",
        kernel=kernel,
        base_url=f"http://127.0.0.1:9/v1?key={key}",
        headers={"api-key": token, "X-Tenant": tenant, "Accept": "application/json"},
    )
    shown = repr(model) + repr(model.headers)
    assert key not in shown and token not in shown and tenant not in shown
    assert model.headers["Accept"] == "application/json"
    request = model.request("/chat", {})
    assert request.headers["api-key"] == token and request.url.endswith(f"/chat?key={key}")


async def test_errors_keep_no_transport_exception_and_no_secret(kernel, serve):
    key = value()
    kernel.secrets.add(key)
    refused = Request(
        "p:m", kernel.pool, f"http://127.0.0.1:9/x?key={key}", {}, secrets=kernel.secrets
    )
    base = await serve(web.Application())
    bad_header = Request(
        "p:m", kernel.pool, base, {}, headers={"X-Key": f"{key}\r\nInjected: 1"},
        secrets=kernel.secrets,
    )  # fmt: skip
    for request, kind in [(refused, ModelUnavailable), (bad_header, ModelRejected)]:
        for call in (request.send(), anext(request.lines())):
            with pytest.raises(kind) as info:
                await call
            error = info.value
            assert error.__cause__ is None and error.__context__ is None
            assert key not in str(error) and key[:8] not in repr(error.args)


async def test_stream_lines_and_bodies_are_scrubbed_before_anyone_reads_them(kernel, serve):
    key = value()
    kernel.secrets.add(key)

    async def echo(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(3):
            await response.write(f'data: {{"echo": "{request.headers["X-Key"]}"}}\n\n'.encode())
        return response

    app = web.Application()
    app.router.add_post("/", echo)
    base = await serve(app)
    request = Request(
        "p:m", kernel.pool, base + "/", {}, headers={"X-Key": key}, secrets=kernel.secrets
    )
    lines = [line async for line in request.lines()]
    assert len(lines) == 6 and all(key.encode() not in line for line in lines)
    assert b'"***"' in lines[0]


async def test_sinks_scrub_what_the_program_marked_secret(kernel, tmp_path):
    password = value()
    kernel.secrets.add(password)
    trace = aopkit.JsonlTrace(tmp_path / "trace.jsonl")
    kernel.register(trace, "trace")
    kernel.register(aopkit.ChatLog(), "chat")
    logged: list[str] = []
    sink = logger.add(logged.append, level="TRACE", format="{message}")
    try:
        agent = aopkit.ModelAgent(
            "bot",
            kernel.model("scripted:x", responses=[f"the password is {password}"]),
            kernel=kernel,
        )
        await agent(aopkit.Msg("user", "hi", "user"))
    finally:
        logger.remove(sink)
        trace.close()
    written = (tmp_path / "trace.jsonl").read_text() + "".join(logged)
    assert "the password is ***" in written and password not in written


async def test_a_credential_preset_into_a_tool_is_scrubbed_from_its_results_and_errors(kernel):
    key = value()

    def lookup(city: str, api_key: str) -> str:
        """Look a city up."""
        if city == "nowhere":
            raise ValueError(f"the service refused key {api_key}")
        return f"{city}: sunny (asked with {api_key})"

    toolkit = aopkit.Toolkit([aopkit.Tool(lookup, preset={"api_key": key})], kernel=kernel)
    finished: list[str] = []

    class Listener:
        @aopkit.hookimpl
        def event(self, event: aopkit.events.Event) -> None:
            finished.append(repr(event))

    kernel.register(Listener(), "listener")
    ok = await toolkit.call(aopkit.ToolUseBlock("c1", "lookup", {"city": "Oslo"}))
    failed = await toolkit.call(aopkit.ToolUseBlock("c2", "lookup", {"city": "nowhere"}))
    assert ok.output == "Oslo: sunny (asked with ***)"
    assert failed.is_error and "refused key ***" in failed.output
    assert key not in "".join(finished) and "refused key ***" in "".join(finished)
