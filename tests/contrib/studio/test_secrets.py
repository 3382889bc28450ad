"""The Studio scrubs what the program marked secret from every frame and every trace it serves,
also when a secret reaches a message without passing through a model's HTTP answer."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp

import aopkit


async def test_frames_and_browsed_traces_hold_no_marked_secret(kernel, studio):
    password = secrets.token_hex(16)
    kernel.secrets.add(password)
    (studio.traces / "old.jsonl").write_text(f'{{"type": "note", "text": "{password}"}}\n')
    model = kernel.model("scripted:x", responses=[f"the password is {password}"])
    await aopkit.ModelAgent("bot", model, kernel=kernel)(aopkit.Msg("user", "hi", "user"))
    await asyncio.sleep(0.3)  # the Studio sends events in batches

    seen = []
    auth = {"Authorization": f"Bearer {studio.token}"}
    base = f"http://127.0.0.1:{studio.port}"
    async with aiohttp.ClientSession(headers=auth) as session:
        async with session.ws_connect(f"{base}/ws?since=0") as ws:
            while (message := await ws.receive(timeout=2)).type == aiohttp.WSMsgType.TEXT:
                seen.append(message.data)
                if "the password is" in message.data:
                    break
        async with session.get(f"{base}/api/runs/old.jsonl") as response:
            seen.append(await response.text())
    everything = "\n".join(seen)
    assert "the password is ***" in everything and '"text": "***"' in everything
    assert password not in everything and password[:8] not in everything
