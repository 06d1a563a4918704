"""The broker goes away: stopped and restarted under load; and a long outage whose backlog drains
while new readings keep arriving (the drain rate of the gateway on one CPU is printed: a figure, not
an assertion)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from gateway.broker import MosquittoProcess
from gateway.outbox import Outbox
from gateway.readings import Reading
from hil_tests.faults.ledger import (
    Consumer,
    GatewayProcess,
    LedgerDevice,
    drained,
    settle,
    until,
    write_site,
)

BACKLOG = int(os.environ.get("DRAIN_BACKLOG", "300000"))


async def test_broker_stopped_and_restarted(
    tmp_path: Path, mq: MosquittoProcess, consumer: Consumer
) -> None:
    async with LedgerDevice("dev-a", rate=800) as a, LedgerDevice("dev-b", rate=800) as b:
        site, api = write_site(tmp_path, mq.port, [a, b])
        async with GatewayProcess(site, api) as gw:
            await until(lambda: consumer.copies > 500, 20, "readings")
            for _ in range(3):
                await mq.stop()
                # the consumer's session and its queued messages must outlive the restart
                assert (tmp_path / "mosquitto" / "mosquitto.db").is_file(), mq.log()
                down = await gw.wait_status(lambda s: s["uplink"]["state"] != "connected")
                # while the broker is down the devices are still acknowledged: from the store
                await gw.wait_status(lambda s: s["buffer"]["rows"] > 1000)
                acked = a.acked_upto
                await until(lambda: a.acked_upto > acked + 10, 10, "acks while down")  # noqa: B023
                await mq.start()
                await until(consumer.connected.is_set, 20, "the consumer to reconnect")
            status = await drained(gw, [a, b], consumer)
            assert status["uplink"]["reconnects"] >= 3 and down["buffer"]["dropped"]["total"] == 0
        books = settle("broker restart x3", [a, b], consumer, status["buffer"]["dropped"]["total"])
        books.check()
        assert books.missing_acked == 0 and books.dropped == 0
        assert books.unique_ids == books.emitted


async def seed_backlog(path: Path, n: int) -> int:
    """The store as a long outage leaves it: ``n`` readings of asset ``archive`` committed through
    the outbox's own API (one ingest batch of 1,000 at a time), received three days ago."""
    old = time.time() - 3 * 86400
    async with Outbox(path) as box:
        for first in range(1, n + 1, 1000):
            batch = [
                Reading("archive", "uid", float(i), "C62", old + i / 1000, old + i / 1000)
                for i in range(first, min(first + 1000, n + 1))
            ]
            await box.append(batch)
        return box.rows


async def test_long_outage_backlog_drains_while_live_traffic_continues(
    tmp_path: Path, mq: MosquittoProcess, consumer: Consumer
) -> None:
    assert await seed_backlog(tmp_path / "store.db", BACKLOG) == BACKLOG
    await mq.stop()
    async with LedgerDevice("dev-a", rate=1000) as a, LedgerDevice("dev-b", rate=1000) as b:
        site, api = write_site(tmp_path, mq.port, [a, b])
        async with GatewayProcess(site, api, env={"TWINEDGE_FAULT_ONE_CPU": "1"}) as gw:
            before = await gw.wait_status(lambda s: s["buffer"]["rows"] > BACKLOG + 2000)
            cpus = len(os.sched_getaffinity(gw.pid))
            assert cpus == 1, "the drain rate is a one-core figure"
            loop = asyncio.get_running_loop()
            arrived = len(consumer.arrivals)
            await mq.start()
            await until(lambda: len(consumer.arrivals) > arrived, 60, "the drain to start")
            t0 = consumer.arrivals[arrived][0]
            live0 = a.emitted + b.emitted
            backlog = before["buffer"]["rows"]  # the seqs 1..backlog waited in the store

            def drained_backlog() -> bool:
                return sum(1 for _s, seq in consumer.rows if seq <= backlog) >= backlog

            await until(drained_backlog, 120, "the backlog to drain")
            elapsed = loop.time() - t0
            live_during = a.emitted + b.emitted - live0  # new readings made while it drained
            status = await drained(gw, [a, b], consumer)
        books = settle("outage+drain", [a, b], consumer, status["buffer"]["dropped"]["total"])
        archive = consumer.ids_of("archive")
        books.emitted += BACKLOG
        books.acked += BACKLOG
        books.missing_acked += BACKLOG - len(archive & set(range(1, BACKLOG + 1)))
        rate = backlog / elapsed
        books.extra.update(backlog=backlog, drain_s=round(elapsed, 2), drain_rate=int(rate),
                           live_during_drain=live_during, gateway_cpus=cpus)  # fmt: skip
        books.check()
        assert books.missing_acked == 0 and books.dropped == 0
