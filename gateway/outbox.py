"""The durable store-and-forward outbox (SQLite, WAL).

Contract (docs/durability.md): :meth:`Outbox.append` returns only after the readings are committed;
rows leave only through :meth:`Outbox.ack`, which the uplink calls after the broker's PUBACK. Every
reading and event gets a ``seq`` from a counter kept in the store and never reused, so
(gateway, session, seq) identifies it across crashes and resends. The store is bounded by
readings and bytes; when full, the oldest routine readings are dropped first, events last, and
every drop is counted per asset in the store itself.

Each append is one stored batch: its readings are encoded once, as the feed's JSON rows, so a
publish is a concatenation and an ack deletes one SQLite row per batch, not one per reading. All
SQLite work runs on one dedicated thread, so blocking fsyncs never stall the event loop.

Readings that name their device frame (``device``, ``boot``, ``seq``: sources whose devices
resend until acknowledged) leave a mark in the same transaction as their rows
(:mod:`gateway.marks`), so :meth:`Outbox.committed` can tell a resend of a committed frame after
a crash from a frame never stored. The marks survive restarts and the write-back of a removed
file; a corrupt store moved aside takes them with it (the fresh store has none).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from gateway.errors import TwinedgeError
from gateway.marks import FrameMarks, Mark, MarkUpdate
from gateway.readings import Reading

__all__ = ["KIND_EVENT", "KIND_READINGS", "Batch", "Outbox", "StoreError", "encode_rows"]

log = logging.getLogger("twinedge.outbox")
T = TypeVar("T")

KIND_READINGS = 0
KIND_EVENT = 1


@dataclass(frozen=True, slots=True)
class Batch:
    """One stored batch: readings (``body`` = JSON rows joined by commas) or one event."""

    id: int
    kind: int
    first_seq: int
    last_seq: int
    count: int
    received_at: float  # the oldest receive time in the batch
    asset: str  # the event's asset ("" for readings)
    body: str


def _ms(t: float | None) -> float | None:
    return None if t is None else round(t, 3)


def _marks(readings: Sequence[Reading]) -> Iterator[Mark]:
    """The device frames a batch holds: readings whose source knows the device's boot (a frame's
    readings come one after another, so each is named once or a few times, not per reading)."""
    last: Mark | None = None
    for r in readings:
        if r.boot is not None:
            mark = (r.asset, r.device, r.boot, r.seq)
            if mark != last:
                yield mark
                last = mark


def encode_rows(readings: Sequence[Reading], first_seq: int) -> str:
    """The feed's reading rows (messages.READING_COLUMNS order) as JSON, without the brackets."""
    rows = [
        (first_seq + i, r.asset, r.quantity, r.value if r.value == r.value else None, r.unit,
         _ms(r.observed_at), _ms(r.received_at), r.quality.value,
         None if r.score is None else round(r.score, 4))
        for i, r in enumerate(readings)
    ]  # fmt: skip
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False)[1:-1]


MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_outbox",
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind INTEGER NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            count INTEGER NOT NULL,
            received_at REAL NOT NULL,
            asset TEXT NOT NULL,
            assets TEXT NOT NULL,
            body TEXT NOT NULL
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE drops (asset TEXT PRIMARY KEY, count INTEGER NOT NULL);
        """,
    ),
    (
        "0002_twins",
        "CREATE TABLE twins (asset TEXT PRIMARY KEY, revision INTEGER NOT NULL,"
        " state TEXT NOT NULL);",
    ),
    (
        "0003_frame_marks",
        "CREATE TABLE frame_marks (asset TEXT NOT NULL, device TEXT NOT NULL,"
        " boots TEXT NOT NULL, stamp INTEGER NOT NULL, PRIMARY KEY (asset, device));",
    ),
)


class StoreError(TwinedgeError, OSError):
    """The store could not take rows (disk full, file removed); nothing was acknowledged.
    ``repeated``: the same full disk as the last refusal, already reported."""

    def __init__(self, msg: str, *, repeated: bool = False) -> None:
        super().__init__(msg)
        self.repeated = repeated


class Outbox:
    """``async with Outbox(path) as box: seq = await box.append(readings)``."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_rows: int = 5_000_000,
        max_bytes: int = 1 << 30,
        synchronous: str = "normal",
    ) -> None:
        self.path = Path(path)
        # made once: a Path built per write interns its file name anew each time (pathlib
        # interns every part), and that churn grows CPython's table of interned strings
        self._wal = Path(f"{self.path}-wal")
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.synchronous = synchronous.upper()
        self.session = ""
        self.boot = 0
        self.rows = 0
        self.dropped: dict[str, int] = {}
        self.dropped_unstored = 0  # rows refused because the disk was full (never stored)
        self.disk_full = False  # the last write was refused for want of room
        self.recovered_from: Path | None = None  # set when a corrupt file was moved aside
        self.file_restores = 0  # times the file was removed while open and written back
        self.next_seq = 1
        self.marks = FrameMarks()  # device frames committed (resends are not stored twice)
        self._db: sqlite3.Connection | None = None
        self._exec = ThreadPoolExecutor(1, thread_name_prefix="twinedge-store")
        self._page_size = 4096

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._run(self._open)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._run(self._close)
        self._exec.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._exec, fn, *args)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._connect()
        except sqlite3.OperationalError as e:  # full, locked, unreadable: not corrupt, keep it
            raise StoreError(f"store {self.path} cannot be opened: {e}") from e
        except sqlite3.DatabaseError as e:
            self._quarantine(str(e))
            self._db = self._connect()
        db = self._db
        try:
            with self._atomic():
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
                if "session" not in meta:
                    meta.update(session=uuid.uuid4().hex[:12], created_at=str(time.time()))
                    meta["next_seq"] = "1"
                self.boot = int(meta.get("boot", "0")) + 1
                meta["boot"] = str(self.boot)
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(meta.items()))
        except sqlite3.OperationalError as e:  # e.g. a full disk: the store is intact
            self._close()
            raise StoreError(f"store {self.path} cannot be written: {e}") from e
        self.session = meta["session"]
        self.next_seq = int(meta["next_seq"])
        self.rows = db.execute("SELECT coalesce(sum(count), 0) FROM outbox").fetchone()[0]
        self.dropped = dict(db.execute("SELECT asset, count FROM drops").fetchall())
        if bad := self.marks.load(
            db.execute("SELECT asset, device, boots, stamp FROM frame_marks")
        ):
            log.warning("store %s: %d unreadable frame marks ignored", self.path, bad)
        self._page_size = db.execute("PRAGMA page_size").fetchone()[0]

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            self._migrate(db)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _quarantine(self, reason: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            p = Path(f"{self.path}{suffix}")
            if p.exists():
                p.rename(Path(f"{aside}{suffix}"))
        self.recovered_from = aside
        log.error(
            "store %s is unreadable (%s): moved aside to %s, starting a fresh store",
            self.path,
            reason,
            aside,
        )

    def _check_file(self) -> None:
        """If the store file or its WAL was removed while open (``rm store.db*``), every later
        commit would go to an unlinked file and vanish at the next start: write the open
        database back to its path (SQLite's backup API, through a temporary file) and reopen
        it there. (The WAL exists from the first write after open until the close.)"""
        if self._db is None or (self.path.exists() and self._wal.exists()):
            return
        log.error("store %s was removed while the gateway had it open: writing it back", self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.restore")
        dest = sqlite3.connect(tmp)
        try:
            self._db.backup(dest)
        finally:
            dest.close()
        self._close()
        tmp.replace(self.path)
        self._db = self._connect()
        self.file_restores += 1

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL)")
        done = {r[0] for r in db.execute("SELECT name FROM migrations")}
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in filter(str.strip, sql.split(";")):
                    db.execute(stmt)
                db.execute("INSERT INTO migrations VALUES (?, ?)", (name, time.time()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextmanager
    def _atomic(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed on success, rolled back on any error."""
        assert self._db is not None, "outbox is not open"
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:  # e.g. SQLITE_FULL: the transaction stays open unless rolled back
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    # -- writing -------------------------------------------------------------------------------

    async def append(
        self, readings: Sequence[Reading], events: Sequence[tuple[str, Mapping[str, Any]]] = ()
    ) -> int:
        """Commit readings and events durably; return the highest seq given (0 if none).

        Raises :class:`StoreError` if the store cannot take them (e.g. the disk is full even after
        dropping by policy): the caller must not acknowledge them to their source.
        """
        if not readings and not events:
            return 0
        return await self._run(self._append, list(readings), list(events))

    def _append(self, readings: list[Reading], events: list[tuple[str, Mapping[str, Any]]]) -> int:
        self._check_file()
        # counters change inside transactions: put them back when a transaction is rolled back
        saved = self.rows, dict(self.dropped)
        try:
            last = self._insert(readings, events)
        except sqlite3.OperationalError as e:
            self.rows, self.dropped = saved[0], dict(saved[1])
            if "full" not in str(e):
                raise StoreError(f"store write failed: {e}") from e
        else:
            if self.disk_full:
                self.disk_full = False
                log.warning("store %s: room again, storing readings", self.path)
            return last
        # Disk full: make room by policy (drop the oldest readings) and try once more. A WAL
        # that grew to fill the disk never reaches its auto-checkpoint: truncate it first. The
        # drop and the insert are one transaction: if the batch still cannot be written, nothing
        # is dropped for it (else every refused batch would cost stored readings, for nothing).
        if not self.disk_full:  # said once per spell, not for every refused batch
            log.error("store %s: disk full, dropping the oldest readings to make room", self.path)
        n = len(readings) + len(events)
        try:
            assert self._db is not None
            with suppress(sqlite3.OperationalError):  # fails if the main file cannot grow
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return self._insert(readings, events, drop=max(n, self.rows // 10))
        except sqlite3.OperationalError as e:
            self.rows, self.dropped = saved[0], dict(saved[1])
            self.dropped_unstored += n
            repeated, self.disk_full = self.disk_full, True
            raise StoreError(f"store full, {n} readings/events not stored: {e}",
                             repeated=repeated) from e  # fmt: skip

    def _insert(
        self, readings: list[Reading], events: list[tuple[str, Mapping[str, Any]]], drop: int = 0
    ) -> int:
        """Commit one batch; ``drop`` the oldest readings first in the same transaction."""
        seq = self.next_seq
        rows: list[tuple[Any, ...]] = []
        if readings:
            n = len(readings)
            assets = json.dumps(Counter(r.asset for r in readings))
            oldest = min(r.received_at for r in readings)
            rows.append((KIND_READINGS, seq, seq + n - 1, n, oldest, "", assets,
                         encode_rows(readings, seq)))  # fmt: skip
            seq += n
        now = time.time()
        for asset, body in events:
            rows.append((KIND_EVENT, seq, seq, 1, now, asset, json.dumps({asset: 1}),
                         json.dumps(body, separators=(",", ":"))))  # fmt: skip
            seq += 1
        count = seq - self.next_seq
        marks = self.marks.plan(_marks(readings), seq - 1)
        with self._atomic() as db:
            gone = self._drop(db, drop, KIND_READINGS) if drop else 0
            gone += self._make_room(db, count)
            db.executemany(
                "INSERT INTO outbox (kind, first_seq, last_seq, count, received_at, asset, assets,"
                " body) VALUES (?,?,?,?,?,?,?,?)",
                rows,
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (str(seq),))
            if marks is not None:
                self._write_marks(db, marks)
        self.marks.apply(marks)  # only now: a mark of a frame not committed would lose it
        if gone:  # said once it is committed
            log.warning("buffer full: dropped the %d oldest stored readings/events by policy", gone)
        self.next_seq = seq
        self.rows += count
        return seq - 1

    @staticmethod
    def _write_marks(db: sqlite3.Connection, update: MarkUpdate) -> None:
        db.executemany(
            "DELETE FROM frame_marks WHERE asset = ? AND device = ?", list(update.forgotten)
        )
        db.executemany("INSERT OR REPLACE INTO frame_marks VALUES (?, ?, ?, ?)", update.rows())

    def committed(self, asset: str, device: str, boot: int | None, seq: int) -> bool:
        """Whether frame ``seq`` of ``device`` (of ``asset``) in its boot ``boot`` (any boot if
        None) is committed: a resend of it after a crash is acknowledged again, not stored."""
        return self.marks.committed(asset, device, boot, seq)

    def _make_room(self, db: sqlite3.Connection, incoming: int) -> int:
        """Drop by policy to stay within the budget; returns how many were dropped."""
        excess = self.rows + incoming - self.max_rows
        if excess > 0:
            return self._drop(db, excess + self.max_rows // 100, KIND_READINGS)
        if self._bytes(db) > self.max_bytes:
            return self._drop(db, max(incoming, self.rows // 100), KIND_READINGS)
        return 0

    def _bytes(self, db: sqlite3.Connection) -> int:
        used = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((used - free) * self._page_size)

    def _drop(self, db: sqlite3.Connection, n: int, kind: int) -> int:
        """Drop the oldest stored batches of ``kind`` holding at least ``n`` readings (events
        only once no readings are left); count the drops per asset in the store. Returns how
        many readings and events were dropped."""
        gone, last_id = 0, None
        counts: Counter[str] = Counter()
        query = "SELECT id, count, assets FROM outbox WHERE kind = ? ORDER BY id"
        for row_id, count, assets in db.execute(query, (kind,)):
            if gone >= n:
                break
            gone += count
            last_id = row_id
            counts.update(json.loads(assets))
        if last_id is not None:
            db.execute("DELETE FROM outbox WHERE kind = ? AND id <= ?", (kind, last_id))
            db.executemany(
                "INSERT INTO drops VALUES (?, ?)"
                " ON CONFLICT(asset) DO UPDATE SET count = count + excluded.count",
                list(counts.items()),
            )
            for asset, c in counts.items():
                self.dropped[asset] = self.dropped.get(asset, 0) + c
            self.rows -= gone
        if gone < n and kind == KIND_READINGS:
            gone += self._drop(db, n - gone, KIND_EVENT)
        return gone

    # -- reading and acknowledging ------------------------------------------------------------

    async def peek(self, after: int, limit: int) -> list[Batch]:
        """Stored batches with id > ``after``, oldest first, holding up to ``limit`` readings
        (at least one batch); nothing is removed."""
        return await self._run(self._peek, after, limit)

    def _peek(self, after: int, limit: int) -> list[Batch]:
        assert self._db is not None
        cur = self._db.execute(
            "SELECT id, kind, first_seq, last_seq, count, received_at, asset, body FROM outbox"
            " WHERE id > ? ORDER BY id LIMIT 256",
            (after,),
        )
        out: list[Batch] = []
        total = 0
        for row in cur:
            if out and total + row[4] > limit:
                break
            out.append(Batch(*row))
            total += row[4]
        return out

    async def ack(self, first: int, last: int) -> int:
        """Remove stored batches ``first..last`` (ids, inclusive) after the broker acknowledged
        them; returns how many readings and events left the store."""
        return await self._run(self._ack, first, last)

    def _ack(self, first: int, last: int) -> int:
        with self._atomic() as db:
            gone: int = db.execute(
                "SELECT coalesce(sum(count), 0) FROM outbox WHERE id BETWEEN ? AND ?", (first, last)
            ).fetchone()[0]
            db.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?", (first, last))
        self.rows -= gone
        return gone

    # -- twins and facts -----------------------------------------------------------------------

    async def save_twins(self, twins: Mapping[str, tuple[int, Mapping[str, Any]]]) -> None:
        """Keep the latest twin snapshots so revisions continue across restarts."""
        rows = [(a, rev, json.dumps(state)) for a, (rev, state) in twins.items()]
        await self._run(self._save_twins, rows)

    def _save_twins(self, rows: list[tuple[str, int, str]]) -> None:
        self._check_file()
        try:
            with self._atomic() as db:
                db.executemany("INSERT OR REPLACE INTO twins VALUES (?, ?, ?)", rows)
        except sqlite3.OperationalError as e:
            raise StoreError(f"twin snapshots not saved: {e}") from e

    async def load_twins(self) -> dict[str, dict[str, Any]]:
        return await self._run(self._load_twins)

    def _load_twins(self) -> dict[str, dict[str, Any]]:
        assert self._db is not None
        out = {}
        for asset, _rev, state in self._db.execute("SELECT asset, revision, state FROM twins"):
            try:
                out[asset] = json.loads(state)
            except ValueError:
                log.warning("store: unreadable twin snapshot for %s ignored", asset)
        return out

    def size_bytes(self) -> int:
        """Bytes the store file takes on disk (database + WAL)."""
        total = 0
        for p in (self.path, self._wal):
            if p.exists():
                total += p.stat().st_size
        return total

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values()) + self.dropped_unstored
