"""The aopkit pytest plugin as a user meets it: installed, it gives its fixtures to a test
suite that imports nothing, once; the conformance suite skips what an adapter declares it lacks
and fails a provider that misbehaves. Each case runs pytest in a subprocess on a temporary
project, as a plugin author's CI would."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aopkit.errors import AopkitError
from aopkit.testing.conformance import Adapter

# hypothesis's plugin is left out: the user's project does not use it, and it costs seconds
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"]


def run_pytest(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest on ``source``, in a project of its own (pytest-asyncio in auto mode)."""
    (tmp_path / "test_user.py").write_text(textwrap.dedent(source))
    ini = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    (tmp_path / "pytest.ini").write_text(ini)
    return subprocess.run(
        [*PYTEST, "-q", "-rs", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_importing_aopkit_or_its_fake_servers_does_not_import_pytest_or_openai():
    """The ``openai`` package is needed only when an OpenAI fake checks a request, and the
    plugin, loaded by every pytest run beside aopkit, imports aiohttp only for a fixture."""
    code = (
        "import sys, aopkit, aopkit.testing.fakes.openai, aopkit.testing.fakes.gemini, "
        "aopkit.testing.fakes.openai_responses; "
        "assert 'pytest' not in sys.modules, 'pytest was imported'; "
        "assert 'openai' not in sys.modules, 'openai was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    code = "import sys, aopkit.testing.plugin; assert 'aiohttp' not in sys.modules, 'aiohttp'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_plugin_is_declared_once_by_its_pytest11_entry_point():
    points = [p for p in importlib.metadata.entry_points(group="pytest11") if p.name == "aopkit"]
    assert [p.value for p in points] == ["aopkit.testing.plugin"]


def test_the_fixtures_need_no_import_and_close_the_kernel(tmp_path):
    result = run_pytest(
        tmp_path,
        """
        from aiohttp import web
        from aopkit import Msg

        KEPT = []

        async def test_fixtures(kernel, scripted, serve):
            model = scripted("Hello!")
            assert model.kernel is kernel
            assert (await model([Msg("user", "hi", "user")])).text == "Hello!"
            app = web.Application()
            app.router.add_get("/", lambda request: web.Response(text="up"))
            url = await serve(app)
            assert url.startswith("http://127.0.0.1:")
            KEPT.append(kernel.pool.session())
            async with KEPT[0].get(url) as response:
                assert await response.text() == "up"

        def test_the_kernel_was_closed():
            assert KEPT[0].closed
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_cassette_fixture_records_then_replays_offline(tmp_path):
    source = """
        from aopkit import Msg

        async def test_moons(cassette):
            model = cassette.model("scripted:any", responses=["Io, Europa, Ganymede."])
            answer = await model([Msg("user", "Name three moons of Jupiter.", "user")])
            assert answer.text == "Io, Europa, Ganymede."
        """
    recorded = run_pytest(tmp_path, source, "--aopkit-cassettes=record")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    (path,) = (tmp_path / "cassettes" / "test_user").iterdir()
    assert path.name == "test_moons.json"
    replayed = run_pytest(tmp_path, source.replace('"Io, Europa, Ganymede."]', "]"))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    missing = run_pytest(tmp_path, source.replace("three moons", "two moons"))
    assert missing.returncode == 1 and "CassetteMiss" in missing.stdout


def test_an_adapter_that_names_an_unknown_feature_is_refused():
    with pytest.raises(AopkitError, match=r"lacks names \['vision'\]"):

        class Misspelled(Adapter):  # defining it is the test
            prefix = "x"
            lacks = frozenset({"vision"})


CONFORMANCE = """
    import pytest
    from aopkit.testing.conformance import ProviderConformance
    from tests.plugins.openai.test_conformance import OpenAIAdapter

    class Adapter(OpenAIAdapter):
        lacks = frozenset({LACKS})

        def reply(self, answer, *, stream):
            body = super().reply(answer, stream=stream)
            BREAK
            return body

    class TestIt(ProviderConformance):
        adapter = Adapter()
"""


def conformance(tmp_path: Path, lacks: str, breaks: str, *args: str):
    root = Path(__file__).parents[3]
    source = CONFORMANCE.replace("LACKS", lacks).replace("BREAK", breaks)
    (tmp_path / "conftest.py").write_text(f"import sys\nsys.path.insert(0, {str(root)!r})\n")
    return run_pytest(tmp_path, source, "-o", "asyncio_mode=strict", *args)


def test_what_an_adapter_lacks_is_skipped_and_said(tmp_path):
    result = conformance(tmp_path, '"thinking", "images"', "pass", "-k", "thinking or image")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 skipped" in result.stdout and "openai declares it lacks images" in result.stdout
    assert "openai declares it lacks thinking" in result.stdout


def test_a_provider_that_misreads_its_server_fails_the_suite(tmp_path):
    """The suite can fail: a server whose token counts the model would misread (swapped)."""
    swapped = (
        'u = body.get("usage")\n'
        "            if u: u['prompt_tokens'], u['completion_tokens'] = "
        "u['completion_tokens'], u['prompt_tokens']"
    )
    result = conformance(tmp_path, "", swapped, "-k", "usage")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 failed" in result.stdout and "test_reported_usage_comes_through" in result.stdout
