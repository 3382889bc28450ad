"""A real local Ray cluster for the whole session: a head node with the custom resource
``node_a`` and a second node with ``node_b``, both on this machine and on loopback only, token
authentication on for head, worker and driver alike. Small: one CPU and 100 MB of object store
per node.

The nodes hold a secret the driver does not have (``REMOTE_KEY_ENV`` in their environment, and a
secrets file): remote agents read it there, so it never travels with the agent.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# Ray reads these once per process, when it is imported: set them first, the same for the nodes
# (started from this process) and this driver. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray keep
# 127.0.0.1 as the node address (else it swaps loopback for the machine's routable address) and
# its servers then listen on loopback only.
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
os.environ.update(AUTH)
os.environ.update(LOOPBACK)

REMOTE_KEY_ENV = "AOPKIT_TEST_REMOTE_KEY"
REMOTE_KEY = secrets.token_hex(20)  # only the nodes' environment holds it
FILE_KEY = secrets.token_hex(20)  # only the secrets file holds it
NODE = {"num_cpus": 1, "object_store_memory": 100_000_000, "node_ip_address": "127.0.0.1"}


@pytest.fixture(scope="session")
def ray_temp_dir() -> Iterator[Path]:
    """The cluster's own temporary directory: its session logs are these tests' alone."""
    path = Path(tempfile.mkdtemp(prefix="aopkit-ray-", dir="/tmp"))  # short: Ray puts sockets in it
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def secrets_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "provider-key"
    path.write_text(FILE_KEY + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def cluster(ray_temp_dir: Path) -> Iterator[dict[str, str]]:
    """Start the two nodes, connect this process as the driver, and stop them all afterwards;
    returns the node ids by custom resource."""
    import ray
    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    from . import agents

    cloudpickle.register_pickle_by_value(agents)  # the test agents travel with the calls
    env = {REMOTE_KEY_ENV: REMOTE_KEY}
    nodes = Cluster(
        initialize_head=True,
        head_node_args={
            **NODE,
            "resources": {"node_a": 1},
            "include_dashboard": False,
            "temp_dir": str(ray_temp_dir),
            "env_vars": env,
        },
    )
    try:
        nodes.add_node(**NODE, resources={"node_b": 1}, env_vars=env)
        with warnings.catch_warnings():  # Ray 2.52 announces a change of its own defaults
            warnings.filterwarnings("ignore", "Tip: In future versions of Ray", FutureWarning)
            ray.init(address=nodes.address, logging_level="WARNING", log_to_driver=False)
        yield {
            name: node["NodeID"]
            for node in ray.nodes()
            for name in ("node_a", "node_b")
            if node["Alive"] and name in node["Resources"]
        }
    finally:
        if ray.is_initialized():
            ray.shutdown()
        nodes.shutdown()  # stops the processes of these nodes, and no other cluster's
