"""MCP tools in a toolkit, against real MCP servers (tests/contrib/mcp/server.py) run over stdio
and streamable HTTP: calls, media, errors, a hung server, a killed server, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from aopkit import (
    AudioBlock,
    Base64Source,
    ImageBlock,
    Msg,
    ReActAgent,
    TextBlock,
    Toolkit,
    ToolResultBlock,
    ToolUseBlock,
)
from aopkit.toolkit import ToolError
from aopkit_mcp import MCPClient, MCPError, MCPTool

SERVER = str(Path(__file__).with_name("server.py"))
TOKEN = {"Authorization": "Bearer sesame"}


def stdio(**options):
    return MCPClient.stdio(sys.executable, [SERVER], **options)


def use(name, call_id="c1", **arguments):
    return ToolUseBlock(call_id, name, arguments)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def server_pid(toolkit, name="pid"):
    return int((await toolkit.call(use(name))).output)


@pytest.fixture
def http_server():
    """The test server over streamable HTTP on a loopback socket bound here (no port race);
    yields its URL and process once it answers HTTP."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    process = subprocess.Popen([sys.executable, SERVER, "http", str(fd)], pass_fds=[fd])
    listener.close()
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 60  # its imports take seconds on a loaded machine
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).close()
            except urllib.error.HTTPError as answer:  # 401 without the token: it is up
                answer.close()
                break
            except OSError:
                assert process.poll() is None, "the HTTP test server exited"
                assert time.monotonic() < deadline, "the HTTP test server did not come up"
                time.sleep(0.05)
        yield url, process
    finally:  # also when it never came up: no server outlives its test
        process.kill()
        process.wait()


async def test_tools_register_with_the_servers_schema(kernel):
    toolkit = Toolkit(kernel=kernel)
    async with stdio() as server:
        added = await server.add_tools_to(toolkit)
    assert server.name == "testbench", "named after the server's own name"
    assert all(isinstance(t, MCPTool) for t in added)
    assert set(toolkit.tools) == {
        "add",
        "fail",
        "picture",
        "weather",
        "files_read",  # the MCP name "files.read" made safe for model providers
        "hang",
        "pid",
        "secret_env",
    }
    spec = toolkit.tools["add"].spec
    assert spec.description == "Add two integers."
    assert spec.parameters["required"] == ["a", "b"]
    assert spec.parameters["properties"]["a"]["type"] == "integer"
    assert toolkit.tools["files_read"].remote_name == "files.read"


async def test_calls_through_a_toolkit(kernel):
    toolkit = Toolkit(kernel=kernel)
    env = {"SECRET_TOKEN": "tok-123"}
    async with stdio(env=env) as server:
        await server.add_tools_to(toolkit, prefix="bench")
        added = await toolkit.call(use("bench_add", a=2, b=40))
        weather = await toolkit.call(use("bench_weather", city="Oslo"))
        read = await toolkit.call(use("bench_files_read", path="notes.txt"))
        secret = await toolkit.call(use("bench_secret_env"))
    assert (added.output, added.is_error) == ("42", False)
    assert weather.output.replace("\n", "").replace(" ", "") == '{"city":"Oslo","celsius":21}'
    assert read.output == "contents of notes.txt"
    assert secret.output == "tok-123", "env reaches the server"


async def test_errors_come_back_as_error_results(kernel):
    toolkit = Toolkit(kernel=kernel)
    async with stdio() as server:
        await server.add_tools_to(toolkit)
        failed = await toolkit.call(use("fail", reason="the disk is full"))
        missing = await toolkit.call(use("add", a=1))
        with pytest.raises(MCPError, match="MCP server 'testbench', tool 'add' failed"):
            await server.call("add", {"a": "one", "b": 2})  # the server checks the values
        with pytest.raises(MCPError, match=r"tool 'nosuch' failed: .*nosuch"):
            await server.call("nosuch", {})
    assert failed.is_error
    assert "MCP server 'testbench', tool 'fail' failed" in failed.output
    assert "the disk is full" in failed.output
    assert missing.is_error and "b: required argument is missing" in missing.output


async def test_image_and_audio_content_become_blocks(kernel):
    toolkit = Toolkit(kernel=kernel)
    async with stdio() as server:
        await server.add_tools_to(toolkit)
        result = await toolkit.call(use("picture"))
    text, image, audio = result.output
    assert text == TextBlock("a red dot")
    assert isinstance(image, ImageBlock) and isinstance(image.source, Base64Source)
    assert image.source.media_type == "image/png" and image.source.data.startswith("iVBORw0")
    assert isinstance(audio, AudioBlock) and audio.source.media_type == "audio/wav"


async def test_a_react_agent_uses_mcp_tools(kernel):
    toolkit = Toolkit(kernel=kernel)
    both = [use("add", "c1", a=6, b=7), use("weather", "c2", city="Lima")]
    model = kernel.model("scripted:brain", responses=[both, "13, and 21 degrees in Lima."])
    async with stdio() as server:
        await server.add_tools_to(toolkit)
        helper = ReActAgent("helper", model, toolkit=toolkit, kernel=kernel)
        reply = await helper(Msg("user", "6+7? And the weather in Lima?", "user"))
    assert reply.text == "13, and 21 degrees in Lima."
    shown = {t.name: t for t in model.calls[0]["tools"]}
    assert shown["add"].parameters["required"] == ["a", "b"]
    results = model.calls[1]["messages"][-1].blocks(ToolResultBlock)
    assert results[0].output == "13"
    assert '"Lima"' in results[1].output and not any(r.is_error for r in results)


async def test_a_hanging_tool_times_out_and_the_session_survives(kernel):
    toolkit = Toolkit(kernel=kernel)
    async with stdio(timeout=0.5) as server:
        await server.add_tools_to(toolkit)
        started = time.perf_counter()
        hung = await toolkit.call(use("hang"))
        assert time.perf_counter() - started < 2
        after = await toolkit.call(use("add", a=1, b=1))
        pid = await server_pid(toolkit)
    assert hung.is_error
    assert "MCP server 'testbench', tool 'hang': no answer within 0.5 s" in hung.output
    assert after.output == "2", "a timeout does not end the session"
    assert not alive(pid), "closing stops a server that is still busy with a hung call"


async def test_a_server_killed_mid_call_gives_an_error_then_restarts(kernel):
    toolkit = Toolkit(kernel=kernel)
    async with stdio(timeout=10) as server:
        await server.add_tools_to(toolkit)
        first = await server_pid(toolkit)
        hanging = asyncio.ensure_future(toolkit.call(use("hang")))
        await asyncio.sleep(0.2)
        os.kill(first, signal.SIGKILL)
        lost = await asyncio.wait_for(hanging, 5)
        second = await server_pid(toolkit)
    assert lost.is_error
    assert "MCP server 'testbench', tool 'hang': the connection was lost" in lost.output
    assert second != first, "the next call started the server again"
    assert not alive(first) and not alive(second)


async def test_a_server_that_fails_to_start(tmp_path):
    broken = tmp_path / "broken"
    broken.touch()
    with pytest.raises(MCPError, match=r"MCP server 'bench'.*could not connect"):
        async with stdio(env={"BROKEN_FLAG": str(broken)}, name="bench"):
            pass
    with pytest.raises(MCPError, match=r"could not connect.*no-such-mcp-server"):
        await MCPClient.stdio("no-such-mcp-server").__aenter__()


async def test_a_server_that_cannot_restart_gives_an_error_result(kernel, tmp_path):
    toolkit = Toolkit(kernel=kernel)
    broken = tmp_path / "broken"
    async with stdio(env={"BROKEN_FLAG": str(broken)}) as server:
        await server.add_tools_to(toolkit)
        os.kill(await server_pid(toolkit), signal.SIGKILL)
        broken.touch()
        lost = await toolkit.call(use("add", a=1, b=2))
        again = await toolkit.call(use("add", a=1, b=2))
    assert lost.is_error and "tool 'add'" in lost.output
    assert again.is_error
    assert "MCP server 'testbench', tool 'add': could not connect" in again.output


async def test_a_server_that_never_answers_the_handshake(tmp_path):
    pids = tmp_path / "pids"
    silent = "import os, sys; open(sys.argv[1], 'a').write(f'{os.getpid()}\\n'); sys.stdin.read()"
    command = ["-S", "-c", silent, str(pids)]
    with pytest.raises(
        MCPError, match=r"did not start and complete the MCP handshake within 0\.5 s"
    ):
        async with MCPClient.stdio(sys.executable, command, connect_timeout=0.5):
            pass
    assert not alive(int(pids.read_text()))
    pids.unlink()
    client = MCPClient.stdio(sys.executable, command, connect_timeout=0.5)
    calls = [client.call("add", {}) for _ in range(3)]
    failures = await asyncio.gather(*calls, return_exceptions=True)
    assert all("tool 'add': the server did not start" in str(f) for f in failures)
    assert len(pids.read_text().split()) == 1, "concurrent calls share one failed attempt"
    await client.aclose()


async def test_clean_shutdown(kernel):
    toolkit = Toolkit(kernel=kernel)
    server = stdio()
    await server.add_tools_to(toolkit)  # connects on first use, without `async with`
    pid = await server_pid(toolkit)
    await server.aclose()
    assert not alive(pid), "the server process is gone once the client is closed"
    after = await toolkit.call(use("add", a=1, b=2))
    assert after.is_error and "the client is closed" in after.output
    await server.aclose()  # closing twice is harmless


async def test_names_must_not_clash_and_groups_switch(kernel):
    toolkit = Toolkit(kernel=kernel)
    async with stdio() as server:
        await server.add_tools_to(toolkit, group="bench")
        before = set(toolkit.tools)
        with pytest.raises(ToolError, match="already taken"):
            await server.add_tools_to(toolkit)
        assert set(toolkit.tools) == before, "nothing is added when one name clashes"
        await server.add_tools_to(toolkit, prefix="second")
        toolkit.set_group("bench", False)
        assert {s.name for s in toolkit.specs()} == {f"second_{n}" for n in before}


def test_a_schema_that_is_not_an_object_is_refused():
    client = MCPClient("bench", opener=None)  # type: ignore[arg-type]
    bad = {"name": "odd", "inputSchema": {"type": "string"}}
    with pytest.raises(MCPError, match="MCP server 'bench', tool 'odd': the input schema must"):
        MCPTool(client, bad, name="odd")
    closed = {"name": "strict", "inputSchema": {"properties": {}, "additionalProperties": False}}
    made = MCPTool(client, closed, name="strict")
    assert made.parameters == {**closed["inputSchema"], "type": "object", "required": []}


async def test_closed_schemas_reject_unknown_arguments(kernel):
    client = MCPClient("bench", opener=None)  # type: ignore[arg-type]
    schema = {"type": "object", "properties": {"a": {}}, "additionalProperties": False}
    toolkit = Toolkit([MCPTool(client, {"name": "strict", "inputSchema": schema}, name="s")])
    result = await toolkit.call(use("s", a=1, b=2))
    assert result.is_error and "b: unexpected argument" in result.output


async def test_http_tools_and_calls(kernel, http_server):
    url, _ = http_server
    toolkit = Toolkit(kernel=kernel)
    async with MCPClient.http(url, headers=TOKEN) as server:
        await server.add_tools_to(toolkit)
        added = await toolkit.call(use("add", a=20, b=22))
        picture = await toolkit.call(use("picture"))
        failed = await toolkit.call(use("fail", reason="no"))
    assert added.output == "42"
    assert isinstance(picture.output[1], ImageBlock)
    assert failed.is_error and "MCP server 'testbench', tool 'fail' failed" in failed.output


async def test_http_refused_credentials_are_a_clear_error_that_hides_them(http_server):
    url, _ = http_server
    client = MCPClient.http(f"{url}?key=hunter3", headers={"Authorization": "Bearer hunter2"})
    with pytest.raises(MCPError) as refused:
        async with client:
            pass
    message = str(refused.value)
    assert message.startswith(f"MCP server '{url}': could not connect")
    assert "401 Unauthorized" in message, "the HTTP status says what was wrong"
    assert "hunter2" not in message and "hunter3" not in message
    with pytest.raises(MCPError, match="needs http:// or https:// and a host; got scheme 'ftp'"):
        MCPClient.http("ftp://example.org/mcp")


async def test_http_server_killed_mid_session(kernel, http_server):
    url, process = http_server
    toolkit = Toolkit(kernel=kernel)
    async with MCPClient.http(url, headers=TOKEN, timeout=2, connect_timeout=2) as server:
        await server.add_tools_to(toolkit)
        hanging = asyncio.ensure_future(toolkit.call(use("hang")))
        await asyncio.sleep(0.2)
        process.kill()
        process.wait()
        lost = await asyncio.wait_for(hanging, 5)
        after = await asyncio.wait_for(toolkit.call(use("add", a=1, b=2)), 10)
    # mcp 2 sees the stream end; mcp 1 only notices through the timeout
    assert lost.is_error and "MCP server 'testbench', tool 'hang'" in lost.output
    assert after.is_error and "MCP server 'testbench', tool 'add'" in after.output


async def test_http_credentials_echoed_by_the_server_are_masked(kernel, http_server):
    url, _ = http_server
    toolkit = Toolkit(kernel=kernel)
    async with MCPClient.http(url, headers=TOKEN) as server:
        await server.add_tools_to(toolkit)
        echoed = await toolkit.call(use("fail", reason="you sent Bearer sesame"))
    assert echoed.is_error and "you sent ***" in echoed.output and "sesame" not in echoed.output
    assert kernel.secrets.redact("sesame") == "***", "the kernel's sinks scrub it too"
