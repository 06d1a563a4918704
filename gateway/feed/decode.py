"""Decode and validate one native feed message: its topic, its JSON, its schema.

``decode(topic, payload)`` returns a :class:`FeedMessage` or raises
:class:`~gateway.errors.FrameError` naming the topic and what was wrong. Validation is either
``full`` (the JSON Schema of the kind, gateway/sync/schemas/) or ``light`` (the head fields and
the shape the sink relies on, ~20x cheaper, for high-rate consumers).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.errors import FrameError
from gateway.sync import schemas
from gateway.sync.messages import FEED_VERSION, READING_COLUMNS

__all__ = ["FeedMessage", "TopicInfo", "Validation", "decode", "parse_topic"]

Validation = Literal["full", "light"]

#: topic leaf -> message kinds it may carry
_LEAVES = {
    "status": ("birth", "death"),
    "twin": ("twin",),
    "delta": ("delta",),
    "readings": ("readings",),
    "event": ("event",),
    "applied": ("applied",),
    "desired": ("desired",),
    "command": ("command",),
    "rebirth": ("rebirth",),
}
_WITH_ASSET = ("twin", "delta", "event", "applied", "desired", "command")
#: the high-rate kinds (and the twins of a birth storm) that light validation checks by hand
_LIGHT = ("readings", "delta", "twin")


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """``{prefix}/{site}/{gateway}/{leaf}[/{asset}]`` split into its parts."""

    prefix: str
    site: str
    gateway: str
    leaf: str
    asset: str | None

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gateway}"


@dataclass(frozen=True, slots=True)
class FeedMessage:
    topic: TopicInfo
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", self.topic.leaf))


def parse_topic(topic: str) -> TopicInfo:
    """Split a feed topic; the prefix is everything before ``site/gateway/leaf[/asset]``."""
    parts = topic.split("/")
    if len(parts) >= 5 and parts[-2] in _WITH_ASSET:
        prefix, site, gw, leaf, asset = "/".join(parts[:-4]), *parts[-4:]
    elif len(parts) >= 4 and parts[-1] in ("status", "readings", "rebirth"):
        prefix, site, gw, leaf = "/".join(parts[:-3]), *parts[-3:]
        asset = None
    else:
        raise FrameError(f"not a feed topic: {topic!r}")
    if not (site and gw and (asset is None or asset)):
        raise FrameError(f"empty level in feed topic {topic!r}")
    return TopicInfo(prefix, site, gw, leaf, asset)


def decode(topic: str, payload: bytes, validation: Validation = "full") -> FeedMessage:
    """Parse, validate and cross-check one message against its topic."""
    info = parse_topic(topic)
    if info.leaf == "rebirth":  # the gateway acts on any payload here
        return FeedMessage(info, _loads(topic, payload) if payload else {})
    doc = _loads(topic, payload)
    kind = doc.get("kind", info.leaf)
    if kind not in _LEAVES[info.leaf]:
        raise FrameError(f"{topic}: kind {kind!r} does not belong on a {info.leaf} topic")
    if validation == "full" or kind not in _LIGHT:
        errors = sorted(schemas.validator(str(kind)).iter_errors(doc), key=lambda e: e.path)
        if errors:
            e = errors[0]
            where = "/".join(str(p) for p in e.absolute_path) or "(message)"
            raise FrameError(f"{topic}: {where}: {e.message}")
    else:
        _light(topic, doc)
    if info.leaf not in ("desired", "command"):
        if doc.get("gateway") != info.gateway:
            raise FrameError(f"{topic}: gateway {doc.get('gateway')!r} differs from the topic")
        if info.asset is not None and doc.get("asset") != info.asset:
            raise FrameError(f"{topic}: asset {doc.get('asset')!r} differs from the topic")
    return FeedMessage(info, doc)


def _loads(topic: str, payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise FrameError(f"{topic}: not JSON ({e})", data=payload) from None
    if not isinstance(doc, dict):
        raise FrameError(f"{topic}: expected a JSON object", data=payload)
    return doc


_NUM = (int, float)


def _light(topic: str, doc: Mapping[str, Any]) -> None:
    """What the sink relies on in the high-rate kinds (readings, delta, twin), checked by hand."""
    if doc.get("v") != FEED_VERSION:
        raise FrameError(f"{topic}: v: expected {FEED_VERSION}, got {doc.get('v')!r}")
    for name in ("gateway", "session", "key"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise FrameError(f"{topic}: {name}: expected a non-empty string")
    if not isinstance(doc.get("ts"), _NUM):
        raise FrameError(f"{topic}: ts: expected a number")
    if doc["kind"] in ("delta", "twin"):
        body = "patch" if doc["kind"] == "delta" else "twin"
        rev = doc.get("revision")
        low = 1 if body == "patch" else 0
        if type(rev) is not int or rev < low:
            raise FrameError(f"{topic}: revision: expected an integer >= {low}, got {rev!r}")
        if not isinstance(doc.get(body), dict) or not isinstance(doc.get("asset"), str):
            raise FrameError(f"{topic}: {body}/asset: expected an object and a string")
        return
    rows = doc.get("rows")
    if doc.get("columns") != list(READING_COLUMNS) or not isinstance(rows, list) or not rows:
        raise FrameError(f"{topic}: columns/rows: expected {list(READING_COLUMNS)} and rows")
    if not isinstance(doc.get("backfill"), bool):
        raise FrameError(f"{topic}: backfill: expected true or false")
    for i, row in enumerate(rows):
        if not (
            type(row) is list
            and len(row) == 9
            and type(row[0]) is int
            and type(row[1]) is str
            and type(row[2]) is str
            and (row[3] is None or type(row[3]) in _NUM)
            and type(row[4]) is str
            and (row[5] is None or type(row[5]) in _NUM)
            and type(row[6]) in _NUM
            and row[7] in _QUALITIES
            and (row[8] is None or type(row[8]) in _NUM)
        ):
            raise FrameError(f"{topic}: rows/{i}: expected {list(READING_COLUMNS)}")


_QUALITIES = frozenset(("good", "suspect", "stale", "invalid"))
