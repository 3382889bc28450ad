"""Where a long run is (``aopkit.show_progress``, ``kernel.progress``): counters kept without
events, drawn in place on a terminal at most ten times a second, and nothing at all on a file,
a pipe or a closed terminal."""

from __future__ import annotations

import asyncio
import io
import os
import pty
import subprocess
import sys
import textwrap
import time

import pytest

import aopkit
from aopkit import Budget, BudgetExceeded, ModelAgent, Msg
from aopkit.models import ModelUnavailable
from aopkit.progress import REDRAW
from aopkit.retry import RetryPolicy

CLEAR = "\r\x1b[K"


class Terminal:
    """A pseudo-terminal: what a program writes to ``file`` is read back from the other end."""

    def __init__(self) -> None:
        self.leader, follower = pty.openpty()
        self.file = open(follower, "w", encoding="utf-8")  # noqa: SIM115

    def read(self) -> str:
        os.set_blocking(self.leader, False)
        chunks = []
        while True:
            try:
                chunk = os.read(self.leader, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")

    def close(self) -> None:
        self.file.close()
        os.close(self.leader)


@pytest.fixture
def terminal():
    term = Terminal()
    yield term
    term.close()


def shown(text: str) -> str:
    """What the terminal shows last on the progress line."""
    return text.rsplit(CLEAR, 1)[-1]


async def test_nothing_is_drawn_where_output_is_not_a_terminal(kernel, tmp_path):
    for file in (io.StringIO(), open(tmp_path / "log.txt", "w")):  # noqa: SIM115
        stop = aopkit.show_progress(kernel, file=file)
        assert kernel.progress.view is None, "not a terminal: not even a listener"
        kernel.progress.round_started(10)
        kernel.progress.advanced(10)
        stop()
        stop()
        file.close()
    assert (tmp_path / "log.txt").read_text() == ""
    closed = io.StringIO()
    closed.close()
    aopkit.show_progress(kernel, file=closed)()  # a closed file is no terminal either


async def test_rounds_replies_calls_and_faults_are_drawn_and_cleared(kernel, terminal):
    stop = aopkit.show_progress(kernel, file=terminal.file)
    progress = kernel.progress
    progress.round_started(1_000_000)
    progress.advanced(250_000)
    progress.changed(now=True)
    line = shown(terminal.read())
    assert line.startswith("round 1 ▕██▌       ▏"), line
    assert "250,000/1,000,000 replied" in line and "0 calls in flight" in line, line
    assert "0 faults" in line, line

    busy = ModelUnavailable("scripted:m", "overloaded", status=503, retry_after=0.001)
    model = kernel.model("scripted:m", responses=[busy, "fine"])
    model.retry = RetryPolicy(attempts=3, initial=0.001, jitter=0)
    await ModelAgent("a", model, kernel=kernel)("go")
    progress.changed(now=True)
    assert "1 fault" in shown(terminal.read())

    stop()
    assert terminal.read() == CLEAR, "stopping takes the line away"
    assert progress.view is None
    progress.advanced()
    assert terminal.read() == ""
    stop()


async def test_a_busy_loop_draws_at_most_ten_times_a_second(kernel, terminal):
    aopkit.show_progress(kernel, file=terminal.file)
    progress = kernel.progress
    progress.round_started(200_000)
    terminal.read()
    started = time.monotonic()
    for _ in range(200_000):
        progress.advanced()
    elapsed = time.monotonic() - started
    drawings = terminal.read().count(CLEAR)
    assert drawings <= elapsed / REDRAW + 2, (drawings, elapsed)
    assert progress.replied == 200_000


async def test_calls_in_flight_count_while_they_wait_and_never_leak(kernel, terminal):
    aopkit.show_progress(kernel, file=terminal.file)
    gate = asyncio.Event()

    class Slow(aopkit.models.ChatModel):
        provider = "slow"

        async def _complete(self, **request):
            await gate.wait()
            return aopkit.models.ChatResponse([aopkit.TextBlock("done")], aopkit.Usage(1, 1))

    model = Slow("slow:m", kernel=kernel)
    agents = [ModelAgent(f"a{i}", model, kernel=kernel) for i in range(3)]
    tasks = [asyncio.create_task(a("hi")) for a in agents]
    for _ in range(20):
        await asyncio.sleep(0)
    assert kernel.progress.in_flight == 3
    kernel.progress.changed(now=True)
    assert "3 calls in flight" in shown(terminal.read())
    tasks[0].cancel()
    gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert kernel.progress.in_flight == 0, "finished, failed or cancelled: each call ends once"

    broken = kernel.model("scripted:x", responses=[ValueError("no")])
    failing = ModelAgent("f", broken, kernel=kernel)
    with pytest.raises(aopkit.ReplyError):
        await failing("hi")
    refused = ModelAgent("r", kernel.model("scripted:y", responses=["x"]), kernel=kernel)
    refused.budget = Budget(calls=0)
    with pytest.raises(BudgetExceeded):
        await refused("hi")
    assert kernel.progress.in_flight == 0, "a refused call never started"


async def test_a_chat_line_goes_above_the_progress_line(kernel, terminal):
    stop_chat = aopkit.show_chat(kernel, file=terminal.file)
    stop = aopkit.show_progress(kernel, file=terminal.file)
    kernel.progress.round_started(2)
    terminal.read()

    class Echo(aopkit.Agent):
        async def reply(self, msg):
            return Msg(self.name, "hello", "assistant")

    await Echo("ada", kernel=kernel)("hi")
    out = terminal.read()
    assert out == CLEAR + "user: hi\nada: hello\n", "the line cleared, then the messages"
    stop()
    stop_chat()


async def test_a_terminal_that_goes_away_stops_the_drawing_quietly(kernel, terminal):
    aopkit.show_progress(kernel, file=terminal.file)
    terminal.file.close()
    kernel.progress.round_started(5)  # writing fails: the view is dropped, the run goes on
    assert kernel.progress.view is None
    kernel.progress.advanced(5)


async def test_showing_again_replaces_the_bar(kernel, terminal):
    first = aopkit.show_progress(kernel, file=terminal.file)
    second = aopkit.show_progress(kernel, file=terminal.file)
    assert kernel.progress.view is not None
    first()  # the old stop no longer owns the view
    assert kernel.progress.view is not None
    second()
    assert kernel.progress.view is None


PROGRAM = """
import asyncio
import aopkit

async def main():
    kernel = aopkit.Kernel()
    kernel.progress.round_started(3)
    kernel.progress.advanced(3)
    kernel.progress.changed(now=True)
    print("done")
    await kernel.aclose()

asyncio.run(main())
"""


def test_aopkit_run_progress_draws_on_a_terminal_and_not_into_a_pipe(tmp_path):
    (tmp_path / "prog.py").write_text(textwrap.dedent(PROGRAM))
    command = [sys.executable, "-m", "aopkit", "run", "--progress", "prog.py"]
    env = {**os.environ, "AOPKIT_PLUGINS": "scripted"}
    piped = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "done\n" and piped.stderr == ""

    term = Terminal()
    try:
        done = subprocess.run(
            command, cwd=tmp_path, stderr=term.file, stdout=subprocess.PIPE, env=env
        )
        assert done.returncode == 0
        drawn = term.read()
    finally:
        term.close()
    assert "3/3 replied" in drawn, repr(drawn)
    assert drawn.endswith(CLEAR), "the line is cleared at the end"


async def test_a_pool_round_reports_its_agents_as_they_answer(kernel, terminal):
    class Quick(aopkit.Agent):
        async def reply(self, msg):
            return Msg(self.name, "x", "assistant")

    class Slow(aopkit.Agent):
        async def reply(self, msg):
            await asyncio.sleep(0)
            return Msg(self.name, "y", "assistant")

    class Broken(aopkit.Agent):
        async def reply(self, msg):
            raise ValueError("no")

    agents = [Quick(f"q{i}", kernel=kernel) for i in range(25_000)]
    agents += [Slow("s", kernel=kernel), Broken("b", kernel=kernel)]
    seen = []
    kernel.progress.view = lambda p: seen.append((p.round, p.agents, p.replied))
    rounds = aopkit.Rounds(aopkit.pools(agents, size=20_000), run="r")
    await rounds.play("go")
    await rounds.play("again")
    assert seen[0] == (1, 25_002, 0) and seen[-1] == (2, 25_002, 25_002), seen[-1]
    assert kernel.progress.replied == 25_002, "every agent counted once, failures included"
    assert all(0 <= replied <= 25_002 for _, _, replied in seen)
