"""The store file itself: corrupt at start (moved aside, a fresh store, reported), and removed
from under a running gateway (noticed, reported, and written back so that what the gateway
acknowledged survives even a kill -9 afterwards)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


async def test_corrupt_store_at_start_is_moved_aside_and_reported(
    tmp_path: Path, mq: MosquittoProcess, consumer: Consumer
) -> None:
    store = tmp_path / "store.db"
    # a store whose pages were overwritten (a power cut on cheap flash, a bad sector)
    store.write_bytes(b"SQLite format 3\x00" + os.urandom(64 * 1024))
    async with LedgerDevice("dev-a", rate=1000) as a:
        site, api = write_site(tmp_path, mq.port, [a])
        async with GatewayProcess(site, api) as gw:
            first = await gw.wait_status(lambda s: s["uplink"]["state"] == "connected")
            status = await drained(gw, [a], consumer)
        aside = list(tmp_path.glob("store.db.corrupt-*"))
        warned = [w["msg"] for w in first["warnings"] if "moved aside" in w["msg"]]
        books = settle(
            "corrupt store at start", [a], consumer, status["buffer"]["dropped"]["total"]
        )
        books.extra.update(moved_aside=len(aside), warning=bool(warned))
        books.check()
        assert len(aside) == 1 and aside[0].read_bytes().startswith(b"SQLite format 3")
        assert warned and aside[0].name in warned[0]
        assert consumer.births[0]["boot"] == 1  # a fresh store: a new session from boot 1
        assert books.missing_acked == 0 and books.unique_ids == books.emitted


@pytest.mark.parametrize("removed", [("", "-wal", "-shm"), ("-wal",)], ids=["all", "wal"])
async def test_store_deleted_under_running_gateway_is_written_back(
    tmp_path: Path, mq: MosquittoProcess, consumer: Consumer, removed: tuple[str, ...]
) -> None:
    """The broker is down, so the acknowledged readings exist only in the store when someone
    runs ``rm store.db*``. The gateway notices at its next write, reports it, writes the store
    back from its open connection and carries on; a kill -9 then proves it is on disk."""
    store = tmp_path / "store.db"
    async with LedgerDevice("dev-a", rate=1000) as a, LedgerDevice("dev-b", rate=500) as b:
        site, api = write_site(tmp_path, mq.port, [a, b])
        async with GatewayProcess(site, api) as gw:
            await until(lambda: consumer.copies > 0, 20, "readings")
            await mq.stop()
            await gw.wait_status(lambda s: s["buffer"]["rows"] > 3000)
            for suffix in removed:
                Path(f"{store}{suffix}").unlink(missing_ok=True)
            reported = await gw.wait_status(
                lambda s: any("removed" in w["msg"] for w in s["warnings"]), 10
            )
            acked = a.acked_upto
            await until(lambda: a.acked_upto > acked + 20, 10, "acks after the restore")
            assert store.exists()
            await gw.kill9()
            await gw.start()
            await gw.wait_status(lambda s: s["gateway"]["boot"] >= 2)
            await mq.start()
            status = await drained(gw, [a, b], consumer)
        name = f"store{'*' if len(removed) > 1 else removed[0]} deleted + kill -9"
        books = settle(name, [a, b], consumer, status["buffer"]["dropped"]["total"])
        books.extra["warning"] = [w["msg"] for w in reported["warnings"] if "removed" in w["msg"]]
        books.check()
        assert books.missing_acked == 0 and books.dropped == 0
        assert books.unique_ids == books.emitted
        assert len(consumer.sessions) == 1  # the same store, not a fresh one
