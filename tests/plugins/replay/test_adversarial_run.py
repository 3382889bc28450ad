"""``aopkit run --replay FILE`` with a file that is not a cassette: one line naming the file and
what is wrong, status 2, before the program runs (not the program's traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernel.test_cli import env_for

AOPKIT = str(Path(sys.executable).with_name("aopkit"))
PROGRAM = "print('the program ran')\n"


@pytest.mark.parametrize(
    "content, says",
    [
        (b"{garbage", "is not valid JSON"),
        (b"[1, 2]", "not an aopkit cassette"),
        (b'{"aopkit_cassette": 99}', "not an aopkit cassette"),
        (b"\xff\xfe not utf-8", "not valid UTF-8"),
        (b"", "is not valid JSON"),
    ],
    ids=["garbage", "array", "version", "bytes", "empty"],
)
def test_a_file_that_is_no_cassette_is_a_usage_error_before_the_program_runs(
    tmp_path, content, says
):
    (tmp_path / "prog.py").write_text(PROGRAM)
    (tmp_path / "c.json").write_bytes(content)
    proc = subprocess.run(
        [AOPKIT, "run", "--replay", "c.json", "prog.py"],
        capture_output=True,
        env=env_for(tmp_path),
        cwd=tmp_path,
        timeout=120,
    )
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "the program ran" not in out and "Traceback" not in err
    assert err.startswith("--replay c.json: cassette") and says in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("mode", ["record", "replay"])
def test_a_relative_cassette_is_where_the_command_was_typed_though_the_program_moves(
    tmp_path, monkeypatch, mode
):
    """A program that changes its working folder before making its kernel: ``--record
    c.json`` still means the c.json beside the command, not one in the program's new folder."""
    from types import SimpleNamespace

    import aopkit
    from aopkit_replay.run import start

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text('{"aopkit_cassette": 1, "entries": []}')
    part = start(
        SimpleNamespace(
            record="c.json" if mode == "record" else None,
            replay="c.json" if mode == "replay" else None,
        )
    )
    assert part is not None
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # what the program does first
    kernel = aopkit.Kernel(load_entrypoints=False)
    part.attach(kernel)
    assert part.cassette is not None and part.cassette.path == tmp_path / "c.json"
