"""Real local servers, one per session, on free loopback ports: llama.cpp's (llama_cpp_python's
server, on a tiny random GGUF written here) and LiteLLM's proxy (``mock_response`` models).

These tests run in ``tox -e real``, which sets ``AOPKIT_REAL_SERVERS=1``: there a server that
cannot be installed or started FAILS the run. Elsewhere they are skipped, as a whole.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
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
    if REQUIRED:  # the llama.cpp tests first: they run while the LiteLLM proxy starts
        items.sort(key=lambda i: "litellm_server" in getattr(i, "fixturenames", ()))
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
    launched: float  # perf_counter() when the process was started
    started_in: float = 0.0
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


def launch(name: str, command: list[str], log: Path, **env: str) -> Server:
    """Start ``command`` (its ``{port}`` filled with a free loopback port), output to ``log``."""
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group, stopped as a whole
        )
    return Server(name, f"http://127.0.0.1:{port}", process, log, time.perf_counter())


def wait_ready(server: Server, path: str) -> Server:
    """Wait until ``GET path`` answers 200; fail with the server's output if it exits or hangs."""
    deadline = server.launched + STARTUP_SECONDS
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"{server.name} exited with {server.process.returncode}:\n{server.output()}"
            )
        try:
            with urllib.request.urlopen(server.base_url + path, timeout=2) as answer:
                if answer.status == 200:
                    server.started_in = time.perf_counter() - server.launched
                    return server
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.3)
    stop(server)
    pytest.fail(f"{server.name} not ready in {STARTUP_SECONDS} s:\n{server.output()}")


def stop(server: Server) -> None:
    if server.process.poll() is not None:
        return
    os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
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
    server = launch("llama.cpp", command, folder / "server.log")
    try:
        SERVERS["llama_server"] = wait_ready(server, "/v1/models")
        yield server
    finally:
        stop(server)


@pytest.fixture(scope="session")
def litellm_launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The proxy, started but not waited for: it takes long to import, so it is launched when
    the session starts (see ``launch_early``) and starts while the llama.cpp tests run."""
    require("litellm")
    executable = shutil.which("litellm", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.fail("the litellm command is not installed: `tox -e real` installs it")
    folder = tmp_path_factory.mktemp("litellm")
    config = folder / "config.yaml"
    config.write_text((HERE / "litellm.yaml").read_text())
    command = [executable, "--config", str(config), "--host", "127.0.0.1", "--port", "{port}"]
    server = launch(
        "LiteLLM proxy",
        command,
        folder / "proxy.log",
        LITELLM_MASTER_KEY=LITELLM_KEY,
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no fetch of the price list at start
        LITELLM_TELEMETRY="False",
        NO_PROXY="127.0.0.1,localhost",
    )
    try:
        yield server
    finally:
        stop(server)


@pytest.fixture(scope="session")
def litellm_server(litellm_launch: Server) -> Server:
    SERVERS["litellm_server"] = wait_ready(litellm_launch, "/health/liveliness")
    return litellm_launch


@pytest.fixture(scope="session", autouse=True)
def launch_early(request: pytest.FixtureRequest) -> None:
    """Launch the proxy first thing when any selected test needs it."""
    if any("litellm_server" in getattr(i, "fixturenames", ()) for i in request.session.items):
        request.getfixturevalue("litellm_launch")
