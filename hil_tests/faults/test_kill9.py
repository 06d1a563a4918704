"""kill -9 of the gateway at random moments under steady load, again and again.

Three ledger devices send 600 readings/s each. The gateway (`twinedge run` in a subprocess) is
killed with SIGKILL at a random moment 0.1-0.8 s after its feed starts, restarted, and killed
again, ``KILL9_CYCLES`` times (20 by default; ``benchmarks/faults_bench.py`` runs hundreds).
The devices outlive every crash and resend what the gateway had not acknowledged. At the end:
every acknowledged reading reached the consumer, no feed seq is missing, nothing was dropped,
and the only duplicates left after dedupe by seq are device resends of readings committed in
the instant between the commit and the crash (at most one ingest batch per device per kill).
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

from gateway.broker import MosquittoProcess
from hil_tests.faults.ledger import (
    Consumer,
    GatewayProcess,
    LedgerDevice,
    drained,
    settle,
    until,
    write_site,
)

CYCLES = int(os.environ.get("KILL9_CYCLES", "20"))


async def kill9_cycles(
    tmp_path: Path, mq: MosquittoProcess, consumer: Consumer, cycles: int, rate: float = 600.0
) -> None:
    rng = random.Random(int(os.environ.get("KILL9_SEED", "6")))
    names = ("dev-a", "dev-b", "dev-c")
    devices = [LedgerDevice(n, rate=rate) for n in names]
    for d in devices:
        await d.__aenter__()
    try:
        site, api = write_site(tmp_path, mq.port, devices)
        gw = GatewayProcess(site, api)
        try:
            for _ in range(cycles):
                births = len(consumer.births)
                seen = consumer.copies
                await gw.start()
                await until(lambda: len(consumer.births) > births, 20, "the birth")  # noqa: B023
                await until(lambda: consumer.copies > seen, 20, "readings")  # noqa: B023
                await asyncio.sleep(rng.uniform(0.1, 0.8))  # the random kill moment under load
                await gw.kill9()
            await gw.start()
            status = await drained(gw, devices, consumer)
            assert await gw.stop() == 0  # and a clean stop still works after all that
        except BaseException:
            print(gw.tail())
            raise
        finally:
            await gw.__aexit__(None, None, None)
        dropped = status["buffer"]["dropped"]["total"]
        books = settle(f"kill9 x{gw.kills}", devices, consumer, dropped)
        books.extra["deaths_by_will"] = sum(d["reason"] == "lost" for d in consumer.deaths)
        assert books.extra["deaths_by_will"] == gw.kills  # every crash was announced by the will
        books.check()
        assert books.dropped == 0 and books.missing_acked == 0
        assert books.unique_ids == books.emitted  # every reading made was delivered
        assert len(consumer.sessions) == 1  # the store survived every kill
        # a device resend is a reading committed but not yet acknowledged when the process died
        assert books.device_resends <= gw.kills * len(devices) * 1024
    finally:
        for d in devices:
            await d.__aexit__(None, None, None)


async def test_kill9_under_load_nothing_acknowledged_lost(
    tmp_path: Path, mq: MosquittoProcess, consumer: Consumer
) -> None:
    await kill9_cycles(tmp_path, mq, consumer, CYCLES)
