"""``aopkit demo``: offline on the shipped cassette, against a model over HTTP, in the Studio."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

from aiohttp import web

from aopkit_demo.debate import CASSETTE

AOPKIT = shutil.which("aopkit", path=str(Path(sys.executable).parent))


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        AOPKIT,
        "demo",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode()


async def test_the_offline_demo_shows_tools_every_tier_and_the_report(tmp_path):
    code, out = await run(env={"AOPKIT_INCIDENTS": str(tmp_path / "incidents.jsonl")})
    assert code == 0, out
    assert "running offline on the cassette" in out
    assert 'pro: → lookup_fact({"topic": "commute"})' in out
    assert "tools: ← lookup_fact: Full-time remote workers save about 72 minutes" in out
    for tier in (
        "tier 1 (retry)",
        "tier 2 (json-repair)",
        "tier 3 (self)",
        "tier 4 (human (answer))",
    ):
        assert tier in out, tier
    assert "Verdict: pro wins" in out
    assert "5 faults; 4 extra model calls; 2 calls saved by tier 2" in out
    assert (tmp_path / "incidents.jsonl").exists(), "the incident is persisted"


async def test_the_shipped_cassette_is_what_the_script_records(tmp_path):
    fresh = tmp_path / "cassette.json"
    code, out = await run(
        "--record-script", str(fresh), env={"AOPKIT_INCIDENTS": str(tmp_path / "incidents.jsonl")}
    )
    assert code == 0, out
    assert json.loads(fresh.read_text()) == json.loads(CASSETTE.read_text()), (
        "the cassette is out of date: run "
        "`aopkit demo --record-script plugins/aopkit_demo/cassette.json`"
    )


def _smart_openai(request_log: list[dict]) -> web.Application:
    """A stand-in model behind the OpenAI protocol that plays the debate sensibly."""

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        request_log.append(body)
        messages = body["messages"]
        schema = body.get("response_format", {}).get("json_schema", {}).get("schema", {})
        message: dict = {"role": "assistant", "content": None}
        if schema.get("title") == "FactCheck":
            message["content"] = '{"claims_checked": 2, "all_supported": true}'
        elif schema.get("title") == "Verdict":
            message["content"] = (
                '{"winner": "con", "reason": "Sharper evidence.", "scores": {"pro": 6, "con": 7}}'
            )
        elif body.get("tools") and messages[-1]["role"] != "tool":
            topic = "commute" if "FOR" in messages[0]["content"] else "focus"
            message["tool_calls"] = [
                {
                    "id": f"call_{topic}",
                    "type": "function",
                    "function": {"name": "lookup_fact", "arguments": json.dumps({"topic": topic})},
                }
            ]
        else:
            message["content"] = f"My point rests on this: {messages[-1]['content']}"
        return web.json_response(
            {
                "id": "chatcmpl-demo",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def test_the_same_script_runs_against_a_model_over_http(serve, tmp_path):
    requests: list[dict] = []
    base = await serve(_smart_openai(requests))
    code, out = await run(
        "--model",
        "openai:gpt-test",
        env={
            "OPENAI_BASE_URL": base + "/v1",
            "OPENAI_API_KEY": "sk-demo-test",
            "AOPKIT_INCIDENTS": str(tmp_path / "incidents.jsonl"),
        },
    )
    assert code == 0, out
    assert "Running against openai:gpt-test." in out
    assert "Verdict: con wins — Sharper evidence." in out
    assert "Fault report: no faults." in out
    assert len(requests) == 6  # two tool calls, two answers, the fact check, the verdict
    assert "sk-demo-test" not in out


async def test_the_demo_opens_the_studio(tmp_path):
    code, out = await run("--studio", env={"AOPKIT_INCIDENTS": str(tmp_path / "i.jsonl")})
    assert code == 0, out
    assert "aopkit studio: http://127.0.0.1:" in out and "token=" in out
