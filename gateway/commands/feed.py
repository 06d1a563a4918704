"""``twinedge feed tail`` (print the live feed) and ``twinedge feed sink`` (materialise it)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_PREFIX = "twinedge/v1"


def add_parser(sub: Any) -> None:
    feed = sub.add_parser(
        "feed",
        help="consume the upstream feed: print it or materialise twins into SQLite",
        description="The reference consumer of the native feed (docs/feed.md).",
    )
    cmds = feed.add_subparsers(dest="feed_command", metavar="SUBCOMMAND", required=True)

    tail = cmds.add_parser(
        "tail",
        help="decode, validate and pretty-print the live feed",
        description="Print one line per feed message; invalid messages are reported on stderr.",
    )
    _common(tail)
    tail.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="FILTER",
        help="MQTT topic filter (repeatable; default: everything under the prefix)",
    )
    tail.add_argument("--json", action="store_true", help="print each message as JSON")
    tail.add_argument("--count", type=int, default=0, help="stop after N messages (0: follow)")
    tail.set_defaults(func=run_tail)

    sink = cmds.add_parser(
        "sink",
        help="materialise twins, readings and events into SQLite",
        description="Keep twins, readings and events in an SQLite file: duplicates dropped, deltas "
        "applied in revision order, a gap answered with a rebirth request.",
    )
    _common(sink)
    sink.add_argument("--db", type=Path, required=True, metavar="FILE", help="SQLite file")
    sink.add_argument(
        "--share", metavar="GROUP", help="join the MQTT shared subscription $share/GROUP/..."
    )
    sink.add_argument(
        "--site",
        action="append",
        default=[],
        metavar="SITE",
        help="only this site (repeatable): run one sink per group of sites to scale out",
    )
    sink.add_argument(
        "--validate",
        choices=("full", "light"),
        default="full",
        help="full: JSON Schema for every message; light: hand checks for readings and deltas",
    )
    sink.set_defaults(func=run_sink)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        default=DEFAULT_BROKER,
        metavar="URL",
        help="mqtt://[user@]host[:port] or mqtts://",
    )
    p.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="broker password (default: the TWINEDGE_FEED_PASSWORD environment variable)",
    )
    p.add_argument("--ca-file", type=Path, metavar="FILE", help="CA bundle for an mqtts:// broker")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="feed topic prefix")


def _broker(args: argparse.Namespace) -> Any:
    from gateway.feed.consumer import Broker

    return Broker.parse(args.broker, password_file=args.password_file, ca_file=args.ca_file)


def run_tail(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_tail(args))
    except KeyboardInterrupt:
        return 130
    return 0


async def _tail(args: argparse.Namespace) -> None:
    from gateway.feed.consumer import FeedClient, default_filters
    from gateway.feed.tail import describe

    filters = args.topic or default_filters(args.prefix)
    seen = 0
    async with FeedClient(_broker(args), filters) as feed:
        async for msg in feed.messages():
            line = json.dumps(msg.doc, ensure_ascii=False) if args.json else describe(msg)
            print(line, flush=True)
            seen += 1
            if args.count and seen >= args.count:
                return


def run_sink(args: argparse.Namespace) -> int:
    from gateway.feed.consumer import run_sink as sink

    broker = _broker(args)
    print(f"feed sink: {args.broker} -> {args.db}", file=sys.stderr)
    try:
        asyncio.run(
            sink(
                broker,
                args.db,
                prefix=args.prefix,
                validation=args.validate,
                share=args.share,
                sites=args.site,
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0
