"""``twinedge run SITE.toml``: run the gateway until SIGTERM or Ctrl-C, then stop cleanly."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

log = logging.getLogger("twinedge")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run the gateway for a site file")
    p.add_argument("site", help="the site file (TOML)")
    p.add_argument("--api", metavar="HOST:PORT", help="serve the status page here instead")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gateway.config import load_site

    site = load_site(args.site)
    api = None
    if args.api:
        host, _, port = args.api.rpartition(":")
        api = (host or "127.0.0.1", int(port))
    asyncio.run(run(site, api))
    return 0


async def run(site: Any, api: tuple[str, int] | None) -> None:
    from gateway.app import Gateway

    loop = asyncio.get_running_loop()
    async with Gateway(site, api_listen=api) as gw:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gw.stop)
        log.info("gateway %s running (%d assets)", site.gateway_id, len(site.assets))
        await gw.wait()
        log.info("stopping: flushing the buffer and publishing death")
    status = gw.status()
    log.info(
        "stopped: %d readings in, %d published, %d left in the buffer, %d dropped",
        status["readings"]["in"],
        status["readings"]["out"],
        status["buffer"]["rows"],
        status["buffer"]["dropped"]["total"],
    )
