"""A Studio on loopback and a real headless Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("AOPKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def studio(kernel, tmp_path):
    from aopkit_studio import attach

    traces = tmp_path / "traces"
    traces.mkdir()
    studio = await attach(kernel, traces=traces)
    yield studio
    await studio.stop()


@pytest.fixture
async def browser():
    playwright_api = pytest.importorskip("playwright.async_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (see scripts/install-debian.sh)")
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser, studio):
    """The Studio's page, logged in with the token and connected."""
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(studio.url)
    await page.wait_for_selector("#status.online")
    yield page
    await page.close()
    assert not errors, f"the page raised: {errors}"


def shoot(name: str):
    """Where to save a screenshot for the docs, if AOPKIT_SCREENSHOTS is set (else None)."""
    folder = os.environ.get("AOPKIT_SCREENSHOTS")
    return os.path.join(folder, name) if folder else None
