"""Fixtures of the fuzz tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gateway.app import Gateway
from gateway.config import load_site

SITE = """
[gateway]
id = "gw-fuzz"
site = "lab"
store = "store.db"
[api]
enabled = false
[[assets]]
id = "wq-1"
category = "water-quality"
location = [4.9, 52.37]
source = "demo:water-quality?period=1s&seed=1"
"""


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[asyncio.AbstractEventLoop, Gateway]]:
    """One gateway (signatures not required, so payloads reach the appliers) on its own loop."""
    folder = tmp_path_factory.mktemp("gw-fuzz")
    (folder / "site.toml").write_text(SITE, encoding="utf-8")
    loop = asyncio.new_event_loop()
    gw = Gateway(load_site(folder / "site.toml"))
    loop.run_until_complete(gw.__aenter__())
    loop.run_until_complete(_until_open(gw))
    try:
        yield loop, gw
    finally:
        loop.run_until_complete(gw.__aexit__(None, None, None))
        loop.close()


async def _until_open(gw: Gateway) -> None:
    """Until the device is connected, so commands reach its driver."""
    async with asyncio.timeout(10):
        while "wq-1" not in gw.sources:  # noqa: ASYNC110 - in-memory state, bounded by the timeout
            await asyncio.sleep(0.01)
