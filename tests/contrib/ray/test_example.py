"""examples/distributed_simulation.py plays the same game in one process and on the cluster."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "distributed_simulation.py"


def load():
    spec = importlib.util.spec_from_file_location("example_distributed_simulation", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_the_same_game_in_one_process_and_in_actor_pools(cluster):
    from ray import cloudpickle

    example = load()
    cloudpickle.register_pickle_by_value(example)  # the example's agents travel with the calls
    local = await example.play(400, 3, distributed=False)
    half = await example.play(400, 3, distributed=True, pool_size=200, resources={"node_a": 0.01})
    assert local == half
    assert local[0][0] < 50 and local[-1][0] < local[0][0], "the average falls round by round"
