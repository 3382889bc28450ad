"""``aopkit run --studio``: the Studio of a program's kernel, served from its own thread while
the program runs its own event loop."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp

import aopkit
from aopkit.faults import Incident

AOPKIT = str(Path(sys.executable).with_name("aopkit"))

PROGRAM = """
import asyncio, pathlib, aopkit

async def main():
    async with aopkit.Kernel() as kernel:
        bot = aopkit.ModelAgent("bot", "scripted:bot", kernel=kernel)
        await bot(aopkit.Msg("user", "hi", "user"))
        print("said hi", flush=True)
        for _ in range(600):  # until the test has seen the conversation in the Studio
            if pathlib.Path("go").exists():
                break
            await asyncio.sleep(0.1)

asyncio.run(main())
"""


async def test_run_with_the_studio_shows_the_programs_conversation(tmp_path):
    (tmp_path / "prog.py").write_text(PROGRAM)
    (tmp_path / "config.toml").write_text(
        '[models."scripted:bot"]\nresponses = ["Hello from inside the program."]\n'
    )
    env = {
        **os.environ,
        "AOPKIT_CONFIG": str(tmp_path / "config.toml"),
        "AOPKIT_INCIDENTS": str(tmp_path / "incidents.jsonl"),
    }
    proc = await asyncio.create_subprocess_exec(
        AOPKIT,
        "run",
        "--studio",
        "prog.py",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    try:
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert line.startswith("aopkit studio: http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].strip()
        base, token = url.split("/?token=")
        seen = []
        auth = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession(headers=auth) as http,
            http.ws_connect(f"{base}/ws?since=0") as ws,
        ):
            while not any("Hello from inside the program." in s for s in seen):
                message = await ws.receive(timeout=30)
                assert message.type == aiohttp.WSMsgType.TEXT, message
                seen.append(message.data)
        events = [e for s in seen for e in json.loads(s).get("events", [])]
        assert {"reply_started", "model_call_finished", "message_sent"} <= {
            e["type"] for e in events
        }
    finally:
        (tmp_path / "go").touch()
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert out.decode() == "said hi\n"


async def test_an_incident_crosses_from_the_programs_loop_to_the_page(tmp_path):
    from aopkit_studio.run import StudioRun

    kernel = aopkit.Kernel(environ={"AOPKIT_INCIDENTS": str(tmp_path / "incidents.jsonl")})
    run = StudioRun(port=0)
    run.interactive = True  # as if a person sat at the terminal
    try:
        run.attach(kernel)
        (studio,) = run.studios
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        asked = asyncio.ensure_future(
            kernel.escalate(Incident("m", "T", "bad", "q", schema=schema))
        )
        for _ in range(100):
            if studio._incidents:
                break
            await asyncio.sleep(0.05)
        (incident,) = studio._incidents
        url = f"http://127.0.0.1:{studio.port}/api/incidents/{incident}"
        answer = {"action": "answer", "answer": '{"n": 7}'}
        auth = {"Authorization": f"Bearer {studio.token}"}
        async with (
            aiohttp.ClientSession(headers=auth) as http,
            http.post(url, json=answer) as response,
        ):
            assert response.status == 200, await response.text()
        resolution = await asyncio.wait_for(asked, 10)
        assert (resolution.action, resolution.answer) == ("answer", '{"n": 7}')
    finally:
        run.interactive = False  # nobody to press Enter
        await asyncio.to_thread(run.finish)
        await kernel.aclose()
    assert not run.thread.is_alive() and run.loop.is_closed()
    assert kernel.pm.get_plugin(f"studio-{studio.port}") is None, "unregistered on finish"


async def test_a_program_that_cancels_its_question_leaves_the_page_clean(tmp_path):
    from aopkit_studio.run import StudioRun

    kernel = aopkit.Kernel(environ={"AOPKIT_INCIDENTS": str(tmp_path / "incidents.jsonl")})
    run = StudioRun(port=0)
    run.interactive = True
    try:
        run.attach(kernel)
        (studio,) = run.studios
        asked = asyncio.ensure_future(kernel.escalate(Incident("m", "T", "bad", "q")))
        for _ in range(100):
            if studio._incidents:
                break
            await asyncio.sleep(0.05)
        assert studio._incidents
        asked.cancel()
        for _ in range(100):
            if not studio._incidents:
                break
            await asyncio.sleep(0.05)
        assert not studio._incidents, "the cancelled question is withdrawn from the page"
    finally:
        run.interactive = False  # nobody to press Enter
        await asyncio.to_thread(run.finish)
        await kernel.aclose()
