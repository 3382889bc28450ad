"""The ``aopkit`` command line, driven as a user drives it: a subprocess, its stdin and stdout,
real pipes and real signals. Models are the ``scripted:`` provider (scripted through a config
file) and the openai provider against a loopback fake server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aopkit.testing.fakes.openai import Failure, FakeOpenAI, call, completion

AOPKIT = str(Path(sys.executable).with_name("aopkit"))


def env_for(tmp_path: Path, models: dict | None = None, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: scripted models from a config file, nothing from home."""
    config = tmp_path / "config.toml"
    lines = []
    for name, responses in (models or {}).items():
        lines += [f'[models."{name}"]', f"responses = {json.dumps(responses)}"]
    config.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    return {
        **env,
        "AOPKIT_CONFIG": str(config),
        "AOPKIT_INCIDENTS": str(tmp_path / "incidents.jsonl"),
        **extra,
    }


async def cli(
    *args: str, env: dict[str, str], stdin: str = "", cwd: Path | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        AOPKIT,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    return proc.returncode, out.decode(), err.decode()


async def openai_server(serve, *replies) -> tuple[FakeOpenAI, str]:
    fake = FakeOpenAI(*replies, key="sk-cli-test")
    return fake, await fake.start(serve)


def openai_env(tmp_path: Path, base_url: str, models: dict | None = None) -> dict[str, str]:
    return env_for(tmp_path, models, OPENAI_BASE_URL=base_url, OPENAI_API_KEY="sk-cli-test")


# -- version, python -m, usage errors ----------------------------------------------------------
async def test_version_and_python_m_aopkit_are_the_same_cli(tmp_path):
    import aopkit

    env = env_for(tmp_path)
    code, out, _ = await cli("--version", env=env)
    assert (code, out) == (0, f"aopkit {aopkit.__version__}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "aopkit", "--version"], capture_output=True, text=True, env=env
    )
    assert (proc.returncode, proc.stdout) == (0, out)
    proc = subprocess.run(
        [sys.executable, "-m", "aopkit", "plugins"], capture_output=True, text=True, env=env
    )
    assert "scripted" in {row["name"] for row in json.loads(proc.stdout)}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "--bogus", "x.py"], "unrecognized arguments: --bogus"),
        (["chat"], "the following arguments are required: PROVIDER:MODEL"),
        (["chat", "nope:model"], "no model provider named 'nope'"),
        (["chat", "scripted"], "model names look like 'provider:model'"),
        (["chat", "scripted:x", "--tools", "no_such_module_here"], "no module named"),
        (["chat", "scripted:x", "--tools", "json"], "module 'json' has no @tool or Toolkit"),
        (["chat", "scripted:x", "--tools", "missing.py"], "aopkit chat: no such file"),
        (["run", "missing.py"], "no such file: missing.py"),
        (["run", "os.path:no_such_function"], "has no attribute 'no_such_function'"),
        (["run", "os:sep"], "is a str, not a callable"),
        (["run", "no_such_module_here:main"], "no module named 'no_such_module_here'"),
        (["run", "--replay", "missing.json", "x.py"], "--replay missing.json: no such cassette"),
        (["run", "--record", "a.json", "--replay", "b.json", "x.py"], "give one of the two"),
        (["demo", "--model", "nope:model"], "no model provider named 'nope'"),
    ],
)
async def test_wrong_usage_is_one_line_and_status_2(tmp_path, args, says):
    code, out, err = await cli(*args, env=env_for(tmp_path), cwd=tmp_path)
    assert code == 2, (out, err)
    assert says in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


async def test_a_missing_api_key_is_one_line_and_status_2(tmp_path, serve):
    fake, base = await openai_server(serve)
    env = env_for(tmp_path, OPENAI_BASE_URL=base)  # no OPENAI_API_KEY
    code, out, err = await cli("chat", "openai:gpt-test", env=env, stdin="hello\n")
    assert code == 2, (out, err)
    assert "401" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert len(fake.requests) == 1, "one refused call ends the chat"


async def test_secrets_do_not_reach_the_error_line(tmp_path, serve):
    fake, base = await openai_server(serve)
    env = env_for(tmp_path, OPENAI_BASE_URL=base, OPENAI_API_KEY="sk-wrong-secret-123")
    code, out, err = await cli("chat", "openai:gpt-test", env=env, stdin="hello\n")
    assert code == 2 and "401" in err and "check the provider's API key" in err, err
    assert fake.headers[0]["Authorization"] == "Bearer sk-wrong-secret-123"
    assert "sk-wrong-secret-123" not in out + err, "the server echoes the key: it is scrubbed"


# -- closed pipes ------------------------------------------------------------------------------
def run_into_closed_pipe(
    args: list[str], env: dict[str, str], cwd: Path, stdin: str = ""
) -> tuple[int, str]:
    """Run with stdout a pipe whose reader has already gone (``| head`` after its line)."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [AOPKIT, *args],
            stdout=write,
            stderr=subprocess.PIPE,
            input=stdin.encode(),
            env=env,
            cwd=cwd,
            timeout=120,
        )
    finally:
        os.close(write)
    return proc.returncode, proc.stderr.decode()


def test_plugins_into_a_closed_pipe_ends_quietly(tmp_path):
    code, err = run_into_closed_pipe(["plugins"], env_for(tmp_path), tmp_path)
    assert (code, err) == (141, "")


def test_plugins_piped_to_head_ends_quietly(tmp_path):
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"'{AOPKIT}' plugins | head -1"],
        capture_output=True,
        text=True,
        env=env_for(tmp_path),
        timeout=120,
    )
    assert proc.stdout == "[\n"
    assert proc.stderr == "" and proc.returncode in (0, 141)


def test_a_program_printing_into_a_closed_pipe_ends_quietly(tmp_path):
    (tmp_path / "chatty.py").write_text("for i in range(100_000):\n    print('line', i)\n")
    code, err = run_into_closed_pipe(["run", "chatty.py"], env_for(tmp_path), tmp_path)
    assert (code, err) == (141, "")


def test_a_chat_into_a_closed_pipe_ends_quietly_after_its_first_answer(tmp_path):
    env = env_for(tmp_path, {"scripted:bot": ["A long streamed answer, " * 20, "never asked"]})
    code, err = run_into_closed_pipe(["chat", "scripted:bot"], env, tmp_path, "one\ntwo\n")
    assert code == 141 and "Traceback" not in err and "Error" not in err, err


def test_the_demo_into_a_closed_pipe_ends_quietly(tmp_path):
    code, err = run_into_closed_pipe(["demo"], env_for(tmp_path), tmp_path)
    assert err == "" and code in (0, 141), err


# -- aopkit chat -------------------------------------------------------------------------------
async def test_chat_with_a_scripted_model_keeps_the_history_and_reports_on_exit(tmp_path):
    env = env_for(tmp_path, {"scripted:bot": ["Hello, I stream in small pieces.", "Still here."]})
    code, out, err = await cli(
        "chat", "scripted:bot", "--system", "Be brief.", env=env, stdin="hi\n\nagain\n"
    )
    assert code == 0, err
    assert out == "Hello, I stream in small pieces.\nStill here.\n"
    assert "Fault report: no faults." in err


async def test_chat_streams_from_an_openai_server_with_tools_and_history(tmp_path, serve):
    (tmp_path / "mytools.py").write_text(
        textwrap.dedent(
            '''
            from aopkit import Toolkit, tool

            @tool
            def add(a: int, b: int) -> int:
                """Add two numbers."""
                return a + b

            def shout(text: str) -> str:
                """Say it loudly."""
                return text.upper()

            kit = Toolkit([shout])
            helper = len  # not a tool: left out
            '''
        )
    )
    fake, base = await openai_server(
        serve,
        completion(tool_calls=[call("c1", "add", {"a": 2, "b": 3})]),
        completion("The sum is 5, as the tool says."),
        completion("You asked me to add 2 and 3."),
    )
    code, out, err = await cli(
        "chat",
        "openai:gpt-test",
        "--tools",
        "mytools",
        "--system",
        "You add.",
        env=openai_env(tmp_path, base),
        stdin="add 2 and 3\nwhat did I ask?\n",
        cwd=tmp_path,
    )
    assert code == 0, err
    assert "→ add(" in out and "← add: 5" in out
    assert out.endswith("The sum is 5, as the tool says.\nYou asked me to add 2 and 3.\n"), out
    assert all(r["stream"] for r in fake.requests), "the chat streams"
    assert {t["function"]["name"] for t in fake.requests[0]["tools"]} == {"add", "shout"}
    last = fake.requests[-1]["messages"]
    assert last[0] == {"role": "system", "content": "You add."}
    said = [m.get("content") for m in last if m["role"] in ("user", "assistant")]
    assert "add 2 and 3" in said and "The sum is 5, as the tool says." in said
    assert said[-1] == "what did I ask?"
    assert "Fault report" in err and "sk-cli-test" not in out + err


async def test_a_failing_turn_is_reported_and_the_chat_goes_on(tmp_path, serve):
    fake, base = await openai_server(
        serve, Failure(400, "This model cannot do that."), completion("Fine now.")
    )
    code, out, err = await cli(
        "chat", "openai:gpt-test", env=openai_env(tmp_path, base), stdin="one\ntwo\n"
    )
    assert code == 1, err
    assert "aopkit chat: error:" in err and "cannot do that" in err and "Traceback" not in err
    assert out == "Fine now.\n"
    assert [r["messages"][-1]["content"] for r in fake.requests] == ["one", "two"]


# -- aopkit run --------------------------------------------------------------------------------
PROGRAM = """
import asyncio, sys
import aopkit

async def main():
    async with aopkit.Kernel() as kernel:
        bot = aopkit.ModelAgent("bot", "openai:gpt-test", kernel=kernel)
        reply = await bot(aopkit.Msg("user", "hi " + " ".join(sys.argv[1:]), "user"))
        print("program got:", reply.text)
    helper = aopkit.ModelAgent("helper", "scripted:helper")  # on the default kernel
    print("helper said:", (await helper(aopkit.Msg("user", "and you?", "user"))).text)

if __name__ == "__main__":
    asyncio.run(main())
"""


async def test_run_wires_every_kernel_of_a_script(tmp_path, serve):
    (tmp_path / "prog.py").write_text(PROGRAM)
    fake, base = await openai_server(serve, completion("Hello from the server."))
    env = openai_env(tmp_path, base, {"scripted:helper": ["Me too."]})
    code, out, err = await cli(
        "run", "--chat", "--trace", "trace.jsonl", "--usage", "prog.py", "x", "y",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert out == "program got: Hello from the server.\nhelper said: Me too.\n"
    assert fake.requests[0]["messages"][-1]["content"] == "hi x y", "the program's own argv"
    assert "bot: Hello from the server." in err and "helper: Me too." in err, "the CHAT view"
    assert err.count("Fault report: no faults.") == 2, "a report for each of the two kernels"
    events = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    said = [json.dumps(e["msg"]) for e in events if e["type"] == "message_sent"]
    assert len(said) == 2, said
    assert "Hello from the server." in said[0] and "Me too." in said[1], said
    assert {e["model"] for e in events if e["type"] == "model_call_finished"} == {
        "openai:gpt-test",
        "scripted:helper",
    }


async def test_record_then_replay_offline_without_a_key(tmp_path, serve):
    (tmp_path / "prog.py").write_text(PROGRAM)
    fake, base = await openai_server(serve, completion("Recorded answer."))
    env = openai_env(tmp_path, base, {"scripted:helper": ["Me too."]})
    code, out, err = await cli("run", "--record", "c.json", "prog.py", env=env, cwd=tmp_path)
    assert code == 0, err
    recorded = json.loads((tmp_path / "c.json").read_text())
    assert len(recorded["interactions"]) == 2, "both kernels' calls, in one cassette"
    assert "sk-cli-test" not in json.dumps(recorded)
    # Replay: no server, no key, and a helper with nothing scripted; the answers are the same.
    offline = env_for(tmp_path, OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    code, again, err = await cli("run", "--replay", "c.json", "prog.py", env=offline, cwd=tmp_path)
    assert code == 0, err
    assert again == out == "program got: Recorded answer.\nhelper said: Me too.\n"
    assert len(fake.requests) == 1


async def test_a_replay_miss_is_the_program_failing_with_its_traceback(tmp_path, serve):
    (tmp_path / "prog.py").write_text(PROGRAM)
    (tmp_path / "c.json").write_text('{"aopkit_cassette": 1, "interactions": []}\n')
    code, _, err = await cli(
        "run", "--replay", "c.json", "prog.py", env=env_for(tmp_path), cwd=tmp_path
    )
    assert code == 1 and "Traceback" in err
    assert "has no recording of openai:gpt-test" in err


MODULE = """
import aopkit

async def main():
    kernel = aopkit.default_kernel()
    bot = aopkit.ModelAgent("bot", "scripted:bot", kernel=kernel)
    print((await bot(aopkit.Msg("user", "hi", "user"))).text)
    return 3

def sync_main():
    print("sync", len(aopkit.default_kernel().plugins()) > 0)

def fails():
    raise ValueError("the program's own bug")

def exits():
    raise SystemExit("exiting with a message")
"""


@pytest.mark.parametrize(
    ("target", "code", "out", "err"),
    [
        ("mod:main", 3, "Hi from the module.\n", "bot: Hi from the module."),
        ("mod:sync_main", 0, "sync True\n", ""),
        ("mod:fails", 1, "", "ValueError: the program's own bug"),
        ("mod:exits", 1, "", "exiting with a message"),
        ("mod.py:main", 3, "Hi from the module.\n", "bot: Hi from the module."),
    ],
)
async def test_run_a_callable(tmp_path, target, code, out, err):
    (tmp_path / "mod.py").write_text(MODULE)
    env = env_for(tmp_path, {"scripted:bot": ["Hi from the module."]})
    got = await cli("run", "--chat", target, env=env, cwd=tmp_path)
    assert got[0] == code and got[1] == out and err in got[2], got


async def test_run_a_module_as_python_m_does(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("import sys\nprint('main of pkg', sys.argv[1:])\n")
    code, out, err = await cli("run", "pkg", "--flag", env=env_for(tmp_path), cwd=tmp_path)
    assert (code, out) == (0, "main of pkg ['--flag']\n"), err


async def test_a_module_whose_package_fails_to_import_shows_why_not_no_such_module(tmp_path):
    """``aopkit run pkg.tool`` where pkg's own import needs a missing dependency: the missing
    dependency is the story (as ``python -m pkg.tool`` tells it), not "no module pkg.tool"."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import no_such_dependency_here\n")
    (pkg / "tool.py").write_text("print('ran')\n")
    code, out, err = await cli("run", "pkg.tool", env=env_for(tmp_path), cwd=tmp_path)
    assert code != 0 and out == ""
    assert "no_such_dependency_here" in err, err
    assert "no module named 'pkg.tool'" not in err, err


# -- Ctrl-C ------------------------------------------------------------------------------------
async def interrupt(args: list[str], env: dict[str, str], cwd: Path, ready: str) -> tuple:
    """Start the command, wait until it prints ``ready``, send SIGINT, collect the ending."""
    proc = await asyncio.create_subprocess_exec(
        AOPKIT,
        *args,
        stdin=asyncio.subprocess.PIPE,  # kept open: a chat waits for the next line
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    assert proc.stdout is not None
    seen = b""
    while ready.encode() not in seen:
        chunk = await asyncio.wait_for(proc.stdout.read(100), 60)
        assert chunk, f"ended before {ready!r}: {seen!r}"
        seen += chunk
    await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, (seen + out).decode(), err.decode()


async def test_ctrl_c_ends_a_run_cleanly(tmp_path):
    (tmp_path / "slow.py").write_text(
        "import asyncio, aopkit\nasync def main():\n    aopkit.default_kernel()\n"
        "    print('ready', flush=True)\n"
        "    await asyncio.sleep(60)\nasyncio.run(main())\n"
    )
    code, out, err = await interrupt(
        ["run", "--usage", "--trace", "t.jsonl", "slow.py"], env_for(tmp_path), tmp_path, "ready"
    )
    assert code == 130 and "Traceback" not in err, err
    assert out == "ready\n" and "aopkit run: interrupted" in err
    assert "Fault report: no faults." in err, "the run's parts finish: the usage report"
    assert (tmp_path / "t.jsonl").exists()


async def test_ctrl_c_ends_a_chat_waiting_for_input(tmp_path):
    env = env_for(tmp_path, {"scripted:bot": ["First answer."]})
    proc = await asyncio.create_subprocess_exec(
        AOPKIT,
        "chat",
        "scripted:bot",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"hello\n")
    await proc.stdin.drain()
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line == b"First answer.\n"
    await asyncio.sleep(0.2)  # now blocked reading the next line, which never comes
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130 and "Traceback" not in err.decode(), err
    assert out == b"" and "aopkit chat: interrupted" in err.decode()
    assert "Fault report: no faults." in err.decode()


# -- aopkit demo -------------------------------------------------------------------------------
async def test_a_demo_model_that_never_complies_ends_with_the_fault_report(tmp_path):
    env = env_for(tmp_path, {"scripted:garbage": ["blah, not what you asked"] * 40})
    code, out, err = await cli("demo", "--model", "scripted:garbage", env=env)
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    assert "No verdict: the debate failed." in out and "Fault report:" in out
    assert "unresolved" in out and "aopkit demo: error:" in err


# -- reading the terminal ----------------------------------------------------------------------
HUMAN = """
import asyncio, aopkit

async def main():
    ann = aopkit.UserAgent("ann")
    for _ in range(3):
        said = await ann(aopkit.Msg("host", "your turn", "user"))
        print("ann said:", said.text, flush=True)

asyncio.run(main())
"""


async def test_a_user_agent_reads_piped_lines_and_none_is_lost(tmp_path):
    (tmp_path / "human.py").write_text(HUMAN)
    code, out, err = await cli(
        "run", "human.py", env=env_for(tmp_path), cwd=tmp_path, stdin="one\ntwo\nthree\n"
    )
    assert code == 0, err
    # before each prompt the human is shown what the others said since its last turn
    turns = "host: your turn\nann: "
    assert out.replace(turns, "") == "ann said: one\nann said: two\nann said: three\n"


async def test_ctrl_c_ends_a_run_whose_user_agent_waits_for_input(tmp_path):
    (tmp_path / "human.py").write_text(HUMAN)
    code, out, err = await interrupt(
        ["run", "human.py"], env_for(tmp_path), tmp_path, ready="ann: "
    )  # stdin stays open: the user agent waits for a line that never comes
    assert code == 130 and "Traceback" not in err, err
    assert out == "host: your turn\nann: " and "aopkit run: interrupted" in err


async def test_chat_on_a_terminal_prompts_and_ends_on_ctrl_c(tmp_path):
    import pty

    env = env_for(tmp_path, {"scripted:bot": ["Hello, terminal."]})
    leader, follower = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        AOPKIT, "chat", "scripted:bot", stdin=follower, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    seen = b""

    async def until(text: bytes) -> None:
        nonlocal seen
        while text not in seen:
            seen += await asyncio.wait_for(asyncio.to_thread(os.read, leader, 1000), 60)

    try:
        await until(b"you> ")
        os.write(leader, b"hi\n")
        await until(b"Hello, terminal.")
        await until(b"you> ")
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)
        with contextlib.suppress(OSError):  # the terminal is gone with its last reader
            await until(b"aopkit chat: interrupted")
    finally:
        os.close(leader)
    assert proc.returncode == 130
    assert b"Traceback" not in seen and b"Fault report: no faults." in seen


async def test_ctrl_c_mid_answer_ends_a_chat_at_once(tmp_path, serve):
    from aiohttp import web

    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "gpt-test",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Half an"}}],
        }
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await asyncio.sleep(120)  # the rest never comes
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", stalls)
    base = await serve(app) + "/v1"
    proc = await asyncio.create_subprocess_exec(
        AOPKIT,
        "chat",
        "openai:gpt-test",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=openai_env(tmp_path, base),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"tell me everything\n")
    await proc.stdin.drain()
    assert await asyncio.wait_for(proc.stdout.readexactly(7), 60) == b"Half an"
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 130 and "Traceback" not in err.decode(), err
    assert out == b"\n", "the half line is ended"
    assert "aopkit chat: interrupted" in err.decode() and "Fault report" in err.decode()
