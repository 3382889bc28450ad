"""``aopkit serve`` as a real process: it prints its URL (and a token it made), answers, and
stops cleanly on SIGINT or SIGTERM; a restart on the same store continues a conversation."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import openai
import pytest

from aopkit.cli import main

ROOT = Path(__file__).parents[3]
TARGET = "tests.contrib.serve.agents:recall"


async def launch(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aopkit",
        "serve",
        *args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def started(process: asyncio.subprocess.Process, lines: int) -> list[str]:
    assert process.stdout is not None
    said = []
    for _ in range(lines):
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line, (await process.stderr.read()).decode()  # type: ignore[union-attr]
        said.append(line.decode().strip())
    return said


def client(url: str, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{url}v1",
        api_key=token,
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(trust_env=False),
    )


async def ask(url: str, token: str, text: str) -> str:
    async with client(url, token) as openai_client:
        reply = await openai_client.chat.completions.create(
            model="recall",
            messages=[{"role": "user", "content": text}],
            extra_headers={"X-Aopkit-Conversation": "kept"},
        )
    return reply.choices[0].message.content or ""


async def stop(process: asyncio.subprocess.Process, how: signal.Signals) -> str:
    process.send_signal(how)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    return stderr.decode()


async def test_serve_prints_url_and_token_answers_and_stops_then_continues(tmp_path):
    store = str(tmp_path / "sessions.sqlite3")
    first = await launch(TARGET, "--port", "0", "--store", store, "--protocol", "openai")
    url_line, token_line = await started(first, 2)
    url = re.fullmatch(r"aopkit serve: recall at (http://127\.0\.0\.1:\d+/)", url_line)
    token = re.fullmatch(r"aopkit serve: token (\S{40,})", token_line)
    assert url and token, (url_line, token_line)
    assert await ask(url[1], token[1], "before") == "before"
    with pytest.raises(openai.AuthenticationError):
        await ask(url[1], "wrong", "x")
    stderr = await stop(first, signal.SIGINT)
    assert "stopped" in stderr and token[1] not in stderr

    given = "a-token-of-my-own-choosing"
    second = await launch(
        TARGET, "--port", "0", "--store", store, "--protocol", "openai",
        env={"AOPKIT_SERVE_TOKEN": given},
    )  # fmt: skip
    (url_line,) = await started(second, 1)
    url = re.fullmatch(r"aopkit serve: recall at (http://127\.0\.0\.1:\d+/)", url_line)
    assert url, url_line
    assert await ask(url[1], given, "after") == "before|after"  # the restart continues
    await stop(second, signal.SIGTERM)
    assert second.stdout is not None and given not in (await second.stdout.read()).decode()


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        ([TARGET, "--host", "0.0.0.0"], 2, "beyond loopback) needs --token"),
        ([TARGET, "--host", "example.org"], 2, "beyond loopback) needs --token"),
        ([TARGET, "--host", "::"], 2, "beyond loopback) needs --token"),
        ([TARGET, "--host", ""], 2, "beyond loopback) needs --token"),  # every interface
        ([TARGET, "--protocol", "soap"], 1, "unknown protocol 'soap'"),
        (["tests.contrib.serve.agents:nothing"], 2, "has no attribute 'nothing'"),
        (["os:sep", "--protocol", "openai"], 1, "the target must be an aopkit.Agent"),
    ],
    ids=[
        "public-address",
        "public-name",
        "any-ipv6",
        "empty-host",
        "protocol",
        "missing",
        "not-an-agent",
    ],
)
def test_serve_refuses_what_it_cannot_serve_safely(tmp_path, monkeypatch, capsys, args, code, said):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("AOPKIT_SERVE_TOKEN", raising=False)
    assert main(["serve", *args, "--port", "0", "--store", str(tmp_path / "s")]) == code
    out, err = capsys.readouterr()
    assert said in err and "token" not in out


async def test_serve_passes_private_media_to_the_app(monkeypatch, tmp_path):
    """``--private-media`` reaches ``build_app``; without it the app fetches media from
    public addresses only."""
    import argparse

    from aopkit_serve import _app, _command

    seen: list[bool] = []

    def build_app(*args, private_media: bool = False, **kwargs):
        seen.append(private_media)
        raise SystemExit(0)  # stop before serving

    monkeypatch.setattr(_app, "build_app", build_app)
    monkeypatch.setattr(_command, "load_object", lambda *args: None)
    parser = argparse.ArgumentParser()
    _command.arguments(parser)
    for extra in ([], ["--private-media"]):
        with pytest.raises(SystemExit):
            store = str(tmp_path / "serve.sqlite3")
            await _command.serve(parser.parse_args([TARGET, "--store", store, *extra]), None)
    assert seen == [False, True]
