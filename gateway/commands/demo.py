"""``twinedge demo``: a small site of emulated assets, the gateway, a broker and a live view.

By default the devices are emulators behind real transports (a twinedge node on a serial pty, a
Modbus RTU sonde on a pty, BLE streetlights and advertising counters on a bumble radio driven
through bleak), so the demo runs the same drivers as a street cabinet does.

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
# {devices}
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
source = "{src_wq_harbour}"
attributes = {{ depth_m = 1.5, water_body = "harbour" }}

[[assets]]
id = "wq-canal"
category = "water-quality"
name = "Canal outfall probe"
location = [4.8890, 52.3740]
source = "{src_wq_canal}"
attributes = {{ depth_m = 0.8, water_body = "canal" }}

[[assets]]
id = "light-quay-1"
category = "streetlight"
name = "Quay streetlight 1"
location = [4.8960, 52.3785]
source = "{src_light_quay_1}"
attributes = {{ lamp = "LED 60 W", circuit = "Q1" }}

[[assets]]
id = "light-quay-2"
category = "streetlight"
name = "Quay streetlight 2"
location = [4.8966, 52.3787]
source = "{src_light_quay_2}"
attributes = {{ lamp = "LED 60 W", circuit = "Q1" }}

[[assets]]
id = "ped-bridge"
category = "pedestrian-counter"
name = "Harbour bridge counter"
location = [4.8971, 52.3779]
source = "{src_ped_bridge}"

[[assets]]
id = "ped-square"
category = "pedestrian-counter"
name = "Station square counter"
location = [4.9001, 52.3780]
source = "{src_ped_square}"
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
    p.add_argument(
        "--devices",
        choices=("emulated", "in-process"),
        default="emulated",
        help="emulated: real serial, Modbus and BLE transports to emulators (default); "
        "in-process: lightweight in-process sources",
    )
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


IN_PROCESS = {
    "wq_harbour": "demo:water-quality?period={period}&seed=11",
    "wq_canal": "demo:water-quality?period={period}&seed=12",
    "light_quay_1": "demo:streetlight?period={period}&seed=21",
    "light_quay_2": "demo:streetlight?period={period}&seed=22",
    "ped_bridge": "demo:pedestrian-counter?period={period}&seed=31",
    "ped_square": "demo:pedestrian-counter?period={period}&seed=32&busyness=2.0",
}


@asynccontextmanager
async def emulated_devices(
    mode: str, period: float
) -> AsyncIterator[tuple[dict[str, str], dict[str, Any]]]:
    """Start the demo's devices; yield (asset key -> source spec, options for the sources).

    ``emulated``: real transports to emulators — a twinedge node on a pty (serial), a Modbus
    sonde on a pty, BLE streetlights and advertising counters on a bumble radio driven through
    bleak. ``in-process``: the lightweight ``demo:`` sources, no transport at all.
    """
    if mode == "in-process":
        yield {k: v.format(period=f"{period}s") for k, v in IN_PROCESS.items()}, {}
        return
    from hil_tests.emulators.ble import BleRadio
    from hil_tests.emulators.modbus_sonde import ModbusSonde
    from hil_tests.emulators.serial_node import SerialNode

    async with AsyncExitStack() as stack:
        node = await stack.enter_async_context(
            SerialNode("water-quality", "wq-harbour", seed=11, period=period)
        )
        sonde = await stack.enter_async_context(ModbusSonde(seed=12))
        radio = await stack.enter_async_context(BleRadio(seed=2))
        lights = [
            await radio.add_streetlight(name, period=period, seed=seed)
            for name, seed in (("light-quay-1", 21), ("light-quay-2", 22))
        ]
        await radio.add_counter(1, period=period, seed=31)
        await radio.add_counter(2, period=period, seed=32, busyness=2.0)
        yield (
            {
                "wq_harbour": f"serial:{node.path}?baud=115200",
                "wq_canal": f"modbus:{sonde.port_path}?unit=1&period={period}s",
                "light_quay_1": f"ble:{lights[0].address}",
                "light_quay_2": f"ble:{lights[1].address}",
                "ped_bridge": "ble-adv:counter-0001",
                "ped_square": "ble-adv:counter-0002",
            },
            radio.options,
        )


def write_site(
    workdir: Path, url: str, protocol: str, stale: str, sources: dict[str, str], devices: str
) -> Path:
    site = workdir / "demo-site.toml"
    srcs = {f"src_{k}": v for k, v in sources.items()}
    text = DEMO_SITE.format(
        store="demo.db",
        broker=url,
        protocol=protocol,
        stale=stale,
        devices=f"devices: {devices}",
        **srcs,
    )
    site.write_text(text, encoding="utf-8")
    return site


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.app import Gateway
    from gateway.config import load_site
    from gateway.feed_view import FeedView
    from gateway.sources import parse_duration

    async with AsyncExitStack() as stack:
        workdir = Path(args.workdir or stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        url, protocol = await stack.enter_async_context(_broker(args.broker))
        period = parse_duration(args.period, file="--period", key="period")
        sources, options = await stack.enter_async_context(emulated_devices(args.devices, period))
        site = load_site(
            write_site(workdir, url, protocol, args.stale_after, sources, args.devices)
        )
        api = None
        if args.api:
            host, _, port = args.api.rpartition(":")
            api = (host or "127.0.0.1", int(port))
        assert site.broker is not None
        view = await stack.enter_async_context(
            FeedView(site.broker, site.site, site.gateway_id, workdir / "feed.db")
        )
        gw = await stack.enter_async_context(Gateway(site, api_listen=api, options=options))
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
