"""The gateway's wall clock jumps an hour backwards while it runs (as when NTP or a technician
steps the system clock). Feed order comes from the store's seq counter and liveness from the
monotonic clock, so: every reading still arrives once, in its device's order; twin revisions
keep counting up by one; and a device that goes silent after the jump turns stale after
``stale_after`` by the monotonic clock, not an hour later."""

from __future__ import annotations

import asyncio
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

JUMP_AFTER, JUMP_BY = 3.0, 3600.0


async def test_clock_jump_backwards(
    tmp_path: Path, mq: MosquittoProcess, consumer: Consumer
) -> None:
    async with LedgerDevice("dev-a", rate=500) as a, LedgerDevice("dev-b", rate=500) as b:
        site, api = write_site(tmp_path, mq.port, [a, b], stale_after="2s")
        env = {"TWINEDGE_FAULT_CLOCK_JUMP": f"{JUMP_AFTER}:{JUMP_BY}"}
        async with GatewayProcess(site, api, env=env) as gw:

            def jumped() -> bool:
                times = [t for _s, t in consumer.received_at]
                return bool(times) and min(times[-5:]) < max(times) - JUMP_BY / 2

            await until(jumped, 20, "rows stamped after the jump")
            b.pause()  # dev-b goes silent after the jump
            t0 = asyncio.get_running_loop().time()
            stale = await gw.wait_status(
                lambda s: s["assets"]["dev-b"]["liveness"]["online"] is False, 10
            )
            went_stale = asyncio.get_running_loop().time() - t0
            assert stale["assets"]["dev-a"]["liveness"]["online"] is True
            status = await drained(gw, [a, b], consumer)
        books = settle("clock -1 h", [a, b], consumer, status["buffer"]["dropped"]["total"])
        books.extra["stale_after_silence_s"] = round(went_stale, 2)  # stale_after is 2 s
        books.check()
        assert books.missing_acked == 0 and books.unique_ids == books.emitted
        # ordering: in seq order each device's ids only go up (seq, not time, orders the feed)
        for d in (a, b):
            ids = [
                uid for (_s, _q), (asset, uid) in sorted(consumer.rows.items()) if asset == d.name
            ]
            assert ids == sorted(ids)
        # twin revisions: +1 per delta per asset, across the jump
        for asset in ("dev-a", "dev-b"):
            revs = [x["revision"] for x in consumer.deltas if x["asset"] == asset]
            assert revs == list(range(revs[0], revs[0] + len(revs))), asset
