"""A loopback server for the concurrency benchmarks: answers every POST after a fixed delay with
an Anthropic-style message. Run as a separate process: ``python loopback_server.py PORT DELAY``."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

BODY = {
    "id": "msg_bench",
    "type": "message",
    "role": "assistant",
    "model": "bench",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 1},
}


def app(delay: float) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(delay)
        return web.json_response(BODY)

    application = web.Application()
    application.router.add_post("/v1/messages", answer)
    return application


if __name__ == "__main__":
    web.run_app(
        app(float(sys.argv[2])), host="127.0.0.1", port=int(sys.argv[1]), print=None, backlog=4096
    )
