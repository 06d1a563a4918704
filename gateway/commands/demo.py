"""``twinedge demo``: a small site of emulated assets, the gateway, a broker and a live view.

Without ``--broker`` the demo runs its own broker: amqtt inside the process (``--broker
embedded``, the default) or a real mosquitto on a free loopback port (``--broker mosquitto``). The
terminal view is built from the MQTT feed as an upstream consumer sees it, not from the gateway's
memory. ``--duration 20 --json`` runs 20 s and prints one JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

DEMO_SITE = """\
# The demo site: emulated devices of the three kinds on a harbour front.
[gateway]
id = "gw-demo"
site = "harbour"
store = "{store}"
stale_after = "{stale}"
delta_interval = "1s"

[broker]
url = "{broker}"
protocol = "{protocol}"

[buffer]
max_rows = 1000000
max_bytes = "256MB"

[api]
enabled = false

[[assets]]
id = "wq-harbour"
category = "water-quality"
name = "Harbour inlet water-quality probe"
location = [4.8952, 52.3791]
source = "demo:water-quality?period={period}&seed=11"
attributes = {{ depth_m = 1.5, water_body = "harbour" }}

[[assets]]
id = "wq-canal"
category = "water-quality"
name = "Canal outfall probe"
location = [4.8890, 52.3740]
source = "demo:water-quality?period={period}&seed=12"
attributes = {{ depth_m = 0.8, water_body = "canal" }}

[[assets]]
id = "light-quay-1"
category = "streetlight"
name = "Quay streetlight 1"
location = [4.8960, 52.3785]
source = "demo:streetlight?period={period}&seed=21"
attributes = {{ lamp = "LED 60 W", circuit = "Q1" }}

[[assets]]
id = "light-quay-2"
category = "streetlight"
name = "Quay streetlight 2"
location = [4.8966, 52.3787]
source = "demo:streetlight?period={period}&seed=22"
attributes = {{ lamp = "LED 60 W", circuit = "Q1" }}

[[assets]]
id = "ped-bridge"
category = "pedestrian-counter"
name = "Harbour bridge counter"
location = [4.8971, 52.3779]
source = "demo:pedestrian-counter?period={period}&seed=31"

[[assets]]
id = "ped-square"
category = "pedestrian-counter"
name = "Station square counter"
location = [4.9001, 52.3780]
source = "demo:pedestrian-counter?period={period}&seed=32&busyness=2.0"
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a demo site with emulated devices and a live view")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--json", action="store_true", help="print one JSON summary, no live view")
    p.add_argument(
        "--broker",
        default="embedded",
        help="'embedded' (amqtt in-process), 'mosquitto' (spawned), or a URL mqtt://host:port",
    )
    p.add_argument("--period", default="1s", help="sampling period of the emulated devices")
    p.add_argument("--stale-after", default="5s", help="silence after which a device is stale")
    p.add_argument("--api", metavar="HOST:PORT", help="serve the status page (port 0: any free)")
    p.add_argument("--workdir", help="where to keep the demo's site file and store")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    logging.getLogger("amqtt").setLevel(logging.ERROR)  # the embedded broker's chatter
    if not args.json and not args.verbose:
        logging.getLogger("twinedge").setLevel(logging.WARNING)  # the live view is the output
    try:
        summary = asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


@asynccontextmanager
async def _broker(choice: str) -> AsyncIterator[tuple[str, str]]:
    """(url, protocol) of the demo's broker."""
    from gateway import broker

    if choice == "embedded":
        async with broker.embedded() as url:
            yield url, "3.1.1"
    elif choice == "mosquitto":
        async with broker.mosquitto() as proc:
            yield proc.url, "5"
    else:
        yield choice, "5"


def write_site(workdir: Path, url: str, protocol: str, period: str, stale: str) -> Path:
    site = workdir / "demo-site.toml"
    site.write_text(
        DEMO_SITE.format(
            store="demo.db", broker=url, protocol=protocol, period=period, stale=stale
        ),
        encoding="utf-8",
    )
    return site


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.app import Gateway
    from gateway.config import load_site
    from gateway.feed_view import FeedView

    async with AsyncExitStack() as stack:
        workdir = Path(args.workdir or stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        url, protocol = await stack.enter_async_context(_broker(args.broker))
        site = load_site(write_site(workdir, url, protocol, args.period, args.stale_after))
        api = None
        if args.api:
            host, _, port = args.api.rpartition(":")
            api = (host or "127.0.0.1", int(port))
        assert site.broker is not None
        view = await stack.enter_async_context(FeedView(site.broker, site.site, site.gateway_id))
        gw = await stack.enter_async_context(Gateway(site, api_listen=api))
        if gw.api_url:
            print(f"status page: {gw.api_url}", file=sys.stderr, flush=True)
        await _until_done(gw, view, args)
        live = gw.status()  # the twins as they were while running, before stop marks them stale
    return _summary(live, gw.status(), view)


async def _until_done(gw: Any, view: Any, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gw.stop)
    waiter = asyncio.create_task(gw.wait())
    try:
        if args.json:
            await asyncio.wait([waiter], timeout=args.duration)
        else:
            await _live_view(view, waiter, args.duration)
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter


async def _live_view(view: Any, waiter: asyncio.Task[None], duration: float | None) -> None:
    from rich.console import Console
    from rich.live import Live

    end = None if duration is None else time.monotonic() + duration
    with Live(view.table(), console=Console(stderr=True), refresh_per_second=4) as live:
        while not waiter.done() and (end is None or time.monotonic() < end):
            await asyncio.wait([waiter], timeout=0.25)
            live.update(view.table())


def _summary(live: dict[str, Any], status: dict[str, Any], view: Any) -> dict[str, Any]:
    """Asset states as they were while running; counts after the clean stop."""
    assets = {}
    for asset_id, twin in live["assets"].items():
        assets[asset_id] = {
            "revision": twin["revision"],
            "online": twin["liveness"]["online"],
            "state": {
                q: {"value": s["value"], "unit": s["unit"], "quality": s["quality"]}
                for q, s in twin["state"].items()
            },
            "counters": twin["device"]["counters"],
        }
    return {
        "gateway": status["gateway"]["id"],
        "readings_in": status["readings"]["in"],
        "readings_published": status["readings"]["out"],
        "buffer_rows": status["buffer"]["rows"],
        "dropped": status["buffer"]["dropped"]["total"],
        "uplink": {
            k: status["uplink"].get(k) for k in ("state", "reconnects", "publish_latency_ms")
        },
        "feed": view.summary(),
        "assets": assets,
    }
