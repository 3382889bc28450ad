"""A real local Ray cluster for the whole session: a head node with the custom resource
``node_a`` and a second node with ``node_b``, both on this machine, token authentication on for
head, worker and driver alike. Small: one CPU and 100 MB of object store per node."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# Ray reads its authentication settings once per process: set them before it is imported, the
# same for the head, the worker node and this driver.
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
os.environ.update(AUTH)

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray(env: dict[str, str], *args: str) -> None:
    ray_cli = shutil.which("ray") or "ray"
    subprocess.run(
        [ray_cli, *args], env=env, check=True, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="session")
def cluster() -> Iterator[dict[str, str]]:
    """Start the two nodes, connect this process as the driver, and stop them all afterwards;
    returns the node ids by custom resource."""
    import ray
    from ray import cloudpickle

    from . import agents

    cloudpickle.register_pickle_by_value(agents)  # the test agents travel with the calls
    path = [str(ROOT / "contrib"), str(ROOT / "kernel"), *sys.path]
    env = {**os.environ, **AUTH, "PYTHONPATH": os.pathsep.join(path)}
    address = f"127.0.0.1:{_free_port()}"
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
    common.append("--node-ip-address=127.0.0.1")
    try:
        _ray(env, "start", "--head", f"--port={address.split(':')[1]}", "--include-dashboard=false",
             '--resources={"node_a": 1}', *common)  # fmt: skip
        _ray(env, "start", f"--address={address}", '--resources={"node_b": 1}', *common)
        with warnings.catch_warnings():  # Ray 2.52 announces a change of its own defaults
            warnings.filterwarnings("ignore", "Tip: In future versions of Ray", FutureWarning)
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        nodes = {
            name: node["NodeID"]
            for node in ray.nodes()
            for name in ("node_a", "node_b")
            if node["Alive"] and name in node["Resources"]
        }
        yield nodes
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([shutil.which("ray") or "ray", "stop", "--force"], capture_output=True)
