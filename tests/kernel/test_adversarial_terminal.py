"""What reaches a terminal from hostile names and model text (escape sequences that clear the
screen, retitle the window or reverse a line), and the CLI running a program that closes its
own standard output."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

import aopkit
from aopkit import Agent, Msg, MsgHub, UserAgent, show_chat
from aopkit.faults import Fault, FaultReport
from tests.kernel.test_cli import env_for

AOPKIT = str(Path(sys.executable).with_name("aopkit"))
HOSTILE = "\x1b[2J\x1b]0;owned\x07\u202e\r"


class Says(Agent):
    def __init__(self, name, text, **kwargs):
        super().__init__(name, **kwargs)
        self.text = text

    async def reply(self, msg):
        return Msg(self.name, self.text, "assistant")


def assert_inert(text):
    assert not any(c in text for c in "\x1b\x07\u202e\r"), repr(text)


async def test_the_chat_view_escapes_control_characters_of_names_and_text(kernel):
    out = io.StringIO()
    stop = show_chat(kernel, file=out)
    agent = Says(f"ev\nil{HOSTILE}", f"line one\nline two{HOSTILE}", kernel=kernel)
    await agent("hi")
    stop()
    shown = out.getvalue()
    assert_inert(shown)
    assert "ev\\nil\\x1b[2J" in shown  # the name on its line, escaped
    assert "line one\nline two\\x1b[2J" in shown  # the text keeps its lines


async def test_a_terminal_user_sees_the_others_escaped(kernel, monkeypatch, capsys):
    async def ask(prompt):
        return "ok"

    monkeypatch.setattr("aopkit.terminal.ask", ask)
    you = UserAgent("you", kernel=kernel)
    other = Says(f"x{HOSTILE}", f"hello{HOSTILE}", kernel=kernel)
    async with MsgHub([other, you]):
        await aopkit.sequential([other, you])
    assert_inert(capsys.readouterr().out)


def test_the_fault_report_keeps_a_row_per_fault_whatever_the_model_said():
    report = FaultReport()
    detail = "the model said:\n" + HOSTILE + "x" * 500
    report.faults.append(Fault("malformed", f"scripted:{HOSTILE}", detail, 2, f"repair{HOSTILE}"))
    text = report.render()
    assert_inert(text)
    assert len(text.splitlines()) == 5  # title, header, rule, the fault, the summary


@pytest.mark.parametrize(
    "program",
    ["import sys\nsys.stdout.close()\n", "import os\nos.close(1)\n"],
    ids=["sys.stdout.close", "os.close(1)"],
)
def test_a_program_that_closes_its_stdout_ends_without_an_aopkit_traceback(tmp_path, program):
    (tmp_path / "prog.py").write_text(program)
    proc = subprocess.run(
        [AOPKIT, "run", "--usage", "prog.py"],
        capture_output=True,
        env=env_for(tmp_path),
        cwd=tmp_path,
        timeout=120,
    )
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    assert proc.returncode == 0
