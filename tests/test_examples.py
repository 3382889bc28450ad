"""Every example runs, with scripted models, and does what its docstring says."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import aopkit
from aopkit.faults import FaultPolicy, resolve
from aopkit.structured import Target
from tests import docrun

EXAMPLES = Path(__file__).parents[1] / "examples"
# Arguments for a quick offline run; an example not listed runs with none.
QUICK_RUN = {"distributed_simulation": ["--agents", "40", "--rounds", "2"]}


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_group_discussion():
    lines = await load("group_discussion").main(None)
    assert lines[0] == "host: Tea or coffee for the afternoon break?"
    assert lines[-2].startswith("bob: Then let us agree")
    assert lines[-1] == "you: Agreed."
    assert len(lines) == 7


async def test_structured_critique(capsys):
    module = load("structured_critique")
    budget = await module.main(None)
    assert budget.total == 420 == sum(line.cost for line in budget.lines)
    assert "tier 3 (pairwise)" in capsys.readouterr().out


async def test_the_example_plugin_is_its_own_distribution(kernel):
    import aopkit_example

    rows = {row["name"]: row for row in kernel.plugins()}
    assert rows["example"]["distribution"] == "aopkit-example-plugin"
    assert rows["example"]["registered"] == {
        "block_types": ["example.rating"],
        "models": ["parrot"],
        "correctors": ["strip-bom"],
    }
    assert rows["acme"]["registered"] == {"models": ["acme"], "formatters": ["acme"]}
    parrot = kernel.model("parrot:any")
    assert (await parrot([aopkit.Msg("u", "polly", "user")])).text == "polly"
    rating = kernel.block_types["example.rating"](stars=4)
    msg = aopkit.Msg("critic", [rating], "assistant")
    assert kernel.codec.loads(kernel.codec.dumps(msg)) == msg

    bom = kernel.model("scripted:x", responses=['\ufeff{"stars": 3}'])
    target = Target.json_object("rating", {"type": "object", "required": ["stars"]})
    policy = FaultPolicy(correctors=("strip-bom",), critics=())
    assert await resolve(bom, [aopkit.Msg("u", "rate it", "user")], target, policy=policy) == {
        "stars": 3
    }
    counter = aopkit_example.EventCounter()
    kernel.register(counter, "counter")
    await parrot([aopkit.Msg("u", "again", "user")])
    assert counter.counts == {"model_call_started": 1, "model_call_finished": 1}


async def test_debate(capsys):
    module = load("debate")
    lines = await module.main(None)
    assert lines == [
        "user: Motion: a four-day work week.",
        "pro: 368 free hours a year!",
        "con: The work does not shrink.",
        "judge: Pro wins: a number beats a worry.",
    ]
    shown = capsys.readouterr().err.splitlines()
    assert shown[1:3] == [
        'pro: → calculate({"a": 46, "op": "*", "b": 8})',
        "tools: ← calculate: 368.0",
    ]
    assert len(shown) == 6
    source = (EXAMPLES / "debate.py").read_text().splitlines()
    assert len(source) <= 40, "the debate is short: the API needs no wiring"


@pytest.mark.parametrize("name", ["group_discussion", "structured_critique", "debate"])
def test_examples_have_a_docstring_that_says_how_to_run_them(name):
    assert "python " in (load(name).__doc__ or "")


async def test_react_agent_with_tools():
    note, total, computed, answer = await load("react_tools").main(None)
    assert "grows 20%" in note
    assert "1250" in total
    assert computed.strip().endswith("1500")
    assert answer.endswith("that is 1500.")


def test_the_example_plugin_passes_the_conformance_suite_as_a_third_party_would():
    """Its own tests, run from its own folder: aopkit's fixtures (no import, through the
    pytest11 entry point) and the conformance suite with the plugin's adapter."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs"],
        cwd=EXAMPLES / "custom_plugin",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "acme declares it lacks tools" in result.stdout
    assert " passed, 8 skipped" in result.stdout, result.stdout


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.stem)
def test_every_example_runs_as_a_script_and_closes_what_it_opens(script: Path):
    """As a user runs it (``python examples/x.py``), offline: no traceback, no unclosed client
    session, no ResourceWarning (see tests/docrun.py)."""
    outcome = docrun.run_script(script, *QUICK_RUN.get(script.stem, []), timeout=180)
    assert outcome.ok, outcome.report


def test_an_example_that_leaves_its_kernel_open_fails(tmp_path: Path):
    leaky = tmp_path / "leaky.py"
    leaky.write_text(
        "import asyncio, aopkit\n"
        "kernel = aopkit.Kernel()\n"
        "async def main():\n"
        "    kernel.pool.session()  # what the first call of an HTTP model does\n"
        "asyncio.run(main())\n"
    )
    outcome = docrun.run_script(leaky)
    assert not outcome.ok
    assert "Unclosed client session" in outcome.report
