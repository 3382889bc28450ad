"""Structured output with critique: a reviewer makes the answer right, not just well-formed.

The analyst must return a `Budget` (an attrs class). Its first answer is valid JSON but adds up
wrong; a pairwise critic with a reviewer model objects, and the analyst revises. The fault
report at the end says which tier resolved what. Run with a real model
(`python structured_critique.py openai:gpt-4o-mini`) or with no argument for a scripted run.
"""

from __future__ import annotations

import asyncio
import sys

import attrs

import aopkit
from aopkit.faults import FaultPolicy
from aopkit_critique import PairwiseCritique


@attrs.frozen
class Line:
    item: str
    cost: int


@attrs.frozen
class Budget:
    """A trip budget: every line, and their total."""

    lines: list[Line]
    total: int


ANALYST = [
    # valid JSON, wrong total: only a reviewer notices
    '{"lines": [{"item": "train", "cost": 120}, {"item": "hotel", "cost": 300}], "total": 400}',
    '{"lines": [{"item": "train", "cost": 120}, {"item": "hotel", "cost": 300}], "total": 420}',
]
REVIEWER = ["The total is wrong: 120 + 300 is 420, not 400.", "APPROVE"]


async def main(model_name: str | None) -> Budget:
    async with aopkit.Kernel() as kernel:  # closing it releases its HTTP session
        if model_name:
            analyst_model = kernel.model(model_name)
            reviewer = kernel.model(model_name)
        else:
            analyst_model = kernel.model("scripted:analyst", responses=ANALYST)
            reviewer = kernel.model("scripted:reviewer", responses=REVIEWER)
        policy = FaultPolicy(critics=(PairwiseCritique(reviewer),), review=True)
        analyst = aopkit.ModelAgent(
            "analyst", analyst_model, faults=policy, sys_prompt="You draft travel budgets."
        )
        budget = await analyst("Budget a weekend: train 120, hotel 300.", structured=Budget)
        print(budget)
        print(kernel.faults.render())
    return budget


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
