"""Remote agents read their keys on the node (never shipped, never in Ray's logs), and a Ray
cluster on one machine listens on loopback only: the tests' cluster, and one started the way
docs/distributed.md says."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from aiohttp import web

import aopkit
from aopkit import Msg
from aopkit.secret import Secret

pytest.importorskip("ray")

from aopkit_ray import to_dist

from .agents import Holder, keyed
from .conftest import AUTH, FILE_KEY, LOOPBACK, REMOTE_KEY, REMOTE_KEY_ENV

A = {"node_a": 0.01}
B = {"node_b": 0.01}


def answer(text: str) -> dict[str, object]:
    message = {"role": "assistant", "content": text}
    return {"id": "c1", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


async def test_remote_agents_read_their_keys_on_the_node_and_ray_logs_none(
    kernel, cluster, serve, secrets_file, ray_temp_dir
):
    received: list[str] = []

    async def provider(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        received.append(auth)
        accepted = auth in (f"Bearer {REMOTE_KEY}", f"Bearer {FILE_KEY}")
        return web.json_response(answer(f"key accepted: {accepted}; you sent {auth}"))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", provider)
    base = await serve(app) + "/v1"
    assert REMOTE_KEY_ENV not in os.environ, "the driver does not have the key"

    from_env = to_dist(keyed(base, api_key_env=REMOTE_KEY_ENV), resources=B, kernel=kernel)
    from_file = to_dist(keyed(base, api_key_file=str(secrets_file)), resources=A, kernel=kernel)
    for agent in (from_env, from_file):
        reply = await agent(Msg("user", "hello", "user"))
        assert reply.text == "key accepted: True; you sent Bearer ***"  # echo scrubbed remotely
    assert received == [f"Bearer {REMOTE_KEY}", f"Bearer {FILE_KEY}"]

    await asyncio.sleep(2)  # let the nodes flush their log files
    hits = [
        f"{path}: {piece[:4]}..."
        for path in ray_temp_dir.rglob("*")
        if path.is_file() and not path.is_symlink()
        for piece in (REMOTE_KEY, FILE_KEY, REMOTE_KEY[:8], FILE_KEY[:8])
        if piece.encode() in _read(path)
    ]
    assert not hits, "a key reached Ray's files:\n" + "\n".join(hits[:5])
    assert any(ray_temp_dir.rglob("raylet.out")), "the scan looked at the cluster's logs"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # a socket or a file removed meanwhile
        return b""


def test_a_secret_given_by_value_does_not_travel(kernel, cluster):
    with pytest.raises(aopkit.AopkitError, match="cannot leave this process"):
        to_dist(Holder("holder", Secret("sk-by-value-1234"), kernel=kernel), resources=A)


def listening(marker: str) -> list[tuple[str, str, str]]:
    """(pid, address, command) of every TCP socket listening in a process whose environment
    holds ``marker``: the processes of one Ray cluster, whatever they are called."""
    owners: dict[str, str] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() not in Path(f"/proc/{pid}/environ").read_bytes():
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    owners[link[8:-1]] = pid
        except OSError:  # gone, or not ours to read
            continue
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in owners:  # 0A: LISTEN
                pid = owners[fields[9]]
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
                found.append((pid, _address(fields[1].split(":")[0], width), command))
    return found


def _address(hex_ip: str, width: int) -> str:
    raw = bytes.fromhex(hex_ip)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # host byte order
    return socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words)


def loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


def test_the_tests_cluster_listens_on_loopback_only(cluster):
    sockets = listening(AUTH["RAY_AUTH_TOKEN"])
    commands = {command.rsplit("/", 1)[-1] for _, _, command in sockets}
    assert {"gcs_server", "raylet"} <= commands, "the check saw the cluster's servers"
    assert [s for s in sockets if not loopback(s[1])] == []


def test_a_cluster_started_as_documented_listens_on_loopback_only():
    """docs/distributed.md: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head
    --node-ip-address=127.0.0.1 --include-dashboard=false``."""
    marker = f"aopkit-ray-loopback-{os.getpid()}-{time.monotonic_ns()}"
    temp = tempfile.mkdtemp(prefix="aopkit-ray-", dir="/tmp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **LOOPBACK, "AOPKIT_TEST_MARKER": marker}
    ray_cli = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    command = [ray_cli, "start", "--head", f"--port={port}"]
    command += ["--node-ip-address=127.0.0.1", "--include-dashboard=false"]
    command += ["--num-cpus=0", "--disable-usage-stats", f"--temp-dir={temp}"]
    try:
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)
        time.sleep(3)  # the agents a head starts come up after `ray start` returns
        sockets = listening(marker)
        assert any(c.endswith("gcs_server") for _, _, c in sockets), sockets
        assert [s for s in sockets if not loopback(s[1])] == []
    finally:
        _kill(marker)  # this cluster's processes only; never `ray stop`, which stops them all
        shutil.rmtree(temp, ignore_errors=True)


def _kill(marker: str) -> None:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            continue
