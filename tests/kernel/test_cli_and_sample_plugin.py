"""The sample third-party plugin (tests/sample_plugin), installed by pip into the test
environment, is found through its entry point like any user's plugin."""

import json
import subprocess
import sys

import pytest

from aopkit import Kernel, Msg, UnknownBlock


def run_cli(*args, env=None):
    import os

    return subprocess.run(
        [sys.executable, "-m", "aopkit.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_sample_plugin_is_discovered_and_its_block_round_trips(kernel):
    poll_cls = kernel.block_types["sample.poll"]
    assert kernel.block_types.owners["sample.poll"] == "sample"
    msg = Msg("bot", [poll_cls("Tea or coffee?", ["tea", "coffee"])], "assistant")
    loaded = kernel.codec.loads(kernel.codec.dumps(msg))
    assert loaded == msg and type(loaded.content[0]) is poll_cls


def test_blocking_the_sample_plugin_removes_it_and_its_blocks_still_round_trip(kernel):
    text = kernel.codec.dumps(
        Msg("bot", [kernel.block_types["sample.poll"]("Q?", ["a"])], "assistant")
    )
    blocked = Kernel(environ={"AOPKIT_DISABLE_PLUGINS": "sample"})
    assert "sample.poll" not in blocked.block_types
    loaded = blocked.codec.loads(text)
    assert isinstance(loaded.content[0], UnknownBlock)
    assert blocked.codec.dumps(loaded) == text


def test_aopkit_plugins_prints_json():
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["sample"]["version"] == "1.2.3"
    assert rows["sample"]["registered"]["block_types"] == ["sample.poll"]
    assert "text" in rows["aopkit"]["registered"]["block_types"]


def test_aopkit_plugins_honours_the_block_list():
    result = run_cli("plugins", env={"AOPKIT_DISABLE_PLUGINS": "sample"})
    assert "sample" not in {row["name"] for row in json.loads(result.stdout)}


def test_plugin_subcommand_runs_through_the_console_script():
    import shutil

    script = shutil.which("aopkit", path=str(__import__("pathlib").Path(sys.executable).parent))
    if script is None:
        pytest.fail("the aopkit console script is not installed next to the interpreter")
    result = subprocess.run(
        [script, "sample-hello", "world"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello world from aopkit-sample-plugin\n"


def test_no_command_prints_help():
    result = run_cli()
    assert result.returncode == 2 and "plugins" in result.stdout
