"""Materialise twins, readings and events from the native feed into SQLite.

:class:`TwinStore` applies batches of decoded messages in one transaction each:

- readings and events are inserted by their natural key (gateway, session, seq) with
  ``INSERT OR IGNORE``, so a resend that batches rows differently still lands once;
- a full twin replaces the stored one unless it is older (same session, lower revision);
- a delta applies only on top of ``revision - 1``: older or equal revisions are duplicates,
  a jump is a gap: the delta is held and a rebirth request is returned for the caller to
  publish (at most one per gateway per ``rebirth_holdoff`` seconds); the held deltas apply as
  soon as the missing ones or a newer full twin arrive;
- births and deaths keep each gateway's session, boot and liveness.

Message keys seen recently are remembered (bounded) to skip resends cheaply; the natural keys
above make replays idempotent across restarts too. Nothing here does network I/O.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.feed.decode import FeedMessage

__all__ = ["RebirthRequest", "SinkCounters", "TwinStore", "merge_patch"]

log = logging.getLogger("twinedge.feed.store")

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_sink",
        """
        CREATE TABLE gateways (gateway TEXT PRIMARY KEY, site TEXT NOT NULL, session TEXT NOT NULL,
            boot INTEGER NOT NULL, online INTEGER NOT NULL, assets TEXT NOT NULL,
            state TEXT NOT NULL, updated_at REAL NOT NULL);
        CREATE TABLE twins (gateway TEXT NOT NULL, asset TEXT NOT NULL, site TEXT NOT NULL,
            session TEXT NOT NULL, revision INTEGER NOT NULL, twin TEXT NOT NULL,
            updated_at REAL NOT NULL, PRIMARY KEY (gateway, asset));
        CREATE TABLE readings (gateway TEXT NOT NULL, session TEXT NOT NULL, seq INTEGER NOT NULL,
            asset TEXT NOT NULL, quantity TEXT NOT NULL, value REAL, unit TEXT NOT NULL,
            observed_at REAL, received_at REAL NOT NULL, quality TEXT NOT NULL, score REAL,
            backfill INTEGER NOT NULL, PRIMARY KEY (gateway, session, seq)) WITHOUT ROWID;
        CREATE TABLE events (gateway TEXT NOT NULL, session TEXT NOT NULL, seq INTEGER NOT NULL,
            asset TEXT NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL, ts REAL NOT NULL,
            PRIMARY KEY (gateway, session, seq));
        CREATE TABLE applied (gateway TEXT NOT NULL, asset TEXT NOT NULL, desired_id TEXT NOT NULL,
            ok INTEGER NOT NULL, config TEXT NOT NULL, errors TEXT NOT NULL, ts REAL NOT NULL,
            PRIMARY KEY (gateway, asset));
        """,
    ),
)


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396 in place: objects merge, ``None`` deletes, anything else replaces. The patch
    comes from a freshly decoded message, so its values are taken without copying."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif type(value) is dict:
            cur = target.get(key)
            target[key] = merge_patch(cur, value) if type(cur) is dict else merge_patch({}, value)
        else:
            target[key] = value
    return target


@dataclass(frozen=True, slots=True)
class RebirthRequest:
    """Publish ``payload`` (JSON) to ``topic`` to ask a gateway for its full state again."""

    topic: str
    payload: dict[str, Any]


@dataclass(slots=True)
class SinkCounters:
    messages: int = 0
    readings: int = 0
    duplicate_messages: int = 0
    duplicate_rows: int = 0
    stale_twins: int = 0
    held_deltas: int = 0
    gaps: int = 0
    rebirths_requested: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class _Pending:
    """What one batch will write, gathered before the transaction."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    dirty: set[tuple[str, str]] = field(default_factory=set)
    gateways: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    applied: list[tuple[Any, ...]] = field(default_factory=list)
    rebirths: dict[str, RebirthRequest] = field(default_factory=dict)


@dataclass(slots=True)
class _Twin:
    site: str
    session: str
    revision: int
    twin: dict[str, Any]
    held: dict[int, dict[str, Any]] = field(default_factory=dict)


class TwinStore:
    """``with TwinStore(path) as store: rebirths = store.apply(batch)``."""

    def __init__(
        self,
        path: str | Path,
        *,
        consumer: str = "twinedge-feed-sink",
        rebirth_holdoff: float = 5.0,
        max_held: int = 1000,
        remember_keys: int = 100_000,
    ) -> None:
        self.path = Path(path)
        self.consumer = consumer
        self.rebirth_holdoff = rebirth_holdoff
        self.max_held = max_held
        self.counters = SinkCounters()
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_keys
        self._twins: dict[tuple[str, str], _Twin] = {}
        self._gateways: dict[str, tuple[str, int]] = {}  # gateway -> (session, boot)
        self._asked: dict[str, float] = {}  # gateway -> monotonic time of the last rebirth request
        self._db: sqlite3.Connection | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> TwinStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        self._db = db
        self._migrate(db)
        self._load(db)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, at REAL)")
        done = {r[0] for r in db.execute("SELECT name FROM migrations")}
        for name, sql in MIGRATIONS:
            if name not in done:
                db.execute("BEGIN")
                for stmt in filter(str.strip, sql.split(";")):
                    db.execute(stmt)
                db.execute("INSERT INTO migrations VALUES (?, ?)", (name, time.time()))
                db.execute("COMMIT")

    def _load(self, db: sqlite3.Connection) -> None:
        """Twins and gateways from the file: a restarted sink resumes where it stopped."""
        for gw, asset, site, session, rev, twin in db.execute(
            "SELECT gateway, asset, site, session, revision, twin FROM twins"
        ):
            self._twins[(gw, asset)] = _Twin(site, session, rev, json.loads(twin))
        for gw, session, boot in db.execute("SELECT gateway, session, boot FROM gateways"):
            self._gateways[gw] = (session, boot)

    @contextmanager
    def _atomic(self) -> Iterator[sqlite3.Connection]:
        assert self._db is not None, "TwinStore used outside its with block"
        db = self._db
        db.execute("BEGIN")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- queries -------------------------------------------------------------------------------

    def twin(self, gateway: str, asset: str) -> tuple[int, dict[str, Any]] | None:
        """The materialised ``(revision, twin)`` of one asset, or None."""
        t = self._twins.get((gateway, asset))
        return (t.revision, t.twin) if t and t.revision >= 0 else None

    def gateway_online(self, gateway: str) -> bool | None:
        """Whether the gateway's last status was a birth (True) or a death (False); None if
        no status of it was seen."""
        assert self._db is not None
        row = self._db.execute("SELECT online FROM gateways WHERE gateway = ?", (gateway,))
        found = row.fetchone()
        return None if found is None else bool(found[0])

    def twins(self) -> Iterator[tuple[str, str, int, dict[str, Any]]]:
        """Every materialised twin (not the assets still waiting for their first full twin)."""
        for (gw, asset), t in self._twins.items():
            if t.revision >= 0:
                yield gw, asset, t.revision, t.twin

    # -- applying ------------------------------------------------------------------------------

    def apply(self, batch: Iterable[FeedMessage]) -> list[RebirthRequest]:
        """Apply decoded messages in one transaction; return the rebirth requests to publish."""
        w = _Pending()
        for msg in batch:
            self.counters.messages += 1
            if self._seen(msg.doc.get("key")):
                self.counters.duplicate_messages += 1
                continue
            d = msg.doc
            kind = msg.kind
            if kind == "readings":
                w.rows.extend(self._rows(d))
            elif kind == "delta":
                self._delta(msg, w.dirty, w.rebirths)
            elif kind == "twin":
                self._full(msg, w.dirty)
            elif kind == "event":
                body = d["event"]
                ev = (d["gateway"], d["session"], d["seq"], d["asset"], str(body.get("type")))
                w.events.append((*ev, json.dumps(body), d["ts"]))
            elif kind in ("birth", "death"):
                self._status(msg, w.gateways)
            elif kind == "applied":
                config, errors = json.dumps(d["config"]), json.dumps(d["errors"])
                ap = (d["gateway"], d["asset"], d["desired_id"], d["ok"], config, errors)
                w.applied.append((*ap, d["ts"]))
        self._write(w)
        self.counters.batches += 1
        return list(w.rebirths.values())

    def _seen(self, key: Any) -> bool:
        """Whether a message key was seen recently (and remember it if not)."""
        if not isinstance(key, str):
            return False
        if key in self._keys:
            return True
        self._keys[key] = None
        if len(self._keys) > self._remember:
            self._keys.popitem(last=False)
        return False

    def _rows(self, doc: Mapping[str, Any]) -> Iterator[tuple[Any, ...]]:
        gw, session, backfill = doc["gateway"], doc["session"], int(bool(doc["backfill"]))
        for r in doc["rows"]:
            yield (gw, session, *r, backfill)

    def _write(self, w: _Pending) -> None:
        now = time.time()
        with self._atomic() as db:
            if w.rows:
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO readings VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", w.rows
                )
                fresh = db.total_changes - before
                self.counters.readings += fresh
                self.counters.duplicate_rows += len(w.rows) - fresh
            if w.events:
                db.executemany("INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?)", w.events)
            if w.dirty:
                twins = [(k, self._twins[k]) for k in w.dirty]
                db.executemany(
                    "INSERT OR REPLACE INTO twins VALUES (?,?,?,?,?,?,?)",
                    [
                        (*k, t.site, t.session, t.revision, json.dumps(t.twin), now)
                        for k, t in twins
                    ],
                )
            if w.gateways:
                db.executemany(
                    "INSERT OR REPLACE INTO gateways VALUES (?,?,?,?,?,?,?,?)",
                    [(*g, now) for g in w.gateways.values()],
                )
            if w.applied:
                db.executemany("INSERT OR REPLACE INTO applied VALUES (?,?,?,?,?,?,?)", w.applied)

    # -- twins ---------------------------------------------------------------------------------

    def _full(self, msg: FeedMessage, dirty: set[tuple[str, str]]) -> None:
        d = msg.doc
        k = (d["gateway"], d["asset"])
        cur = self._twins.get(k)
        rev = int(d["revision"])
        if cur is not None and cur.session == d["session"] and rev < cur.revision:
            self.counters.stale_twins += 1
            return
        held = cur.held if cur is not None and cur.session == d["session"] else {}
        t = _Twin(msg.topic.site, d["session"], rev, dict(d["twin"]), held)
        self._twins[k] = t
        self._drain(t)
        dirty.add(k)

    def _delta(
        self, msg: FeedMessage, dirty: set[tuple[str, str]], rebirths: dict[str, RebirthRequest]
    ) -> None:
        d = msg.doc
        k = (d["gateway"], d["asset"])
        rev = int(d["revision"])
        cur = self._twins.get(k)
        if cur is not None and cur.session == d["session"]:
            if rev <= cur.revision:
                self.counters.duplicate_messages += 1
                return
            if rev == cur.revision + 1:
                cur.twin = merge_patch(cur.twin, d["patch"])
                cur.revision = rev
                self._drain(cur)
                dirty.add(k)
                return
        # no base yet, another session, or a gap: hold it and ask for the full state
        if cur is None or cur.session != d["session"]:
            cur = _Twin(msg.topic.site, d["session"], -1, {})
            self._twins[k] = cur
        if len(cur.held) < self.max_held:
            cur.held[rev] = d["patch"]
            self.counters.held_deltas += 1
        self.counters.gaps += 1
        self._ask(msg, cur.revision, rev, rebirths)

    def _drain(self, t: _Twin) -> None:
        for r in sorted(t.held):
            if r <= t.revision:
                del t.held[r]
            elif r == t.revision + 1:
                t.twin = merge_patch(t.twin, t.held.pop(r))
                t.revision = r
            else:
                break

    def _ask(
        self, msg: FeedMessage, have: int, got: int, rebirths: dict[str, RebirthRequest]
    ) -> None:
        gw = msg.topic.gateway
        now = time.monotonic()
        if gw in rebirths or now - self._asked.get(gw, -1e9) < self.rebirth_holdoff:
            return
        self._asked[gw] = now
        payload: dict[str, Any] = {
            "v": 1,
            "reason": "gap" if have >= 0 else "unknown-asset",
            "asset": msg.doc["asset"],
            "consumer": self.consumer,
            "got": got,
        }
        if have >= 0:
            payload["have"] = have
        rebirths[gw] = RebirthRequest(f"{msg.topic.base}/rebirth", payload)
        self.counters.rebirths_requested += 1
        log.info(
            "feed: %s/%s revision %d after %d: asking for a rebirth",
            gw,
            msg.doc["asset"],
            got,
            have,
        )

    def _status(self, msg: FeedMessage, gateways: dict[str, tuple[Any, ...]]) -> None:
        d = msg.doc
        gw, session, boot = d["gateway"], d["session"], int(d["boot"])
        known = self._gateways.get(gw)
        if known is not None and known[0] == session and boot < known[1]:
            self.counters.stale_twins += 1  # a retained status older than what we hold
            return
        self._gateways[gw] = (session, boot)
        birth = d["kind"] == "birth"
        assets = json.dumps(d.get("assets", {})) if birth else "{}"
        state = json.dumps(d.get("state", {}) if birth else {"reason": d.get("reason")})
        gateways[gw] = (gw, msg.topic.site, session, boot, int(birth), assets, state)
        if not birth and self._db is not None:
            # keep the assets a death's row must not forget
            row = self._db.execute("SELECT assets FROM gateways WHERE gateway=?", (gw,)).fetchone()
            if row:
                gateways[gw] = (*gateways[gw][:5], row[0], state)
