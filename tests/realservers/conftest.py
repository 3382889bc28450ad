"""Real local servers, one per session, on free loopback ports: llama.cpp's (llama_cpp_python's
server, on a tiny random GGUF written here) and LiteLLM's proxy (``mock_response`` models).

These tests run in ``tox -e real``, which sets ``AOPKIT_REAL_SERVERS=1``: there a server that
cannot be installed or started FAILS the run. Elsewhere they are skipped, as a whole.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

REQUIRED = os.environ.get("AOPKIT_REAL_SERVERS") == "1"
HERE = Path(__file__).parent
STARTUP_SECONDS = 300.0  # LiteLLM takes long to import on a busy machine
LITELLM_KEY = "sk-aopkit-real-servers-test"  # the proxy's master key: a local test value


FIXTURES = ("llama_server", "litellm_server")
SERVERS: dict[str, Server] = {}  # by fixture name, as started


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REQUIRED:
        return
    skip = pytest.mark.skip(reason="real-server tests run in `tox -e real` (AOPKIT_REAL_SERVERS=1)")
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(skip)


def require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: `tox -e real` installs it", pytrace=False)


@attrs.define
class Server:
    """A server subprocess and what the tests measure of it: start-up time, requests made,
    seconds spent in model calls and in its tests."""

    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path
    started_in: float
    requests: int = 0
    seconds: float = 0.0
    test_seconds: float = 0.0
    tests: int = 0

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    began = time.perf_counter()
    yield
    for fixture in FIXTURES:
        if fixture in getattr(item, "fixturenames", ()) and fixture in SERVERS:
            SERVERS[fixture].test_seconds += time.perf_counter() - began
            SERVERS[fixture].tests += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not SERVERS:
        return
    write = terminalreporter.write_line
    write(
        "real servers: | server | start-up s | tests | requests | s in model calls | s in tests |"
    )
    for server in SERVERS.values():
        write(
            f"real servers: | {server.name} | {server.started_in:.1f} | {server.tests} | "
            f"{server.requests} | {server.seconds:.1f} | {server.test_seconds:.1f} |"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(name: str, command: list[str], ready: str, log: Path, **env: str) -> Server:
    """Start ``command`` and wait until ``GET ready`` answers 200 (the command's ``{port}`` is
    filled with a free loopback port); fail with the server's output if it exits or hangs."""
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    began = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    server = Server(name, base, process, log, 0.0)
    deadline = began + STARTUP_SECONDS
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}:\n{server.output()}")
        try:
            with urllib.request.urlopen(base + ready, timeout=2) as answer:
                if answer.status == 200:
                    server.started_in = time.perf_counter() - began
                    return server
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.3)
    stop(server)
    pytest.fail(f"{name} not ready in {STARTUP_SECONDS} s:\n{server.output()}")


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(10)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require("llama_cpp")
    require("gguf")
    from tests.realservers.tiny_gguf import write_tiny_llama

    folder = tmp_path_factory.mktemp("llama")
    model = write_tiny_llama(folder / "tiny.gguf")
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        "tiny",
        "--chat_format",
        "chatml-function-calling",
        "--n_ctx",
        "8192",
        "--n_threads",
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    ]
    server = SERVERS["llama_server"] = start(
        "llama.cpp", command, "/v1/models", folder / "server.log"
    )
    yield server
    stop(server)


@pytest.fixture(scope="session")
def litellm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require("litellm")
    executable = shutil.which("litellm", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.fail("the litellm command is not installed: `tox -e real` installs it")
    folder = tmp_path_factory.mktemp("litellm")
    config = folder / "config.yaml"
    config.write_text((HERE / "litellm.yaml").read_text())
    command = [executable, "--config", str(config), "--host", "127.0.0.1", "--port", "{port}"]
    server = SERVERS["litellm_server"] = start(
        "LiteLLM proxy",
        command,
        "/health/liveliness",
        folder / "proxy.log",
        LITELLM_MASTER_KEY=LITELLM_KEY,
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no fetch of the price list at start
        LITELLM_TELEMETRY="False",
        NO_PROXY="127.0.0.1,localhost",
    )
    yield server
    stop(server)
