"""The Studio end to end in a real headless Chromium: what a person sees and does."""

from __future__ import annotations

import asyncio

import attrs
from playwright.async_api import expect

from aopkit import (
    Agent,
    AudioBlock,
    Base64Source,
    ImageBlock,
    Msg,
    MsgHub,
    ReActAgent,
    TextBlock,
    ThinkingBlock,
    Toolkit,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from aopkit.faults import FaultPolicy
from aopkit.model_agent import ModelAgent

from .conftest import shoot


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
    "AAAABJRU5ErkJggg=="
)


class Narrator(Agent):
    """Replies with every kind of block the page shows."""

    async def reply(self, msg):
        return Msg(
            self.name,
            [
                ThinkingBlock("Let me look."),
                ToolUseBlock("t1", "lookup", {"q": "cats"}),
                ToolResultBlock("t1", "lookup", "3 cats"),
                ImageBlock(Base64Source("image/png", PIXEL)),
                AudioBlock(URLSource("http://127.0.0.1:9/purr.ogg")),
                TextBlock("There are 3 cats."),
            ],
            "assistant",
        )


@attrs.define
class Verdict:
    winner: str
    score: int


async def test_a_live_run_appears_in_the_page(kernel, studio, page):
    helper = ReActAgent(
        "helper",
        kernel.model(
            "scripted:brain",
            responses=[
                [
                    ThinkingBlock("I should multiply."),
                    ToolUseBlock("c1", "multiply", {"a": 6, "b": 7}),
                ],
                "It is 42.",
            ],
        ),
        toolkit=Toolkit([multiply], kernel=kernel),
        kernel=kernel,
    )
    alice = Narrator("alice", kernel=kernel)
    async with MsgHub([helper, alice], Msg("host", "Welcome!", "system"), name="room"):
        await helper(Msg("user", "What is 6 times 7?", "user"))
        await alice()
        messages = page.locator("#messages .msg")
        await expect(messages.filter(has_text="It is 42.")).to_have_count(1)
        await expect(page.locator("#hubs .hub")).to_contain_text("room")
        await expect(page.locator("#hubs .member")).to_have_text(["helper", "alice"])
    said = messages.filter(has_text="There are 3 cats.")
    await expect(said.locator(".tool-use")).to_contain_text('lookup({"q":"cats"})')
    await expect(said.locator(".tool-result")).to_contain_text("lookup: 3 cats")
    await expect(said.locator(".thinking")).to_contain_text("Let me look.")
    assert await said.locator("img").evaluate("img => img.complete && img.naturalWidth") == 1
    await expect(said.locator("audio")).to_have_attribute("src", "http://127.0.0.1:9/purr.ogg")
    await expect(page.locator("#hubs .member")).to_have_count(0)  # the hub closed
    if path := shoot("studio-live.png"):
        await page.screenshot(path=path)

    await page.click("nav button[data-view=events]")
    await expect(page.locator("#events .event[data-type=tool_started]")).to_have_count(1)
    await page.uncheck("#event-types input[data-type=message_sent]")
    await expect(page.locator("#events .event[data-type=message_sent]").first).to_be_hidden()
    await page.fill("#event-filter", "multiply")
    await expect(page.locator("#events .event:visible")).to_have_count(2)  # tool start, finish
    await expect(page.locator("#events .event:visible").first).to_contain_text("multiply")
    if path := shoot("studio-events.png"):
        await page.screenshot(path=path)
    await page.click("nav button[data-view=chat]")
    await expect(page.locator("#chatlog")).to_contain_text("helper: It is 42.")


async def test_an_incident_is_resolved_from_the_page(kernel, studio, page):
    judge = ModelAgent(
        "judge",
        kernel.model("scripted:judge", responses=["the winner is Bob", "still no JSON"]),
        faults=FaultPolicy(critics=(), rounds=0),
        kernel=kernel,
    )
    verdict = asyncio.ensure_future(judge(Msg("user", "Who won?", "user"), structured=Verdict))
    await page.click("nav button[data-view=incidents]")
    card = page.locator(".incident")
    await expect(card).to_contain_text("scripted:judge could not produce a valid Verdict")
    await expect(card).to_contain_text("the winner is Bob")  # the raw output
    await expect(card).to_contain_text("tier 2 json-repair")  # what was tried, and why not
    await expect(page.locator("#incident-count")).to_have_text("1")
    if path := shoot("studio-incident.png"):
        await page.screenshot(path=path)

    await card.locator("textarea.answer").fill('{"winner": "Bob", "score": "high"}')
    await card.locator("button.answer-button").click()
    await expect(card.locator(".error")).to_contain_text("at $.score: expected integer")
    assert not verdict.done()  # a wrong answer never reaches the agent

    await card.locator("textarea.answer").fill('{"winner": "Bob", "score": 3}')
    await card.locator("button.answer-button").click()
    assert await asyncio.wait_for(verdict, 5) == Verdict("Bob", 3)
    await expect(page.locator(".incident")).to_have_count(0)
    await expect(page.locator("#no-incidents")).to_be_visible()


async def test_tool_calls_are_approved_rejected_and_edited_from_the_page(kernel, studio, page):
    bought = []

    def buy(item: str) -> str:
        """Buy something."""
        bought.append(item)
        return f"bought a {item}"

    model = kernel.model("scripted:buyer")
    uses = [
        ToolUseBlock("c1", "buy", {"item": "<b>boat</b>"}),
        ToolUseBlock("c2", "buy", {"item": "car"}),
    ]
    model.add(uses, "done")
    buyer = ReActAgent("buyer", model, toolkit=Toolkit([buy], approve=True), kernel=kernel)
    reply = asyncio.ensure_future(buyer(Msg("user", "Buy things.", "user")))
    await page.click("nav button[data-view=incidents]")
    card = page.locator(".approval")
    await expect(card).to_contain_text("buyer asks to run 2 tool call(s)")
    await expect(card.locator(".call[data-call=c1] textarea")).to_have_value(
        '{\n  "item": "<b>boat</b>"\n}'
    )  # markup in arguments stays text
    await expect(page.locator("#incident-count")).to_have_text("1")
    if path := shoot("studio-approval.png"):
        await page.screenshot(path=path)

    first = card.locator(".call[data-call=c1]")
    await first.locator("textarea").fill("{not json")
    await first.locator("button.edit").click()
    await expect(card.locator(".error")).to_contain_text("c1: the arguments are not JSON")
    await first.locator("textarea").fill('{"item": "raft"}')
    await first.locator("button.edit").click()
    assert not reply.done()  # one call is still undecided
    second = card.locator(".call[data-call=c2]")
    await second.locator("input.reason").fill("no cars")
    await second.locator("button.reject").click()
    await asyncio.wait_for(reply, 5)
    assert bought == ["raft"]
    results = [b.output for m in buyer.memory for b in m.blocks(ToolResultBlock)]
    assert results == ["bought a raft", "rejected by a person: no cars"]
    await expect(page.locator(".approval")).to_have_count(0)
    await expect(page.locator("#no-incidents")).to_be_visible()


async def test_retry_and_abort_from_the_page(kernel, studio, page):
    judge = ModelAgent(
        "judge",
        kernel.model("scripted:judge", responses=["nope", '{"winner": "Ann", "score": 1}']),
        faults=FaultPolicy(critics=(), rounds=0),
        kernel=kernel,
    )
    verdict = asyncio.ensure_future(judge(Msg("user", "Who won?", "user"), structured=Verdict))
    await page.click("nav button[data-view=incidents]")
    await page.locator(".incident button.retry").click()
    assert await asyncio.wait_for(verdict, 5) == Verdict("Ann", 1)

    judge.model.add("nope")
    failed = asyncio.ensure_future(judge(Msg("user", "Again?", "user"), structured=Verdict))
    await page.locator(".incident button.abort").click()
    await asyncio.wait([failed], timeout=5)
    assert "aborted by a human" in str(failed.exception())


async def test_a_user_agent_receives_typed_input(kernel, studio, page):
    user = studio.user_agent("ann")
    said = asyncio.ensure_future(user(Msg("bot", "What is your name?", "assistant")))
    card = page.locator(".input-request")
    await expect(card).to_contain_text("bot: What is your name?")
    await card.locator("input").fill("Ann <b>Lee</b>")
    await card.locator("input").press("Enter")
    reply = await asyncio.wait_for(said, 5)
    assert (reply.name, reply.role, reply.text) == ("ann", "user", "Ann <b>Lee</b>")
    await expect(page.locator(".input-request")).to_have_count(0)
    await expect(page.locator("#messages .msg .text").last).to_have_text("Ann <b>Lee</b>")


async def test_an_agent_is_interrupted_from_the_page(kernel, studio, page):
    user = studio.user_agent("ann")
    said = asyncio.ensure_future(user(Msg("bot", "Say something", "assistant")))
    await page.locator("#agents li[data-agent=ann] button.interrupt").click()
    reply = await asyncio.wait_for(said, 5)
    assert reply.metadata == {"interrupted": True}
    await expect(page.locator(".input-request")).to_have_count(0)


XSS = '<img src=x onerror="window.pwned=1"><script>window.pwned=1</script>'


class Hostile(Agent):
    async def reply(self, msg):
        return Msg(
            XSS,
            [
                TextBlock(XSS),
                ToolUseBlock(XSS, XSS, {XSS: XSS}),
                ToolResultBlock(XSS, XSS, XSS, is_error=True),
                ImageBlock(URLSource("javascript:window.pwned=1")),
            ],
            "assistant",
        )


async def test_an_xss_payload_renders_as_text(kernel, studio, page):
    await Hostile(XSS, kernel=kernel)(Msg(XSS, XSS, "user"))
    message = page.locator("#messages .msg")
    await expect(message.locator(".text").first).to_have_text(XSS)
    await expect(message.locator(".name")).to_have_text(XSS)
    await expect(message.locator(".tool-result")).to_contain_text(XSS)
    await expect(message).to_contain_text("[image: ")  # a javascript: URL is not loaded
    await page.click("nav button[data-view=events]")
    await expect(page.locator("#events .event[data-type=reply_started]")).to_contain_text(XSS)
    await page.click("nav button[data-view=chat]")
    await expect(page.locator("#chatlog")).to_contain_text(XSS)
    assert await page.locator("main img, main script").count() == 0
    assert await page.evaluate("window.pwned") is None


async def test_a_reconnecting_page_catches_up(kernel, studio, page):
    model = kernel.model("scripted:e", responses=["one", "two"])
    echo = ReActAgent("echo", model, sys_prompt="Say it.", kernel=kernel)
    await echo()
    await expect(page.locator("#messages .msg")).to_have_count(1)
    for client in list(studio._clients):  # the connection drops
        await client.ws.close()
    await expect(page.locator("#status")).to_have_text("reconnecting…")
    await echo()  # said while no page is connected
    await expect(page.locator("#status")).to_have_text("live")
    await expect(page.locator("#messages .msg .text")).to_have_text(["one", "two"])


async def test_past_runs_are_browsed_from_their_traces(kernel, studio, page):
    from aopkit import JsonlTrace

    trace = JsonlTrace(studio.traces / "yesterday.jsonl")
    kernel.register(trace, "trace")
    model = kernel.model("scripted:e", responses=["from the past"])
    echo = ReActAgent("echo", model, sys_prompt="Say it.", kernel=kernel)
    await echo()
    trace.close()
    with (studio.traces / "yesterday.jsonl").open("a") as f:
        f.write("not json\n")
    await page.click("nav button[data-view=runs]")
    await page.click("#runs button:text('yesterday.jsonl')")
    await expect(page.locator("#run-title")).to_contain_text("1 unreadable lines")
    await expect(page.locator("#run-messages .msg")).to_contain_text("from the past")
    await expect(page.locator("#run-events .event[data-type=reply_finished]")).to_have_count(1)
    if path := shoot("studio-runs.png"):
        await page.screenshot(path=path)
