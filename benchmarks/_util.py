"""Shared by the benchmarks: timing helpers and one way to print a figure beside its floor."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(repeat: int, fn: Callable[[], float]) -> float:
    """The smallest of ``repeat`` measurements: the least disturbed by a noisy machine."""
    return min(fn() for _ in range(repeat))


def per_call(fn: Callable[[], object], number: int) -> float:
    """Seconds per call of ``fn`` over ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def report(
    name: str,
    value: float,
    unit: str,
    *,
    floor: float | None = None,
    floor_name: str = "",
    target: str = "",
) -> None:
    line = f"{name}: {value:.2f} {unit}"
    if floor is not None:
        line += f"  | floor ({floor_name}): {floor:.2f} {unit}, ratio {value / floor:.2f}x"
    if target:
        line += f"  | target {target}"
    print(line, flush=True)
