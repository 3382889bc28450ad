"""Test setup: the sample third-party plugin is pip-installed into the test environment, so it is
discovered through its entry point exactly as a user's plugin would be."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE_PLUGIN = Path(__file__).parent / "sample_plugin"


def _ensure_sample_plugin() -> None:
    try:
        importlib.metadata.distribution("aopkit-sample-plugin")
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            str(SAMPLE_PLUGIN),
        ],
        check=True,
    )
    importlib.invalidate_caches()


_ensure_sample_plugin()


@pytest.fixture
async def kernel(tmp_path):
    """A kernel of its own for each test, with every installed plugin loaded, incidents kept in
    the test's temporary directory; its HTTP pool is closed afterwards."""
    from aopkit import Kernel

    kernel = Kernel(environ={"AOPKIT_INCIDENTS": str(tmp_path / "incidents.jsonl")})
    yield kernel
    await kernel.aclose()


@pytest.fixture
async def serve():
    """``await serve(app)`` runs an aiohttp application on loopback and returns its base URL."""
    from aiohttp.test_utils import TestServer

    servers = []

    async def start(app):
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()
