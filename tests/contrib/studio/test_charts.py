"""The Studio's charts in a real headless Chromium: a many-agent run's round aggregates and the
token totals over time, drawn live, from data that is never dropped, with hostile names shown
as text and numbers JSON cannot carry shown as missing."""

from __future__ import annotations

import asyncio

import aiohttp
from playwright.async_api import expect

from aopkit import ModelAgent, Usage
from aopkit.blocks import TextBlock
from aopkit.events import MessageSent, RoundFinished
from aopkit.message import Msg
from aopkit.models import ChatResponse

HOSTILE = '<img src=x onerror="window.pwned=1">'


def round_(n: int, average: float, **more: float) -> RoundFinished:
    return RoundFinished(
        run="guess",
        round=n,
        agents=1000,
        replied=1000 - n,
        failed=n,
        seconds=0.5 + n / 10,
        aggregates={"average": average, **more},
    )


async def test_the_charts_draw_rounds_and_tokens_and_follow_the_run(kernel, studio, page):
    for n in range(1, 6):
        kernel.emit(round_(n, 50 * (2 / 3) ** n, **{HOSTILE: n, "empty": float("nan")}))
    answers = [ChatResponse([TextBlock("ok")], Usage(100 * i, 10 * i), "stop") for i in (1, 2)]
    agent = ModelAgent("a", kernel.model("scripted:m", responses=answers), kernel=kernel)
    await agent("one")
    await agent("two")

    await page.click("nav button[data-view=charts]")
    average = page.locator("figure.chart[data-title='guess · average']")
    await expect(average.locator("polyline")).to_have_attribute("data-count", "5")
    await expect(average.locator(".key")).to_have_text(f"average: {50 * (2 / 3) ** 5:.4g}")
    agents = page.locator("figure.chart[data-title='guess · agents']")
    await expect(agents.locator(".key")).to_have_text(["replied: 995", "failed: 5"])
    hostile = page.locator("figure.chart").filter(has_text=HOSTILE)
    await expect(hostile).to_have_count(1)
    empty = page.locator("figure.chart[data-title='guess · empty']")
    await expect(empty).to_contain_text("no numbers yet")  # NaN is not drawn as zero
    tokens = page.locator("#token-chart figure.chart")
    await expect(tokens.locator(".key")).to_have_text(["input: 300", "output: 30"])
    assert await page.evaluate("window.pwned") is None

    kernel.emit(round_(6, 1.0))  # the open view follows the run
    await expect(average.locator("polyline")).to_have_attribute("data-count", "6")
    await expect(average.locator(".key")).to_have_text("average: 1")
    await expect(page.locator("#charts-empty")).to_be_hidden()


async def test_rounds_are_kept_when_the_event_buffer_overflows_and_need_the_token(kernel):
    from aopkit_studio import attach

    studio = await attach(kernel, buffer=3, points=4)
    try:
        flood = Msg("a", "x", "assistant")
        for _ in range(50):
            kernel.emit(MessageSent(msg=flood))
        for n in range(1, 8):
            kernel.emit(round_(n, float(n)))
        await asyncio.sleep(0.2)
        base = f"http://{studio.host}:{studio.port}/api/series"
        async with aiohttp.ClientSession() as session:
            async with session.get(base) as response:
                assert response.status == 401
            headers = {"Authorization": f"Bearer {studio.token}"}
            async with session.get(base, headers=headers) as response:
                data = await response.json()
        assert studio.dropped > 0, "the flood overflowed the event buffer"
        assert [r["round"] for r in data["rounds"]] == [4, 5, 6, 7], "the last rounds, bounded"
        assert data["tokens"] == []
    finally:
        await studio.stop()
