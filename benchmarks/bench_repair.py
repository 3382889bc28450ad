"""Fault tier 2 on the malformed-output corpus (tests/data/malformed_outputs.jsonl) and on its
held-out part (malformed_outputs_heldout.jsonl, written before the correctors were changed for it),
each reported on its own: the share of recoverable outputs fixed with no model call, wrong fixes,
unrecoverable outputs refused, and the time tier 2 takes per output beside json.loads of the
intended value's JSON text."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from _util import best_of, per_call, report
from loguru import logger

import aopkit
from aopkit.blocks import TextBlock
from aopkit.errors import DecodeError
from aopkit.faults import DEFAULT_POLICY, CutOff, FaultPolicy, Unresolved, correct, resolve
from aopkit.models import ChatResponse
from aopkit.structured import NotJSON, Target

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
TIER_2 = FaultPolicy(critics=(), rounds=0, escalate=False)
ASK = [aopkit.Msg("user", "Answer in JSON.", "user")]


async def outcomes(
    kernel: aopkit.Kernel, entries: list[dict[str, Any]], targets: dict[str, Target[Any]]
) -> list[str]:
    """Per entry: "fixed", "wrong", "missed" or "refused", through the whole pipeline (a
    scripted model whose only response is the output, tiers 3 and 4 switched off)."""
    found = []
    for entry in entries:
        model = kernel.model("scripted:corpus", responses=[response(entry)])
        target = targets[entry["schema"]]
        try:
            value = kernel.codec.dump(await resolve(model, ASK, target, policy=TIER_2))
        except Unresolved:
            value = None
        assert len(model.calls) == 1
        if value is None:
            found.append("refused" if entry["intended"] is None else "missed")
        else:
            found.append("fixed" if value == entry["intended"] else "wrong")
    return found


def response(entry: dict[str, Any]) -> ChatResponse:
    """The model answer an entry stands for: its output, and how the model said it ended."""
    return ChatResponse([TextBlock(entry["output"])], finish_reason=entry.get("finish", "stop"))


def tier_2(kernel: aopkit.Kernel, cases: list[tuple[str, Target[Any]]]) -> None:
    """What a run does with malformed output before tier 3: the strict parse that fails, then
    the correctors as ``_Run._correct`` calls them."""
    for output, target in cases:
        try:
            target.parse(output)
        except (NotJSON, DecodeError) as exc:
            kind = "malformed" if isinstance(exc, NotJSON) else "invalid"
            with contextlib.suppress(CutOff):
                correct(
                    kernel, "bench", output, target, DEFAULT_POLICY.correctors, kind=kind, error=""
                )
    kernel.faults.clear()


def main() -> None:
    sys.path.insert(0, str(DATA))
    from corpus_schemas import SCHEMAS

    with tempfile.TemporaryDirectory() as tmp:
        kernel = aopkit.Kernel(environ={"AOPKIT_INCIDENTS": str(Path(tmp) / "incidents.jsonl")})
        targets = {name: Target.of(cls, kernel) for name, cls in SCHEMAS.items()}
        for name in ("malformed_outputs.jsonl", "malformed_outputs_heldout.jsonl"):
            lines = (DATA / name).read_text(encoding="utf-8").splitlines()
            print(f"\n== {name}")
            measure(kernel, targets, [json.loads(line) for line in lines])


def measure(
    kernel: aopkit.Kernel, targets: dict[str, Target[Any]], entries: list[dict[str, Any]]
) -> None:
    logger.disable("aopkit")  # each refusal is an incident logged at CHAT level
    try:
        found = asyncio.run(outcomes(kernel, entries, targets))
    finally:
        logger.enable("aopkit")

    kinds: dict[str, Counter[str]] = {}
    for entry, outcome in zip(entries, found, strict=True):
        kinds.setdefault(entry["kind"], Counter())[outcome] += 1
    print(f"{'kind':22} entries  fixed  missed  wrong  refused")
    for kind, c in kinds.items():
        print(
            f"{kind:22} {c.total():7}  {c['fixed']:5}  {c['missed']:6}  {c['wrong']:5}"
            f"  {c['refused']:7}"
        )
    wrong = [e["id"] for e, outcome in zip(entries, found, strict=True) if outcome == "wrong"]
    total = Counter(found)
    recoverable = sum(e["intended"] is not None for e in entries)
    print(
        f"fixed with no model call: {total['fixed']} of {recoverable} recoverable "
        f"({100 * total['fixed'] / recoverable:.1f} %, target ≥ 90 %); "
        f"wrong fixes: {total['wrong']} (target 0){': ' if wrong else ''}{', '.join(wrong)}; "
        f"unrecoverable refused: {total['refused']} of {len(entries) - recoverable}"
    )

    fixable_entries = [e for e in entries if e["intended"] is not None]
    fixable = [(e["output"], targets[e["schema"]]) for e in fixable_entries]
    refused = [(e["output"], targets[e["schema"]]) for e in entries if e["intended"] is None]
    texts = [json.dumps(e["intended"]) for e in fixable_entries]
    n = 10
    floor = best_of(5, lambda: per_call(lambda: [json.loads(t) for t in texts], n))
    floor = floor / len(texts) * 1e6
    for name, cases in (("recoverable", fixable), ("unrecoverable", refused)):
        value = best_of(5, lambda cases=cases: per_call(lambda: tier_2(kernel, cases), n))
        report(
            f"tier 2 per {name} output ({len(cases)})",
            value / len(cases) * 1e6,
            "µs",
            floor=floor,
            floor_name="json.loads of the intended JSON",
        )


if __name__ == "__main__":
    main()
