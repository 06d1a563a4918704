"""`twinedge status --drain` after a broker outage: the progress bar follows the real backlog of
a running gateway down to an empty buffer."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from rich.console import Console

from gateway.app import Gateway
from gateway.broker import MosquittoProcess
from gateway.commands.status import follow_drain
from gateway.config import load_site

SITE = """
[gateway]
id = "gw-drain"
site = "lab"
store = "store.db"
[broker]
url = "{url}"
[api]
listen = "127.0.0.1:0"
[[assets]]
id = "wq-1"
category = "water-quality"
location = [4.9, 52.37]
source = "demo:water-quality?period=0.02s&seed=1"
"""


async def test_drain_progress_follows_the_backlog(broker: MosquittoProcess, tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(SITE.format(url=broker.url), encoding="utf-8")
    site = load_site(tmp_path / "site.toml")
    await broker.stop()  # the gateway starts into an outage and buffers
    async with Gateway(site) as gw:
        async with asyncio.timeout(20):
            while gw.outbox.rows < 300:  # noqa: ASYNC110 - the backlog grows at 300 readings/s
                await asyncio.sleep(0.05)
        assert gw.api_url is not None
        out = io.StringIO()
        console = Console(file=out, force_terminal=True, width=120)
        drain = asyncio.create_task(follow_drain(gw.api_url, None, console, every=0.1))
        async with asyncio.timeout(10):  # the bar has drawn the outage
            while "buffered" not in out.getvalue():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert not drain.done()  # nothing drains while the broker is down
        await broker.start()
        async with asyncio.timeout(40):  # reconnect backoff, then the drain
            assert await drain == 0
    text = out.getvalue()
    assert "backlog" in text and "0 buffered" in text
    assert "uplink connected" in text and "readings/s" in text
