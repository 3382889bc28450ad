"""The Studio's usage view in a real headless Chromium: totals, budgets, refusals, live updates,
and each reply's usage beside it."""

from __future__ import annotations

import aiohttp
import pytest
from playwright.async_api import expect

from aopkit import Budget, BudgetExceeded, ModelAgent, Msg, Price, Usage
from aopkit.blocks import TextBlock
from aopkit.models import ChatResponse

HOSTILE = '<img src=x onerror="window.pwned=1">'


def said(text: str, usage: Usage) -> ChatResponse:
    return ChatResponse([TextBlock(text)], usage, "stop")


async def test_the_usage_view_shows_totals_budgets_and_refusals(kernel, studio, page):
    kernel.prices["scripted:priced"] = Price(input=1.0, output=2.0)
    judge = ModelAgent(
        "judge",
        kernel.model("scripted:priced", responses=[said("fine", Usage(1000, 500))] * 3),
        kernel=kernel,
    )
    judge.budget = Budget(calls=1)
    mystery = ModelAgent(
        HOSTILE, kernel.model("scripted:quiet", responses=[said("?", Usage())] * 3), kernel=kernel
    )
    await judge(Msg("user", "judge this", "user"))
    with pytest.raises(BudgetExceeded):
        await judge(Msg("user", "again", "user"))
    await mystery(Msg("user", "hello", "user"))

    head = page.locator("#messages .msg .usage-line")
    await expect(head.first).to_have_text("1000 in · 500 out · $0.002000")
    await expect(head.nth(1)).to_have_text("? in · ? out")  # unknown, not zero

    await page.click("nav button[data-view=usage]")
    judge_row = page.locator("#usage-agents tr[data-name=judge] td")
    await expect(judge_row).to_have_text(
        ["judge", "1", "0", "1000", "?", "500", "?", "$0.002000", "1"]
    )
    await expect(page.locator("#usage-agents tr.total td").nth(1)).to_have_text("2")
    await expect(page.locator("#usage-models tr[data-name='scripted:quiet'] td").last).to_have_text(
        "0"
    )
    await expect(page.locator("#usage-budgets")).to_contain_text(
        "agent judge: 1 of 1 calls; 1 call(s) refused"
    )
    await expect(page.locator("#usage-notes")).to_contain_text("1 call(s) without token counts")
    await expect(page.locator("#usage-agents td").filter(has_text=HOSTILE)).to_have_count(1)
    assert await page.evaluate("window.pwned") is None

    await mystery(Msg("user", "more", "user"))  # the open view follows the run
    await expect(page.locator("#usage-agents tr.total td").nth(1)).to_have_text("3")


async def test_the_usage_api_needs_the_token(kernel, studio):
    await ModelAgent("a", kernel.model("scripted:m", responses=["x"]), kernel=kernel)(
        Msg("user", "hi", "user")
    )
    base = f"http://{studio.host}:{studio.port}/api/usage"
    async with aiohttp.ClientSession() as session:
        async with session.get(base) as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {studio.token}"}
        async with session.get(base, headers=headers) as response:
            assert response.status == 200
            data = await response.json()
    assert data["agents"]["a"]["calls"] == 1 and data["total"]["calls"] == 1
