"""A loopback server for the concurrency benchmarks: answers every POST after a delay with an
Anthropic-style message. Run as a separate process: ``python loopback_server.py PORT DELAY``.

It speaks just enough HTTP/1.1 (keep-alive, ``Content-Length`` bodies) on a raw asyncio
protocol, so that on a 2-core machine the server costs the client as little CPU as it can.
A path ``/wait/SECONDS/...`` holds that request for SECONDS instead of DELAY, and
``GET /pending`` answers how many requests are being held: a client can tell when all its
calls are in flight."""

from __future__ import annotations

import asyncio
import json
import sys

BODY = json.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "bench",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
).encode()


def response(body: bytes) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


ANSWER = response(BODY)


class Server(asyncio.Protocol):
    pending = 0  # requests held now, over every connection

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return  # the body is still coming
            self.buffer = self.buffer[end + 4 + length :]
            self.answer(head[0].split(" ")[1])

    def answer(self, path: str) -> None:
        if path == "/pending":
            self.send(response(str(Server.pending).encode()))
            return
        delay = self.delay
        if path.startswith("/wait/"):
            delay = float(path.split("/")[2])
        Server.pending += 1
        asyncio.get_running_loop().call_later(delay, self.release)

    def release(self) -> None:
        Server.pending -= 1
        self.send(ANSWER)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def serve(port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Server(delay), "127.0.0.1", port, backlog=8192)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), float(sys.argv[2])))
