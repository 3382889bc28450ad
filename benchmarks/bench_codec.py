"""Msg JSON round trip (a message with 5 mixed blocks), beside json.dumps + json.loads of the
same JSON-ready dict: what the typed codec adds over plain JSON."""

from __future__ import annotations

import json

from _util import best_of, per_call, report

import aopkit

MSG = aopkit.Msg(
    "alice",
    [
        aopkit.TextBlock("Here is the chart you asked for."),
        aopkit.ThinkingBlock("The user wants numbers.", extra={"signature": "c2ln"}),
        aopkit.ImageBlock(aopkit.URLSource("https://example.test/chart.png", "image/png")),
        aopkit.ToolUseBlock("call_1", "lookup", {"city": "Paris", "days": 3}),
        aopkit.ToolResultBlock("call_1", "lookup", [aopkit.TextBlock("sunny")]),
    ],
    "assistant",
    metadata={"turn": 4},
)


def main() -> None:
    codec = aopkit.Kernel(environ={}).codec
    data = codec.dump(MSG)
    assert codec.loads(codec.dumps(MSG)) == MSG
    n = 5_000
    value = best_of(5, lambda: per_call(lambda: codec.loads(codec.dumps(MSG)), n)) * 1e6
    floor = best_of(5, lambda: per_call(lambda: json.loads(json.dumps(data)), n)) * 1e6
    report(
        "Msg JSON round trip (5 blocks)",
        value,
        "µs",
        floor=floor,
        floor_name="json.dumps+loads of the same dict",
    )


if __name__ == "__main__":
    main()
