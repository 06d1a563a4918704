"""The durable store-and-forward outbox (SQLite, WAL).

Contract (docs/durability.md): :meth:`Outbox.append` returns only after the readings are committed;
rows leave only through :meth:`Outbox.ack`, which the uplink calls after the broker's PUBACK. Every
row gets a ``seq`` from an AUTOINCREMENT key, never reused within a store, so (gateway, session,
seq) identifies a reading across crashes and resends. The store is bounded by rows and bytes;
when full, the oldest routine readings are dropped first, events last, and every drop is counted
per asset in the store itself.

All SQLite work runs on one dedicated thread (blocking fsyncs never stall the event loop) and is
batched: one transaction per append, one SELECT per peek, one DELETE per ack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from gateway.errors import TwinedgeError
from gateway.readings import Reading

__all__ = ["KIND_EVENT", "KIND_READING", "Outbox", "Row", "StoreError"]

log = logging.getLogger("twinedge.outbox")
T = TypeVar("T")

KIND_READING = 0
KIND_EVENT = 1

#: (seq, kind, asset, quantity, value, unit, observed_at, received_at, quality, score, body)
Row = tuple[
    int,
    int,
    str,
    str | None,
    float | None,
    str | None,
    float | None,
    float,
    str | None,
    float | None,
    str | None,
]

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_outbox",
        """
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            kind INTEGER NOT NULL,
            asset TEXT NOT NULL,
            quantity TEXT,
            value REAL,
            unit TEXT,
            observed_at REAL,
            received_at REAL NOT NULL,
            quality TEXT,
            score REAL,
            body TEXT
        );
        CREATE INDEX outbox_events ON outbox(seq) WHERE kind = 1;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE drops (asset TEXT PRIMARY KEY, count INTEGER NOT NULL);
        """,
    ),
    (
        "0002_twins",
        "CREATE TABLE twins (asset TEXT PRIMARY KEY, revision INTEGER NOT NULL,"
        " state TEXT NOT NULL);",
    ),
)


class StoreError(TwinedgeError, OSError):
    """The store could not take rows (disk full, file removed); nothing was acknowledged."""


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
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.synchronous = synchronous.upper()
        self.session = ""
        self.boot = 0
        self.rows = 0
        self.dropped: dict[str, int] = {}
        self.dropped_unstored = 0  # rows refused because the disk was full (never stored)
        self.recovered_from: Path | None = None  # set when a corrupt file was moved aside
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
        except sqlite3.DatabaseError as e:
            self._quarantine(str(e))
            self._db = self._connect()
        db = self._db
        with self._atomic():
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if "session" not in meta:
                meta["session"] = uuid.uuid4().hex[:12]
                meta["created_at"] = str(time.time())
                db.execute("INSERT INTO meta VALUES ('session', ?)", (meta["session"],))
                db.execute("INSERT INTO meta VALUES ('created_at', ?)", (meta["created_at"],))
            self.boot = int(meta.get("boot", "0")) + 1
            db.execute("INSERT OR REPLACE INTO meta VALUES ('boot', ?)", (str(self.boot),))
        self.session = meta["session"]
        self.rows = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        self.dropped = dict(db.execute("SELECT asset, count FROM drops").fetchall())
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
        self._db.execute("COMMIT")

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
        rows: list[tuple[Any, ...]] = [
            (
                KIND_READING,
                r.asset,
                r.quantity,
                r.value,
                r.unit,
                r.observed_at,
                r.received_at,
                r.quality.value,
                r.score,
                None,
            )
            for r in readings
        ]
        now = time.time()
        rows += [
            (KIND_EVENT, asset, None, None, None, None, now, None, None, json.dumps(body))
            for asset, body in events
        ]
        return await self._run(self._append, rows)

    def _append(self, rows: list[tuple[Any, ...]]) -> int:
        try:
            return self._insert(rows)
        except sqlite3.OperationalError as e:
            if "full" not in str(e):
                raise StoreError(f"store write failed: {e}") from e
        # Disk full: make room by policy (drop oldest readings) and try once more.
        log.error("store %s: disk full, dropping the oldest readings to make room", self.path)
        try:
            with self._atomic() as db:
                self._drop(db, max(len(rows), self.rows // 10), KIND_READING)
            return self._insert(rows)
        except sqlite3.OperationalError as e:
            self.dropped_unstored += len(rows)
            raise StoreError(f"store full, {len(rows)} rows not stored: {e}") from e

    def _insert(self, rows: list[tuple[Any, ...]]) -> int:
        with self._atomic() as db:
            excess = self.rows + len(rows) - self.max_rows
            if excess > 0:
                self._drop(db, excess + self.max_rows // 100, KIND_READING)
            elif self._bytes(db) > self.max_bytes:
                self._drop(db, max(len(rows), self.rows // 100), KIND_READING)
            cur = db.executemany(
                "INSERT INTO outbox (kind, asset, quantity, value, unit, observed_at, received_at,"
                " quality, score, body) VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            last: int = db.execute("SELECT last_insert_rowid()").fetchone()[0]
        self.rows += cur.rowcount
        return last

    def _bytes(self, db: sqlite3.Connection) -> int:
        used = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((used - free) * self._page_size)

    def _drop(self, db: sqlite3.Connection, n: int, kind: int) -> None:
        """Drop the ``n`` oldest rows of ``kind`` (events only once no readings are left)."""
        pick = "SELECT seq FROM outbox WHERE kind = ? ORDER BY seq LIMIT ?"
        counts = db.execute(
            f"SELECT asset, count(*) FROM outbox WHERE seq IN ({pick}) GROUP BY asset", (kind, n)
        ).fetchall()
        gone = db.execute(f"DELETE FROM outbox WHERE seq IN ({pick})", (kind, n)).rowcount
        db.executemany(
            "INSERT INTO drops VALUES (?, ?) ON CONFLICT(asset) DO UPDATE SET count = count + ?",
            [(asset, c, c) for asset, c in counts],
        )
        for asset, c in counts:
            self.dropped[asset] = self.dropped.get(asset, 0) + c
        self.rows -= gone
        if gone:
            log.warning(
                "buffer full: dropped %d oldest %s by policy",
                gone,
                "readings" if kind == KIND_READING else "events",
            )
        if gone < n and kind == KIND_READING:
            self._drop(db, n - gone, KIND_EVENT)

    # -- reading and acknowledging ------------------------------------------------------------

    async def peek(self, after: int, limit: int) -> list[Row]:
        """Up to ``limit`` rows with seq > ``after``, oldest first (not removed)."""
        return await self._run(self._peek, after, limit)

    def _peek(self, after: int, limit: int) -> list[Row]:
        assert self._db is not None
        return self._db.execute(
            "SELECT seq, kind, asset, quantity, value, unit, observed_at, received_at, quality,"
            " score, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()

    async def ack(self, first: int, last: int) -> int:
        """Remove rows ``first..last`` (inclusive) after the broker acknowledged them."""
        return await self._run(self._ack, first, last)

    def _ack(self, first: int, last: int) -> int:
        with self._atomic() as db:
            gone = db.execute(
                "DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (first, last)
            ).rowcount
        self.rows -= gone
        return int(gone)

    # -- twins and facts -----------------------------------------------------------------------

    async def save_twins(self, twins: Mapping[str, tuple[int, Mapping[str, Any]]]) -> None:
        """Keep the latest twin snapshots so revisions continue across restarts."""
        rows = [(a, rev, json.dumps(state)) for a, (rev, state) in twins.items()]
        await self._run(self._save_twins, rows)

    def _save_twins(self, rows: list[tuple[str, int, str]]) -> None:
        with self._atomic() as db:
            db.executemany("INSERT OR REPLACE INTO twins VALUES (?, ?, ?)", rows)

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
        for suffix in ("", "-wal"):
            p = Path(f"{self.path}{suffix}")
            if p.exists():
                total += p.stat().st_size
        return total

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values()) + self.dropped_unstored
