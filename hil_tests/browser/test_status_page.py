"""The status page end to end: the real demo (gateway, emulated devices, mosquitto) in its own
process, the page in Debian's headless Chromium driven by Playwright.

Set ``TWINEDGE_SCREENSHOTS=docs/img`` to refresh the screenshots in the docs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.broker import MosquittoProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STALE_AFTER_S = 2.0
#: the innermost elements that stick out to the right of the screen, for a failure message
WIDER_THAN_SCREEN = """[...document.querySelectorAll("body *")]
  .filter(e => e.getBoundingClientRect().right > innerWidth && !e.firstElementChild)
  .slice(0, 5).map(e => `${e.tagName}.${e.className}: ${e.textContent.slice(0, 40)}`)"""
DEMO_ASSETS = ("wq-harbour", "wq-canal", "light-quay-1", "light-quay-2", "ped-bridge", "ped-square")
SILENCED = "light-quay-2"


@pytest.fixture
async def demo(broker: MosquittoProcess, tmp_path: Path) -> AsyncIterator[str]:
    """``twinedge demo`` against the test's mosquitto, serving the page; yields its URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "demo",
        "--json",
        "--broker",
        broker.url,
        "--api",
        "127.0.0.1:0",
        "--devices",  # in-process devices take a period change, which silences one below
        "in-process",
        "--period",
        "0.5s",
        "--stale-after",
        f"{STALE_AFTER_S}s",
        "--workdir",
        str(tmp_path / "demo"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while line := (await proc.stderr.readline()).decode():
                if line.startswith("status page: "):
                    break
        assert line, "the demo ended before it printed the status page URL"
        drain = asyncio.create_task(proc.stderr.read())  # keep the pipe from filling
        yield line.removeprefix("status page: ").strip()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # graceful: the demo flushes and stops
            async with asyncio.timeout(20):
                await proc.wait()
        if "drain" in locals():
            await drain
    assert proc.returncode == 0


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def stop_reporting(broker: MosquittoProcess, asset: str) -> None:
    """Ask the device over the downlink to report only every 10 minutes: it goes silent."""
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="browser-test") as client:
        doc = {"v": 1, "id": "slow-down-1", "period": "600s"}
        await client.publish(f"twinedge/v1/harbour/gw-demo/desired/{asset}", json.dumps(doc), qos=1)


async def test_page_shows_devices_updates_live_and_marks_a_silent_device_stale(
    demo: str, browser: object, broker: MosquittoProcess, tmp_path: Path
) -> None:
    from playwright.async_api import Browser, expect

    assert isinstance(browser, Browser)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    offline_requests: list[str] = []
    context.on(
        "request", lambda r: None if r.url.startswith(demo) else offline_requests.append(r.url)
    )
    page = await context.new_page()
    await page.goto(demo)

    # every device of the demo, online, with readings and units
    await expect(page.locator(".device")).to_have_count(len(DEMO_ASSETS), timeout=15_000)
    for asset in DEMO_ASSETS:
        card = page.locator(f'.device[data-asset="{asset}"]')
        await expect(card).to_have_attribute("data-online", "true", timeout=15_000)
    watts = page.locator('.device[data-asset="light-quay-1"] tr[data-quantity="power"] td.v')
    await expect(watts).to_contain_text(" W", timeout=15_000)
    celsius = page.locator('.device[data-asset="wq-harbour"] tr[data-quantity="temperature"] td.v')
    await expect(celsius).to_contain_text("°C", timeout=15_000)
    people = page.locator('.device[data-asset="ped-bridge"] tr[data-quantity="count_in"] td.v')
    await expect(people).to_contain_text("persons", timeout=15_000)
    await expect(page.locator("#live")).to_have_text("live")
    await expect(page.locator("#uplink-state")).to_have_text("connected")

    # live updates without a reload: a marker on window survives while values change
    await page.evaluate("window.__noReload = true")
    power = page.locator('.device[data-asset="light-quay-1"] tr[data-quantity="power"] td.v')
    before = await power.text_content()
    await page.wait_for_function(
        "([sel, old]) => document.querySelector(sel)?.textContent !== old",
        arg=['.device[data-asset="light-quay-1"] tr[data-quantity="power"] td.v', before],
        timeout=15_000,
    )
    spark = page.locator('.device[data-asset="light-quay-1"] tr[data-quantity="power"] polyline')
    await expect(spark).to_have_count(1, timeout=15_000)  # a sparkline once there are 2 points
    assert await page.evaluate("window.__noReload") is True

    await shoot(page, tmp_path, "status-page-desktop.png")
    phone = await context.new_page()
    await phone.set_viewport_size({"width": 390, "height": 844})
    await phone.goto(demo)
    await expect(phone.locator(".device")).to_have_count(len(DEMO_ASSETS), timeout=15_000)
    width = await phone.evaluate("document.documentElement.scrollWidth")
    wide = await phone.evaluate(WIDER_THAN_SCREEN)
    assert width <= 390, f"the page scrolls sideways on a phone ({width} px): {wide}"
    await shoot(phone, tmp_path, "status-page-phone.png")

    # a device that stops reporting turns stale on the open page, without a reload
    await stop_reporting(broker, SILENCED)
    silent = page.locator(f'.device[data-asset="{SILENCED}"]')
    await expect(silent).to_have_attribute("data-online", "false", timeout=15_000)
    await expect(silent.locator(".head .badge")).to_have_text("stale")
    await expect(silent.locator("td .badge").first).to_have_text("stale")  # values are history
    await expect(page.locator('.device[data-asset="light-quay-1"]')).to_have_attribute(
        "data-online", "true"
    )
    await expect(page.locator("#devices-detail")).to_have_text("1 stale")
    assert await page.evaluate("window.__noReload") is True
    await shoot(page, tmp_path, "status-page-stale.png")
    assert offline_requests == [], "the page fetched something from outside the gateway"
    await context.close()


async def shoot(page: object, tmp_path: Path, name: str) -> None:
    from playwright.async_api import Page

    assert isinstance(page, Page)
    path = tmp_path / name
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    target = os.environ.get("TWINEDGE_SCREENSHOTS")
    if target:
        shutil.copy(path, Path(target) / name)


async def test_exposed_page_needs_the_token_and_shows_device_text_as_text(browser: object) -> None:
    """An exposed gateway: the page works with ``?token=``, shows nothing without it, and a
    hostile device name is displayed, not executed."""
    from contextlib import asynccontextmanager

    from playwright.async_api import Browser, expect

    from gateway.api import serve_api

    assert isinstance(browser, Browser)
    hostile = '<img src=x onerror="window.__pwned=1">'
    snap = {
        "gateway": {"id": "gw-x", "site": "s", "version": "0", "uptime_s": 5},
        "uplink": {"state": "disconnected", "backlog_rows": 12},
        "buffer": {
            "rows": 12,
            "bytes": 4096,
            "max_bytes": 1 << 20,
            "dropped": {"total": 0, "by_asset": {}},
        },
        "assets": {
            "wq-1": {
                "id": "wq-1",
                "category": "water-quality",
                "name": hostile,
                "liveness": {"online": True, "last_seen": None},
                "state": {"ph": {"value": 7.1, "unit": "C62", "quality": "suspect"}},
                "device": {"counters": {"frames_bad": 4}},
            }
        },
        "warnings": [{"ts": 1.0, "level": "warning", "msg": hostile, "device": "wq-1"}],
    }

    @asynccontextmanager
    async def no_events() -> AsyncIterator[AsyncIterator[dict[str, object]]]:
        forever: asyncio.Queue[dict[str, object]] = asyncio.Queue()

        async def gen() -> AsyncIterator[dict[str, object]]:
            while True:
                yield await forever.get()

        yield gen()

    async with serve_api(
        status=lambda: snap, events=no_events, host="0.0.0.0", port=0, token="field-token"
    ) as api:
        base = f"http://127.0.0.1:{api.port}/"
        page = await browser.new_page()
        await page.goto(base)
        await expect(page.locator("#error")).to_contain_text("HTTP 401")
        await expect(page.locator(".device")).to_have_count(0)
        await page.goto(base + "?token=field-token")
        card = page.locator('.device[data-asset="wq-1"]')
        await expect(card.locator(".name")).to_contain_text(hostile)
        await expect(card.locator('tr[data-quantity="ph"] .badge')).to_have_text("suspect")
        await expect(page.locator("#uplink-state")).to_have_text("disconnected")
        await expect(page.locator("#warnings li").first).to_contain_text(hostile)
        await expect(page.locator("#live")).to_have_text("live")  # SSE got the token too
        assert await page.evaluate("window.__pwned") is None
        assert await page.locator("img").count() == 0
        await page.close()
