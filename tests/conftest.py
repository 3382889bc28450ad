"""Test setup: the sample third-party plugin (and the example plugin) are pip-installed into the
test environment, so they are discovered through their entry points exactly as a user's plugins
would be."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# Third-party plugin distributions the tests install, each found through its entry point.
DISTRIBUTIONS = {
    "aopkit-sample-plugin": ROOT / "tests" / "sample_plugin",
    "aopkit-example-plugin": ROOT / "examples" / "custom_plugin",
}


def _ensure_installed() -> None:
    missing = []
    for name, path in DISTRIBUTIONS.items():
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(str(path))
    if missing:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                *missing,
            ],
            check=True,
        )
        importlib.invalidate_caches()


_ensure_installed()


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
