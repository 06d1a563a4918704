"""``twinedge bench pipeline``: measure the gateway's pipeline (see gateway/bench.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmarks that print figures (not tests)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    b = bsub.add_parser("pipeline", help="decode → score → outbox → MQTT QoS 1 ack → delete")
    b.add_argument("--readings", type=int, default=600_000, help="readings in the throughput run")
    b.add_argument(
        "--sync", choices=("normal", "full"), default="normal", help="SQLite synchronous"
    )
    b.add_argument(
        "--score",
        choices=("none", "model"),
        default="none",
        help="run the ONNX scoring stage (model) or skip it (none)",
    )
    b.add_argument(
        "--broker", help="mqtt://host:port (default: a mosquitto started on a free port)"
    )
    b.add_argument("--rate", type=float, default=1000.0, help="readings/s of the paced latency run")
    b.add_argument("--seconds", type=float, default=5.0, help="length of the paced latency run")
    b.add_argument("--json", action="store_true", help="print JSON (the default output)")
    b.set_defaults(func=pipeline)


def pipeline(args: argparse.Namespace) -> int:
    from gateway.bench import run_pipeline

    result = asyncio.run(
        run_pipeline(
            readings=args.readings,
            sync=args.sync,
            score=args.score,
            broker=args.broker,
            rate=args.rate,
            seconds=args.seconds,
        )
    )
    print(json.dumps(result, indent=2))
    return 0
