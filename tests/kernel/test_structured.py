import enum
import os
import subprocess
import sys
import textwrap
from typing import Literal, Optional

import attrs
import pytest

from aopkit import Agent, ModelAgent, Msg
from aopkit.faults import Unresolved
from aopkit.models import parse_tool_arguments
from aopkit.structured import NotJSON, SchemaError, Target, json_schema


class Side(enum.Enum):
    PRO = "pro"
    CON = "con"


@attrs.frozen
class Point:
    claim: str
    strength: float = 0.5


@attrs.frozen
class Verdict:
    """The judge's decision."""

    winner: Side
    reason: str = attrs.field(metadata={"description": "one sentence"})
    points: list[Point] = attrs.field(factory=list)
    confidence: Literal["low", "high"] = "low"
    runner_up: Optional[str] = None  # noqa: UP045 - Optional spelled out on purpose
    scores: dict[str, int] = attrs.field(factory=dict)


def test_json_schema_of_an_attrs_class():
    schema = json_schema(Verdict)
    assert schema["title"] == "Verdict" and schema["description"] == "The judge's decision."
    assert schema["required"] == ["winner", "reason"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["winner"] == {"type": "string", "enum": ["pro", "con"]}
    assert props["reason"] == {"type": "string", "description": "one sentence"}
    assert props["points"]["items"]["properties"]["strength"] == {"type": "number", "default": 0.5}
    assert props["confidence"] == {"type": "string", "enum": ["low", "high"], "default": "low"}
    assert props["runner_up"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert props["scores"] == {"type": "object", "additionalProperties": {"type": "integer"}}


@attrs.frozen
class Node:
    children: list["Node"]


def test_recursive_types_refer_to_their_definition_and_unsupported_ones_are_errors():
    assert json_schema(Node) == {
        "type": "object",
        "title": "Node",
        "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
        "required": ["children"],
        "additionalProperties": False,
        "$defs": {
            "Node": {
                "type": "object",
                "title": "Node",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
                "required": ["children"],
                "additionalProperties": False,
            }
        },
    }

    @attrs.frozen
    class Local:
        child: "Undefined"  # noqa: F821

    with pytest.raises(SchemaError, match="cannot resolve the annotations of Local"):
        json_schema(Local)

    @attrs.frozen
    class Odd:
        when: complex

    with pytest.raises(SchemaError, match="cannot describe"):
        json_schema(Odd)


async def test_targets_check_strictly(kernel):
    target = Target.of(Verdict, kernel)
    good = target.parse('{"winner": "pro", "reason": "r", "points": [{"claim": "c"}]}')
    assert good == Verdict(Side.PRO, "r", [Point("c")])
    with pytest.raises(Exception, match=r"points\[0\]\.strength: expected a number"):
        target.parse(
            '{"winner": "pro", "reason": "r", "points": [{"claim": "c", "strength": "x"}]}'
        )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"winner": "pro", "reason": "r", "points": [{"claim": "c", "strength": NaN}]}', "NaN"),
        ('{"winner": "pro", "reason": "r", "scores": {"a": Infinity}}', "Infinity"),
        ('{"winner": "pro", "reason": "r", "scores": {"a": -Infinity}}', "-Infinity"),
        ('{"winner": "pro", "reason": "r", "winner": "con"}', "'winner' has two values"),
        ('{"winner": "pro", "reason": "r", "scores": {"a": 1, "a": 1}}', "'a' has two values"),
    ],
)
async def test_the_strict_parse_chooses_nothing(kernel, text, error):
    """Python's json reads NaN and keeps the last value of a key given twice: neither is JSON
    a parser may take as it is."""
    with pytest.raises(NotJSON, match=error):
        Target.of(Verdict, kernel).parse(text)
    use = parse_tool_arguments("c1", "tool", text)
    assert use.raw_input == text and use.input == {}  # left for the repair tiers


async def test_a_model_agent_returns_an_instance_through_the_tiers(kernel):
    model = kernel.model(
        "scripted:judge", responses=['```json\n{"winner": "con", "reason": "better evidence"}\n```']
    )
    judge = ModelAgent("judge", model, sys_prompt="You judge debates.", kernel=kernel)
    verdict = await judge(Msg("host", "Who won?", "user"), structured=Verdict)
    assert verdict == Verdict(Side.CON, "better evidence")
    sent = model.calls[0]
    assert sent["structured"]["title"] == "Verdict"
    assert [m.role for m in sent["messages"]] == ["system", "user"]
    assert judge.memory[-1].text == (
        '{"winner": "con", "reason": "better evidence", "points": [], "confidence": "low", '
        '"runner_up": null, "scores": {}}'
    )
    assert kernel.faults.faults[0].resolver == "fences"


async def test_any_agent_can_answer_structured(kernel):
    class Rules(Agent):
        async def reply(self, msg):
            return Msg(self.name, "{'winner': 'pro', 'reason': 'rule 3',}", "assistant")

    assert await Rules("rules", kernel=kernel)(structured=Verdict) == Verdict(Side.PRO, "rule 3")

    class Rambler(Agent):
        async def reply(self, msg):
            return Msg(self.name, "I think pro won, probably.", "assistant")

    with pytest.raises(Exception) as info:
        await Rambler("rambler", kernel=kernel)(structured=Verdict)
    assert isinstance(info.value.__cause__, Unresolved)
    assert info.value.__cause__.incident.outputs == ["I think pro won, probably."]


def test_the_terminal_resolver_asks_when_a_terminal_is_attached(tmp_path):
    """Run a program under a pseudo-terminal and answer the incident at its prompt."""
    import pty
    import select

    script = textwrap.dedent(f"""
        import asyncio, attrs, aopkit
        @attrs.frozen
        class Verdict:
            winner: str
        async def main():
            kernel = aopkit.Kernel(environ={{"AOPKIT_INCIDENTS": {str(tmp_path / "inc.jsonl")!r}}})
            model = kernel.model("scripted:m", responses=["?", "??", "???"])
            agent = aopkit.ModelAgent("judge", model, kernel=kernel)
            print("RESULT", await agent(structured=Verdict))
        asyncio.run(main())
    """)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    output = b""

    def read_until(marker: bytes) -> None:
        nonlocal output
        while marker not in output:
            ready, _, _ = select.select([leader], [], [], 30)
            assert ready, f"no {marker!r} in {output!r}"
            output += os.read(leader, 4096)

    read_until(b"ort? ")
    os.write(leader, b"a\n")
    read_until(b"answer (JSON): ")
    os.write(leader, b'{"winner": "bob"}\n')
    assert proc.wait(30) == 0
    while True:  # the rest of the output, up to the end of the program
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert b"could not produce a valid Verdict" in output
    assert b"RESULT Verdict(winner='bob')" in output
