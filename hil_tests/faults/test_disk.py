"""The disk: the buffer's budget reached during an outage (the drop policy applies, every drop is
counted per asset, the gateway keeps running and recovers), and a genuinely full file system
(a small tmpfs) that must not corrupt the store, even with a kill -9 while it is full."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
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


async def test_buffer_budget_drops_by_policy_and_counts(
    tmp_path: Path, mq: MosquittoProcess, consumer: Consumer
) -> None:
    async with LedgerDevice("dev-a", rate=1500) as a, LedgerDevice("dev-b", rate=500) as b:
        site, api = write_site(tmp_path, mq.port, [a, b], buffer="max_rows = 5000\n")
        async with GatewayProcess(site, api) as gw:
            await until(lambda: consumer.copies > 0, 20, "readings")
            await mq.stop()
            # the outage outlasts the budget: drops happen, the gateway keeps taking readings
            full = await gw.wait_status(lambda s: s["buffer"]["dropped"]["total"] > 10_000, 60)
            assert full["buffer"]["rows"] <= 5000
            acked = a.acked_upto
            await until(lambda: a.acked_upto > acked + 20, 10, "acks while full")
            await mq.start()
            status = await drained(gw, [a, b], consumer)
        drops = status["buffer"]["dropped"]
        books = settle("budget 5000 rows", [a, b], consumer, drops["total"])
        books.extra.update(by_asset=drops["by_asset"])
        # every hole in the seqs is a reported drop; the report may exceed the holes only by
        # what was in flight (inflight 16 x batch_max 1000) when the broker went away
        books.check(overcount=16 * 1000)
        assert books.dropped > 10_000
        # per asset: everything missing is reported for that asset
        for d in (a, b):
            missing = len(d.acked_ids() - consumer.ids_of(d.name))
            assert missing <= drops["by_asset"].get(d.name, 0) <= missing + 16_000, d.name
        # the twin carries the same count, and the oldest went first (policy)
        assert status["assets"]["dev-a"]["buffer"]["dropped"] == drops["by_asset"]["dev-a"]
        kept = sorted(consumer.ids_of("dev-a"))
        assert kept[-1] == a.emitted and 1 in kept  # the newest kept; the first sent before


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs (the machine must allow mounts; else the test is skipped, not faked)."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
                          capture_output=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def integrity(db: Path) -> str:
    done = subprocess.run(["sqlite3", str(db), "PRAGMA integrity_check"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


async def test_full_file_system_does_not_corrupt_the_store(
    tmp_path: Path, small_fs: Path, mq: MosquittoProcess, consumer: Consumer
) -> None:
    """Other files leave the store 2.5 MB; the budget (1 GB) is never reached, the file system
    fills first. The gateway keeps running and stops acknowledging what it cannot store (the
    device keeps it), survives a kill -9 while full without its store being judged corrupt, and
    takes everything once room returns. Restarted on the full disk, it either exits saying so or
    runs (its files may hold room), and may then make room by policy: dropped, counted."""
    ballast = small_fs / "other-data"
    ballast.write_bytes(b"\0" * (int(5.5 * (1 << 20))))
    store = small_fs / "store.db"
    async with LedgerDevice("dev-a", rate=2000) as a:
        site, api = write_site(tmp_path, mq.port, [a], store=str(store))
        gw = GatewayProcess(site, api)
        async with gw:
            await until(lambda: consumer.copies > 0, 20, "readings")
            await mq.stop()
            full = await gw.wait_status(
                lambda s: any("full" in w["msg"] for w in s["warnings"]), 90
            )
            await until(lambda: a.frame_seq > a.acked_upto + 100, 20, "unacknowledged frames")
            alive = await gw.status()  # the gateway still answers while its disk is full
            await gw.kill9()  # the worst moment: a crash while the disk is full
            await gw.start()
            # Whether it can start on the full disk depends on the room its own files hold (a
            # WAL that was checkpointed is rewritten in place): it runs, or it says the store is
            # full and exits 1. Either way the store is not judged corrupt, nor corrupted.
            assert gw.proc is not None
            exited = asyncio.ensure_future(gw.proc.wait())
            up = asyncio.ensure_future(gw.wait_status(lambda s: s["gateway"]["boot"] == 2, 30))
            done, _ = await asyncio.wait([exited, up], timeout=30, return_when="FIRST_COMPLETED")
            restarted_full = up in done and up.exception() is None
            if restarted_full:  # it runs on the full disk
                exited.cancel()
            else:
                up.cancel()
                assert exited in done, f"neither up nor gone after 30 s:\n{gw.tail()}"
                assert exited.result() == 1, gw.tail()
                assert "twinedge: store" in gw.tail(3) and "full" in gw.tail(3)
            assert not list(small_fs.glob("*corrupt*"))  # a full disk is not a corrupt store
            assert integrity(store) == "ok"
            ballast.unlink()  # room returns
            if not restarted_full:
                await gw.start()
            await gw.wait_status(lambda s: s["gateway"]["boot"] == 2)
            await mq.start()
            status = await drained(gw, [a], consumer, within=90)
        books = settle("full tmpfs + kill -9", [a], consumer, status["buffer"]["dropped"]["total"])
        # readings the policy dropped from the store to make room (the reported total also counts
        # the batches refused while full, which the device resent)
        policy_drops = sum(status["buffer"]["dropped"]["by_asset"].values())
        books.extra.update(refused_while_full=full["buffer"]["dropped"]["total"],
                           uptime_while_full=alive["gateway"]["uptime_s"],
                           restarted_while_full=restarted_full,
                           policy_drops=policy_drops)  # fmt: skip
        books.check(exact_drops=False)
        # nothing acknowledged was lost but what the policy dropped (a gateway that started on
        # the full disk may make room so), and the device resent every refused reading
        assert books.missing_acked <= policy_drops
        assert books.unique_ids + books.missing_acked == books.emitted
        assert len(consumer.sessions) == 1 and integrity(store) == "ok"
