"""One line per feed message, for people watching the feed (``twinedge feed tail``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.feed.decode import FeedMessage
from gateway.readings import UNITS

__all__ = ["describe"]


def _clock(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "--:--:--.---"
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]


def _value(v: Any) -> str:
    if not isinstance(v, Mapping):
        return "∅" if v is None else str(v)
    x, unit = v.get("value"), UNITS.get(str(v.get("unit")), "")
    text = f"{x:g}" if isinstance(x, int | float) else str(x)
    flag = "" if v.get("quality", "good") == "good" else f" ({v.get('quality')})"
    return f"{text}{unit and ' ' + unit}{flag}"


def _state(patch: Mapping[str, Any], limit: int = 6) -> str:
    items = [f"{q}={_value(v)}" for q, v in (patch.get("state") or {}).items()]
    others = [k for k in patch if k not in ("state", "revision")]
    if len(items) > limit:
        items = [*items[:limit], f"+{len(items) - limit} more"]
    return " ".join(items + [f"[{k}]" for k in others])


def describe(msg: FeedMessage) -> str:
    """``HH:MM:SS.mmm site/gateway kind asset details``."""
    d, t = msg.doc, msg.topic
    head = f"{_clock(d.get('ts'))} {t.site}/{t.gateway} {msg.kind:<8}"
    kind = msg.kind
    if kind == "birth":
        return f"{head} boot {d['boot']}, {len(d['assets'])} assets, session {d['session']}"
    if kind == "death":
        return f"{head} boot {d['boot']}: {d['reason']}"
    if kind == "twin":
        return f"{head} {d['asset']} r{d['revision']} {_state(d['twin'])}"
    if kind == "delta":
        return f"{head} {d['asset']} r{d['revision']} {_state(d['patch'])}"
    if kind == "readings":
        rows = d["rows"]
        assets = len({r[1] for r in rows})
        mark = " BACKFILL" if d["backfill"] else ""
        return f"{head} {len(rows)} rows seq {rows[0][0]}-{rows[-1][0]}, {assets} assets{mark}"
    if kind == "event":
        e = d["event"]
        if e.get("type") == "anomaly":
            qs = ",".join(e["quantities"])
            return (
                f"{head} {d['asset']} anomaly {e['state']} {qs} score {e['score']:.2f}"
                f" > {e['threshold']:.2f} ({e['model']})"
            )
        return f"{head} {d['asset']} {e.get('type')}"
    if kind == "applied":
        status = "ok" if d["ok"] else "refused: " + "; ".join(d["errors"])
        return f"{head} {d['asset']} desired {d['desired_id']} {status} {d['config']}"
    return f"{head} {d}"
