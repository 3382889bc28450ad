"""Formatting a 1,000-message history into an OpenAI chat-completions payload (an image by URL
every 10th user message, a tool exchange every 25th turn), per message, beside a floor: a
comprehension building one plain dict per message by hand. Measured the first time the messages
are formatted, and again (what the messages keep is added again: what a model call pays for
all but its new messages). The same for the Gemini and OpenAI Responses formatters, with
the images inline (base64) since neither may fetch a URL here: messages with media are
formatted afresh each call, the others kept."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

from _util import best_of, per_call, report

import aopkit
from aopkit_gemini import GeminiFormatter, GeminiModel
from aopkit_openai import OpenAIFormatter, OpenAIModel, OpenAIResponsesModel, ResponsesFormatter

SIZE = 1_000
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def history(inline: bool = False) -> list[aopkit.Msg]:
    messages = [aopkit.Msg("system", "You are a helpful assistant.", "system")]
    turn = 0
    while len(messages) < SIZE:
        turn += 1
        text = f"Question {turn}: what about the weather in city number {turn}?"
        if turn % 10 == 0:
            source: aopkit.Source = aopkit.URLSource(f"https://example.test/{turn}.png")
            if inline:
                source = aopkit.Base64Source("image/png", PNG)
            image = aopkit.ImageBlock(source)
            messages.append(aopkit.Msg("user", [aopkit.TextBlock(text), image], "user"))
        else:
            messages.append(aopkit.Msg("user", text, "user"))
        if turn % 25 == 0:
            use = aopkit.ToolUseBlock(f"call_{turn}", "weather", {"city": f"city {turn}"})
            result = aopkit.ToolResultBlock(f"call_{turn}", "weather", "sunny, 21 °C")
            messages.append(aopkit.Msg("assistant", [use], "assistant"))
            messages.append(aopkit.Msg("tools", [result], "user"))
        messages.append(aopkit.Msg("assistant", f"Answer {turn}: mild and dry.", "assistant"))
    return messages[:SIZE]


def main() -> None:
    messages = history()
    formatter = OpenAIFormatter()
    capabilities = OpenAIModel.capabilities
    loop = asyncio.new_event_loop()

    def format_() -> object:
        return loop.run_until_complete(formatter.format(messages, capabilities=capabilities))

    def by_hand() -> object:
        return [{"role": m.role, "content": m.content, "name": m.name} for m in messages]

    def first(copies: list[list[aopkit.Msg]]) -> float:
        """Seconds per message formatting each copy once (fresh messages, nothing kept)."""
        start = time.perf_counter()
        for fresh in copies:
            loop.run_until_complete(formatter.format(fresh, capabilities=capabilities))
        return (time.perf_counter() - start) / len(copies) / SIZE

    payload = format_()
    assert isinstance(payload, dict) and len(payload["messages"]) == SIZE
    n = 200
    value = best_of(7, lambda: per_call(format_, n)) / SIZE * 1e6
    floor = best_of(7, lambda: per_call(by_hand, n)) / SIZE * 1e6
    fresh = best_of(5, lambda: first([copy.deepcopy(messages) for _ in range(20)])) * 1e6
    loop.close()
    report(
        "format 1,000 messages for OpenAI the first time, per message",
        fresh,
        "µs",
        floor=floor,
        floor_name="a comprehension of plain dicts",
        target="≤ 0.8 µs (AgentScope 1.0.21: 1.7 µs)",
    )
    report(
        "format the same 1,000 messages again (kept on the messages), per message",
        value,
        "µs",
        floor=floor,
        floor_name="a comprehension of plain dicts",
        target="≤ 1.5x",
    )
    for name, other, model in [
        ("Gemini", GeminiFormatter(), GeminiModel),
        ("the OpenAI Responses API", ResponsesFormatter(), OpenAIResponsesModel),
    ]:
        first_time, again = formatted(other, model.capabilities, history(inline=True))
        report(
            f"format 1,000 messages for {name} the first time, per message",
            first_time * 1e6,
            "µs",
            floor=floor,
            floor_name="a comprehension of plain dicts",
        )
        report(
            f"format the same 1,000 messages for {name} again, per message",
            again * 1e6,
            "µs",
            floor=floor,
            floor_name="a comprehension of plain dicts",
        )


def formatted(formatter: Any, capabilities: Any, messages: list[aopkit.Msg]) -> tuple[float, float]:
    """Seconds per message formatting ``messages`` the first time (fresh copies), and again."""
    loop = asyncio.new_event_loop()

    def run(batch: list[aopkit.Msg]) -> Any:
        return loop.run_until_complete(formatter.format(batch, capabilities=capabilities))

    def first(copies: list[list[aopkit.Msg]]) -> float:
        start = time.perf_counter()
        for fresh in copies:
            run(fresh)
        return (time.perf_counter() - start) / len(copies) / SIZE

    run(messages)
    again = best_of(7, lambda: per_call(lambda: run(messages), 50)) / SIZE
    fresh = best_of(5, lambda: first([copy.deepcopy(messages) for _ in range(10)]))
    loop.close()
    return fresh, again


if __name__ == "__main__":
    main()
