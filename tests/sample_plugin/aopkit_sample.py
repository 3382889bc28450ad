"""A third-party plugin: a new block type and a CLI command, found through its entry point."""

from __future__ import annotations

import attrs

import aopkit


@attrs.frozen
class PollBlock(aopkit.Block):
    """A question with options, as a chat UI might render it."""

    type = "sample.poll"
    question: str
    options: list[str] = attrs.field(factory=list)


def hello(args, kernel):
    """Say hello from the sample plugin."""
    print(f"hello {args.who} from aopkit-sample-plugin")
    return 0


@aopkit.hookimpl
def register_block_types(register):
    register(PollBlock)


@aopkit.hookimpl
def register_commands(register):
    register("sample-hello", hello, arguments=lambda p: p.add_argument("who"))
