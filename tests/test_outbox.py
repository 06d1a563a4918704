"""The durable outbox: commit before acknowledge, delete only on ack, seqs never reused,
bounded with counted drops, survives kill -9, moves a corrupt file aside."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.outbox import KIND_EVENT, KIND_READINGS, Batch, Outbox, StoreError
from gateway.readings import Quality, Reading
from gateway.sync import messages


def readings(n: int, asset: str = "a1", start: float = 1000.0) -> list[Reading]:
    return [
        Reading(asset, "temperature", 10.0 + i, "CEL", start + i, start + i - 0.5, seq=i)
        for i in range(n)
    ]


def rows_of(batches: list[Batch]) -> list[list[object]]:
    return [row for b in batches if b.kind == KIND_READINGS for row in json.loads(f"[{b.body}]")]


async def test_append_peek_ack(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "s.db") as box:
        last = await box.append(readings(5), [("a1", {"type": "anomaly", "score": 0.9})])
        assert last == 6 and box.rows == 6
        await box.append(readings(3, start=2000.0))
        batches = await box.peek(0, 100)
        assert [(b.kind, b.first_seq, b.last_seq, b.count) for b in batches] == [
            (KIND_READINGS, 1, 5, 5), (KIND_EVENT, 6, 6, 1), (KIND_READINGS, 7, 9, 3)
        ]  # fmt: skip
        rows = rows_of(batches)
        assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 7, 8, 9]
        assert rows[0] == [1, "a1", "temperature", 10.0, "CEL", 999.5, 1000.0, "good", None]
        assert batches[1].asset == "a1" and json.loads(batches[1].body)["type"] == "anomaly"
        assert [b.id for b in await box.peek(batches[0].id, 100)] == [b.id for b in batches[1:]]
        assert len(await box.peek(0, 4)) == 1  # at least one batch, then up to the limit
        assert await box.ack(batches[0].id, batches[1].id) == 6
        assert [b.first_seq for b in await box.peek(0, 100)] == [7]
        assert box.rows == 3


async def test_rows_match_the_feed_builder(tmp_path: Path) -> None:
    batch = readings(3)
    batch[1].value = float("nan")  # an undecodable value travels as null, never breaks JSON
    batch[2].score = 0.123456
    async with Outbox(tmp_path / "s.db") as box:
        await box.append(batch)
        (stored,) = await box.peek(0, 10)
    raw = messages.readings_payload("gw", "s1", 5.0, 1, 3, stored.body, False)
    built = messages.readings_batch("gw", "s1", 5.0, json.loads(f"[{stored.body}]"), False)
    assert json.loads(raw) == json.loads(messages.dumps(built))
    assert json.loads(raw)["rows"][1][3] is None and json.loads(raw)["rows"][2][8] == 0.1235


async def test_seq_never_reused_and_session_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with Outbox(path) as box:
        await box.append(readings(10))
        (stored,) = await box.peek(0, 100)
        await box.ack(stored.id, stored.id)  # empty now
        session, boot = box.session, box.boot
    async with Outbox(path) as box:
        assert box.session == session and box.boot == boot + 1
        assert box.rows == 0
        assert await box.append(readings(1)) == 11  # never 1 again: keys stay unique


async def test_bounded_drops_oldest_readings_first_and_counts(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "s.db", max_rows=1000) as box:
        await box.append([], [("a1", {"type": "anomaly"})])  # seq 1: an event
        for _ in range(6):
            await box.append(readings(100, "a1"))
        for _ in range(6):
            await box.append(readings(100, "a2"))
        assert box.rows <= 1000
        kept = await box.peek(0, 2000)
        assert kept[0].first_seq == 1 and kept[0].kind == KIND_EVENT  # events go last
        assert kept[1].first_seq > 2  # the oldest readings went first
        assert box.dropped["a1"] > 0 and "a2" not in box.dropped
        assert box.rows + box.dropped_total == 1201
        dropped = dict(box.dropped)
    async with Outbox(tmp_path / "s.db", max_rows=1000) as box:
        assert box.dropped == dropped  # the counts are in the store: they survive a restart
        assert box.rows + box.dropped_total == 1201


async def test_crash_between_insert_and_ack_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    child = textwrap.dedent(f"""
        import asyncio, sys, time
        from gateway.outbox import Outbox
        from gateway.readings import Reading
        async def main():
            box = await Outbox({str(path)!r}, synchronous="full").__aenter__()
            rows = [Reading("a1", "t", float(i), "CEL", time.time(), device="n1", seq=i // 5,
                            boot=7) for i in range(500)]
            last = await box.append(rows)
            print(last, flush=True)  # committed: the source may now be acknowledged
            await asyncio.Event().wait()  # ... and the process dies before any PUBACK
        asyncio.run(main())
    """)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", child, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = await proc.stdout.readline()
    assert int(line) == 500
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    async with Outbox(path) as box:
        rows = rows_of(await box.peek(0, 1000))
        assert [r[0] for r in rows] == list(range(1, 501))
        assert [r[3] for r in rows] == [float(i) for i in range(500)]
        assert await box.append(readings(1)) == 501
        # the frames' marks were in the same commit: a resend after the crash is recognised
        assert all(box.committed("a1", "n1", 7, f) for f in range(100))
        assert not box.committed("a1", "n1", 7, 100)


async def test_corrupt_store_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 500)
    async with Outbox(path) as box:
        assert box.recovered_from is not None and box.recovered_from.exists()
        assert box.recovered_from.read_bytes().startswith(b"this is not")
        assert await box.append(readings(2)) == 2


async def test_store_error_when_file_cannot_be_written(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "s.db") as box:
        await box.append(readings(3))
        box._db.execute("PRAGMA query_only = 1")  # fault injection: the store refuses writes
        with pytest.raises(StoreError):
            await box.append(readings(1))
        box._db.execute("PRAGMA query_only = 0")
        assert await box.append([Reading("a1", "t", 1.0, "CEL", 1.0, quality=Quality.SUSPECT)])


async def test_a_batch_refused_on_a_full_disk_costs_no_stored_readings(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "s.db") as box:
        for i in range(50):
            await box.append(readings(2, start=1000.0 + 10 * i))
        assert box._db is not None
        pages = box._db.execute("PRAGMA page_count").fetchone()[0]
        box._db.execute(f"PRAGMA max_page_count = {pages}")  # fault injection: the disk is full
        with pytest.raises(StoreError, match="full") as first:  # dropping all 100 is too little
            await box.append(readings(3000, start=5000.0))
        assert box.rows == 100 and box.dropped == {} and box.disk_full
        with pytest.raises(StoreError, match="full") as again:
            await box.append(readings(3000, start=5000.0))
        assert not first.value.repeated and again.value.repeated  # the spell is reported once
        assert len(rows_of(await box.peek(0, 1000))) == 100  # nothing was dropped for it
        assert await box.append(readings(2, start=9000.0)) == 102  # room for a small batch
        box._db.execute(f"PRAGMA max_page_count = {10 * pages}")  # room returns
        assert await box.append(readings(3000, start=5000.0)) == 3102 and not box.disk_full


async def test_twin_snapshots_round_trip(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "s.db") as box:
        await box.save_twins({"a1": (7, {"revision": 7, "state": {}})})
        await box.save_twins({"a1": (8, {"revision": 8, "state": {"t": {"value": 1}}})})
    async with Outbox(tmp_path / "s.db") as box:
        assert await box.load_twins() == {"a1": {"revision": 8, "state": {"t": {"value": 1}}}}


def frames(seqs: range, boot: int = 7, asset: str = "a1", per: int = 3) -> list[Reading]:
    """Readings of device frames, as a serial node sends them: ``per`` values a frame."""
    return [Reading(asset, f"q{i}", float(i), "C62", 1.0, device="n1", seq=s, boot=boot)
            for s in seqs for i in range(per)]  # fmt: skip


async def test_device_frames_are_marked_in_the_commit_and_kept_across_restarts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    async with Outbox(path) as box:
        assert await box.append(frames(range(1, 5))) == 12
        await box.append(readings(3))  # readings without a boot leave no mark
        assert box.committed("a1", "n1", 7, 4) and not box.committed("a1", "n1", 7, 5)
        assert not box.committed("a1", "n1", 8, 1) and len(box.marks) == 1
    async with Outbox(path) as box:
        assert box.committed("a1", "n1", 7, 1) and box.committed("a1", "n1", 7, 4)
        await box.append(frames(range(5, 7)) + frames(range(1, 3), boot=9))
    async with Outbox(path) as box:
        assert box.marks.boots("a1", "n1") == ((7, ((1, 6),)), (9, ((1, 2),)))


async def test_marks_and_rows_commit_together_or_not_at_all(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "s.db") as box:
        await box.append(frames(range(1, 3)))
        assert box._db is not None
        box._db.execute(  # fault injection: writing the marks fails after the rows went in
            "CREATE TEMP TRIGGER fail BEFORE INSERT ON frame_marks"
            " BEGIN SELECT RAISE(ABORT, 'injected'); END"
        )
        with pytest.raises(sqlite3.DatabaseError, match="injected"):
            await box.append(frames(range(3, 5)))
        assert box.rows == 6 and len(rows_of(await box.peek(0, 100))) == 6  # rows rolled back
        assert not box.committed("a1", "n1", 7, 3)  # and not marked: the resend is taken
        assert box.next_seq == 7
        box._db.execute("DROP TRIGGER fail")
        assert await box.append(frames(range(3, 5))) == 12
        assert box.committed("a1", "n1", 7, 4)


async def test_marks_survive_the_store_written_back_after_removal(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with Outbox(path) as box:
        await box.append(frames(range(1, 4)))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink()
        await box.append(frames(range(4, 6)))  # notices, writes the store back, commits
        assert box.file_restores == 1
    async with Outbox(path) as box:
        assert box.marks.boots("a1", "n1") == ((7, ((1, 5),)),)


async def test_a_corrupt_store_moved_aside_forgets_the_marks(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with Outbox(path) as box:
        await box.append(frames(range(1, 4)))
    with path.open("r+b") as f:
        f.write(b"this is not a database" * 500)
    async with Outbox(path) as box:
        assert box.recovered_from is not None
        assert not box.committed("a1", "n1", 7, 1)  # a resend is stored again (documented)
