"""Many kill -9 cycles: the fault suite's kill test, run for hundreds of crashes on purpose.

    .venv/bin/python benchmarks/faults_bench.py --kills 300 [--rate 600] [--json out.json]

Three ledger devices (outside the gateway, node wire protocol over TCP, resend until
acknowledged) feed `twinedge run` in a subprocess; the gateway is killed with SIGKILL at a random
moment 0.1-0.8 s after each start; a persistent-session consumer on a real mosquitto records
the feed. Prints the ledger line (emitted, acknowledged, committed, received, after dedupe,
device resends stored twice, dropped, missing) and the restart figures, and exits 1 if the
durability contract was broken: an acknowledged reading missing, or one stored twice (a device's
resend of a frame committed just before a kill must be acknowledged again, not stored again).
Not a test: see hil_tests/faults/test_kill9.py for the CI version (20 kills).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from gateway.broker import mosquitto
from hil_tests.faults.ledger import Consumer, kill9_cycles


async def run(kills: int, rate: float, seed: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="twinedge-faults-") as tmp:
        mq_dir = Path(tmp) / "mosquitto"
        mq_dir.mkdir()
        extra = f"persistence true\npersistence_location {mq_dir}/\nautosave_interval 0\n"
        async with mosquitto(extra=extra) as mq, Consumer(mq.port) as consumer:
            t0 = time.monotonic()
            books, figures = await kill9_cycles(Path(tmp), mq.port, consumer, kills, rate=rate,
                                                seed=seed)  # fmt: skip
            elapsed = time.monotonic() - t0
    ok = (
        books.missing_acked == 0
        and books.dropped == 0
        and books.conflicts == 0
        and books.unique_ids == books.emitted
        and books.device_resends == 0
    )
    print(books.line())
    return {
        "kills": figures["kills"],
        "seconds": round(elapsed, 1),
        "rate_per_device": rate,
        "devices": 3,
        "ledger": {k: v for k, v in vars(books).items() if k not in ("scenario", "extra")},
        "deaths_by_will": books.extra["deaths_by_will"],
        "resent_frames_not_stored": books.extra["resent_frames_not_stored"],
        "restart_to_birth_s": figures["restart_to_birth_s"],
        "sessions": figures["sessions"],
        "contract_held": ok,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=300)
    p.add_argument("--rate", type=float, default=600.0, help="readings/s per device (3 devices)")
    p.add_argument("--seed", type=int, default=6)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    result = asyncio.run(run(args.kills, args.rate, args.seed))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if result["contract_held"] else 1


if __name__ == "__main__":
    sys.exit(main())
