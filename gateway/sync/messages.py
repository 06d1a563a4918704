"""The native feed, version 1: topic layout and message builders. Pure code, no I/O.

Topics (``prefix`` defaults to ``twinedge/v1``; ``{gw}`` is the gateway id)::

    {prefix}/{site}/{gw}/status            retained  birth (full gateway view) or death (LWT)
    {prefix}/{site}/{gw}/twin/{asset}      retained  full twin object, republished at every birth
    {prefix}/{site}/{gw}/delta/{asset}               twin delta: RFC 7396 merge patch + revision
    {prefix}/{site}/{gw}/readings                    batch of readings from the durable outbox
    {prefix}/{site}/{gw}/event/{asset}               anomaly (and other) events, from the outbox
    {prefix}/{site}/{gw}/applied/{asset}   retained  applied config after a desired change
    {prefix}/{site}/{gw}/desired/{asset}   downlink  desired config change (period, thresholds)
    {prefix}/{site}/{gw}/command/{asset}   downlink  device command (dim, identify, reboot)
    {prefix}/{site}/{gw}/rebirth           downlink  any payload: republish status and all twins

Every message is a JSON object with ``v`` (feed version), ``kind``, ``gateway``, ``session`` and
``key``. ``session`` names the gateway's durable store (a new one only after the store is
replaced), so ``key`` is unique for the same content across restarts and resends: consumers drop
a message whose key they have seen. Readings carry a per-row ``seq`` from the outbox, unique
within (gateway, session): dedupe rows by it even if a resend batches them differently. Twin
deltas carry ``revision`` (+1 per change of that asset's twin); a consumer that sees a gap
publishes to ``rebirth``. Times are Unix epoch seconds (UTC) as numbers with millisecond
precision; ``backfill: true`` marks readings published after they waited in the buffer longer
than the gateway's live window, so nobody mistakes history for live data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "FEED_VERSION",
    "READING_COLUMNS",
    "Topics",
    "applied",
    "birth",
    "death",
    "delta",
    "dumps",
    "event",
    "readings_batch",
    "readings_payload",
    "twin",
]

FEED_VERSION = 1
READING_COLUMNS = (
    "seq",
    "asset",
    "quantity",
    "value",
    "unit",
    "observed_at",
    "received_at",
    "quality",
    "score",
)


class Topics:
    """The topic names of one gateway."""

    __slots__ = ("base", "prefix")

    def __init__(self, prefix: str, site: str, gateway: str) -> None:
        self.prefix = prefix.rstrip("/")
        self.base = f"{self.prefix}/{site}/{gateway}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def readings(self) -> str:
        return f"{self.base}/readings"

    @property
    def rebirth(self) -> str:
        return f"{self.base}/rebirth"

    def twin(self, asset: str) -> str:
        return f"{self.base}/twin/{asset}"

    def delta(self, asset: str) -> str:
        return f"{self.base}/delta/{asset}"

    def event(self, asset: str) -> str:
        return f"{self.base}/event/{asset}"

    def applied(self, asset: str) -> str:
        return f"{self.base}/applied/{asset}"

    @property
    def desired_filter(self) -> str:
        return f"{self.base}/desired/+"

    @property
    def command_filter(self) -> str:
        return f"{self.base}/command/+"

    def downlink_asset(self, topic: str) -> tuple[str, str] | None:
        """``(kind, asset)`` for a desired/command topic of this gateway, else None."""
        head = self.base + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) == 2 and parts[0] in ("desired", "command") and parts[1]:
            return parts[0], parts[1]
        return None


def dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _head(kind: str, gateway: str, session: str, key: str, ts: float) -> dict[str, Any]:
    return {
        "v": FEED_VERSION,
        "kind": kind,
        "gateway": gateway,
        "session": session,
        "key": key,
        "ts": round(ts, 3),
    }


def birth(
    gateway: str,
    session: str,
    boot: int,
    site: str,
    ts: float,
    assets: Mapping[str, int],
    gateway_state: Mapping[str, Any],
) -> dict[str, Any]:
    """The gateway's birth: which assets it serves (with their current revision) and its state.

    ``boot`` counts the gateway's starts on this store; full twins follow on their own topics.
    A birth is rebuilt at every connection and rebirth with the revisions of that moment, so its
    key carries ``ts`` too: a consumer dropping repeated keys must not drop a newer birth.
    """
    key = f"{gateway}:{session}:birth:{boot}:{round(ts * 1000)}"
    doc = _head("birth", gateway, session, key, ts)
    doc.update(site=site, boot=boot, assets=dict(assets), state=dict(gateway_state))
    return doc


def death(gateway: str, session: str, boot: int, ts: float, reason: str) -> dict[str, Any]:
    """Death: sent on a clean stop, and registered as the last will for an unclean one."""
    doc = _head("death", gateway, session, f"{gateway}:{session}:death:{boot}", ts)
    doc.update(boot=boot, reason=reason)
    return doc


def twin(
    gateway: str, session: str, ts: float, asset: str, revision: int, state: Mapping[str, Any]
) -> dict[str, Any]:
    """The full twin object of one asset at ``revision``."""
    doc = _head("twin", gateway, session, f"{gateway}:{session}:{asset}:{revision}:full", ts)
    doc.update(asset=asset, revision=revision, twin=dict(state))
    return doc


def delta(
    gateway: str, session: str, ts: float, asset: str, revision: int, patch: Mapping[str, Any]
) -> dict[str, Any]:
    """A twin delta: ``patch`` is an RFC 7396 merge patch from ``revision - 1`` to ``revision``."""
    doc = _head("delta", gateway, session, f"{gateway}:{session}:{asset}:{revision}", ts)
    doc.update(asset=asset, revision=revision, patch=dict(patch))
    return doc


def readings_batch(
    gateway: str, session: str, ts: float, rows: Sequence[Sequence[Any]], backfill: bool
) -> dict[str, Any]:
    """A batch of outbox rows in :data:`READING_COLUMNS` order; the key names the seq range."""
    first, last = rows[0][0], rows[-1][0]
    doc = _head("readings", gateway, session, f"{gateway}:{session}:r{first}-{last}", ts)
    doc.update(backfill=backfill, columns=list(READING_COLUMNS), rows=rows)
    return doc


def readings_payload(
    gateway: str,
    session: str,
    ts: float,
    first: int,
    last: int,
    rows_json: str | Sequence[str],
    backfill: bool,
) -> bytes:
    """The same message as :func:`readings_batch`, spliced from rows already encoded as JSON
    (``rows_json`` is the rows joined by commas, without brackets, or a sequence of such pieces,
    one per stored batch): the hot path of the uplink. Built with one large allocation (the
    payload) instead of four, which a drain with 16 messages in flight would otherwise add to
    its peak of memory."""
    head = _head("readings", gateway, session, f"{gateway}:{session}:r{first}-{last}", ts)
    head.update(backfill=backfill, columns=list(READING_COLUMNS))
    pieces = (rows_json,) if isinstance(rows_json, str) else rows_json
    parts = [dumps(head)[:-1], b',"rows":[']
    for i, piece in enumerate(pieces):
        if i:
            parts.append(b",")
        parts.append(piece.encode())
    parts.append(b"]}")
    return b"".join(parts)


def event(
    gateway: str, session: str, ts: float, seq: int, asset: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """An event from the outbox (``body["type"]`` says which: ``anomaly``, ``drop``, ...)."""
    doc = _head("event", gateway, session, f"{gateway}:{session}:e{seq}", ts)
    doc.update(seq=seq, asset=asset, event=dict(body))
    return doc


def applied(
    gateway: str,
    session: str,
    ts: float,
    asset: str,
    desired_id: str,
    config: Mapping[str, Any],
    errors: Iterable[str],
) -> dict[str, Any]:
    """The config in force for ``asset`` after a desired change, with any refusals."""
    key = f"{gateway}:{session}:{asset}:applied:{desired_id}"
    doc = _head("applied", gateway, session, key, ts)
    errs = list(errors)
    doc.update(asset=asset, desired_id=desired_id, ok=not errs, config=dict(config), errors=errs)
    return doc
