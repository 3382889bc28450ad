"""The aopkit pytest plugin: fixtures for testing agents and plugins, with no import needed.

Registered through the ``pytest11`` entry point ``aopkit``; ``-p no:aopkit`` turns it off. A
fixture of the same name in a ``conftest.py`` takes precedence, as pytest's rules say.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

if TYPE_CHECKING:  # imported by the fixtures that use them: loading the plugin stays cheap
    from aiohttp import web

    from aopkit.kernel import Kernel
    from aopkit.models import ChatModel


def async_fixture(function: Any) -> Any:
    """pytest-asyncio's fixture (it works in strict mode as well as in auto mode). Without
    pytest-asyncio, a fixture that says so when used: this module loads in every pytest run
    where aopkit is installed, and must never break one."""
    try:
        from pytest_asyncio import fixture
    except ImportError:

        @pytest.fixture(name=function.__name__)
        def missing() -> None:
            pytest.fail("aopkit's async fixtures need pytest-asyncio: pip install pytest-asyncio")

        return missing
    return fixture(function)


CASSETTE_MODES = ("replay", "auto", "record")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--aopkit-cassettes",
        choices=CASSETTE_MODES,
        default="replay",
        help="how the cassette fixture's models use their cassettes (default: replay only)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "aopkit_needs(*features): the provider feature a conformance test needs"
    )


@async_fixture
async def kernel(tmp_path: Path) -> AsyncIterator[Kernel]:
    """A kernel of its own for the test, every installed plugin loaded, incidents kept in the
    test's temporary directory; closed (its HTTP pool with it) after the test."""
    from aopkit.kernel import Kernel

    async with Kernel(environ={"AOPKIT_INCIDENTS": str(tmp_path / "incidents.jsonl")}) as own:
        yield own


@async_fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Any]]:
    """``await serve(app)`` runs an aiohttp application on loopback (an ephemeral port) for
    the test and returns its base URL."""
    from aiohttp.test_utils import TestServer

    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
def scripted(kernel: Kernel) -> Callable[..., ChatModel]:
    """``scripted("hi", ToolUseBlock(...), ModelUnavailable(...))``: a model of the test's
    kernel that answers with these, in order (see the ``scripted:`` provider)."""

    def make(*responses: Any, **options: Any) -> ChatModel:
        model: ChatModel = kernel.model("scripted:test", responses=list(responses), **options)
        return model

    return make


@attrs.frozen
class Cassette:
    """The test's cassette: ``cassette.model("openai:gpt-4o-mini", **options)`` records to or
    replays from ``path`` as ``--aopkit-cassettes`` says."""

    kernel: Kernel
    path: Path
    mode: str

    def model(self, name: str, **options: Any) -> ChatModel:
        model: ChatModel = self.kernel.model(
            f"replay:{name}", cassette=self.path, mode=self.mode, **options
        )
        return model


@pytest.fixture
def cassette(kernel: Kernel, request: pytest.FixtureRequest) -> Cassette:
    """A cassette named after the test, in ``cassettes/`` beside its module: replayed (no
    network) unless the run says ``--aopkit-cassettes=record`` or ``auto``."""
    test = re.sub(r"[^\w.-]+", "_", request.node.name)
    path = request.path.parent / "cassettes" / request.path.stem / f"{test}.json"
    mode: str = request.config.getoption("--aopkit-cassettes")
    return Cassette(kernel, path, mode)
