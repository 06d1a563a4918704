"""The SQLite sink's semantics without a broker: dedupe, revision order, gaps, restarts."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import FrameError
from gateway.feed import FeedMessage, TwinStore, decode
from gateway.sync import messages as m

from .conftest import T0, value

TOPICS = m.Topics("twinedge/v1", "dublin", "gw-1")


def wire(topic: str, doc: dict[str, Any]) -> FeedMessage:
    return decode(topic, m.dumps(doc))


def twin_msg(rev: int, twin: dict[str, Any], session: str = "s-1") -> FeedMessage:
    return wire(TOPICS.twin("wq-1"), m.twin("gw-1", session, T0, "wq-1", rev, twin))


def delta_msg(rev: int, patch: dict[str, Any], session: str = "s-1") -> FeedMessage:
    return wire(TOPICS.delta("wq-1"), m.delta("gw-1", session, T0, "wq-1", rev, patch))


def rows_msg(seqs: list[int], backfill: bool = False) -> FeedMessage:
    rows = [(s, "wq-1", "temperature", 10.0 + s, "CEL", T0 + s, T0 + s, "good", None) for s in seqs]
    return wire(TOPICS.readings, m.readings_batch("gw-1", "s-1", T0, rows, backfill))


def ph(x: float) -> dict[str, Any]:
    return {"state": {"ph": value(x, "C62")}}


@pytest.fixture
def twin(twins: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return twins["water-quality"]


def test_readings_land_once_by_seq_even_rebatched(tmp_path: Path) -> None:
    with TwinStore(tmp_path / "s.db") as store:
        store.apply([rows_msg([1, 2, 3])])
        store.apply([rows_msg([1, 2, 3])])  # the same batch again: dropped by its key
        store.apply([rows_msg([2, 3, 4, 5], backfill=True)])  # rebatched resend + new rows
        assert store.counters.readings == 5
        assert store.counters.duplicate_messages == 1
        assert store.counters.duplicate_rows == 2
    db = sqlite3.connect(tmp_path / "s.db")
    got = db.execute("SELECT seq, value, backfill FROM readings ORDER BY seq").fetchall()
    assert got == [(1, 11.0, 0), (2, 12.0, 0), (3, 13.0, 0), (4, 14.0, 1), (5, 15.0, 1)]


def test_deltas_apply_in_revision_order(tmp_path: Path, twin: dict[str, Any]) -> None:
    with TwinStore(tmp_path / "s.db") as store:
        assert store.apply([twin_msg(12, twin)]) == []
        # 14 arrives before 13: held, and a rebirth is asked for once
        asks = store.apply([delta_msg(14, ph(7.4))])
        assert [a.topic for a in asks] == ["twinedge/v1/dublin/gw-1/rebirth"]
        assert asks[0].payload == {
            "v": 1,
            "reason": "gap",
            "asset": "wq-1",
            "consumer": "twinedge-feed-sink",
            "got": 14,
            "have": 12,
        }
        assert store.twin("gw-1", "wq-1") == (12, twin)
        assert store.apply([delta_msg(13, ph(7.3)), delta_msg(13, ph(7.3))]) == []
        rev, state = store.twin("gw-1", "wq-1")  # type: ignore[misc]
        assert rev == 14
        assert state["state"]["ph"]["value"] == 7.4
        store.apply([delta_msg(12, ph(1.0))])  # older than held: ignored
        assert store.twin("gw-1", "wq-1")[0] == 14  # type: ignore[index]
        store.apply([delta_msg(15, {"anomalies": {"turbidity": None}})])
        assert store.twin("gw-1", "wq-1")[1]["anomalies"] == {}  # type: ignore[index]
        assert store.counters.gaps == 1


def test_full_twin_resolves_a_gap_and_stale_twins_are_ignored(
    tmp_path: Path, twin: dict[str, Any]
) -> None:
    with TwinStore(tmp_path / "s.db") as store:
        store.apply([twin_msg(12, twin)])
        store.apply([delta_msg(16, ph(7.6))])  # 13..15 lost for good
        newer = dict(twin, revision=15)
        store.apply([twin_msg(15, newer)])  # the rebirth's full twin
        rev, state = store.twin("gw-1", "wq-1")  # type: ignore[misc]
        assert rev == 16 and state["state"]["ph"]["value"] == 7.6
        store.apply([twin_msg(12, twin)])  # the first twin again: dropped by its key
        store.apply([twin_msg(14, dict(twin, revision=14))])  # older than what we hold
        assert store.twin("gw-1", "wq-1")[0] == 16  # type: ignore[index]
        assert store.counters.duplicate_messages == 1
        assert store.counters.stale_twins == 1


def test_rebirth_requests_are_rate_limited_per_gateway(
    tmp_path: Path, twin: dict[str, Any]
) -> None:
    with TwinStore(tmp_path / "s.db", rebirth_holdoff=3600) as store:
        store.apply([twin_msg(1, twin)])
        assert len(store.apply([delta_msg(5, ph(1))])) == 1
        assert store.apply([delta_msg(9, ph(2))]) == []
        assert store.counters.rebirths_requested == 1


def test_delta_before_any_twin_asks_for_the_asset(tmp_path: Path) -> None:
    with TwinStore(tmp_path / "s.db") as store:
        (ask,) = store.apply([delta_msg(3, ph(7.0))])
        assert ask.payload["reason"] == "unknown-asset"
        assert "have" not in ask.payload


def test_new_session_replaces_the_twin(tmp_path: Path, twin: dict[str, Any]) -> None:
    with TwinStore(tmp_path / "s.db") as store:
        store.apply([twin_msg(40, twin)])
        store.apply([twin_msg(2, dict(twin, revision=2), session="s-2")])
        assert store.twin("gw-1", "wq-1")[0] == 2  # type: ignore[index]
        store.apply([delta_msg(3, ph(6.9), session="s-2")])
        assert store.twin("gw-1", "wq-1")[0] == 3  # type: ignore[index]


def test_state_survives_a_restart(tmp_path: Path, twin: dict[str, Any]) -> None:
    path = tmp_path / "s.db"
    with TwinStore(path) as store:
        store.apply(
            [
                wire(TOPICS.status, m.birth("gw-1", "s-1", 2, "dublin", T0, {"wq-1": 12}, {})),
                twin_msg(12, twin),
                delta_msg(13, ph(7.3)),
            ]
        )
    with TwinStore(path) as store:
        assert store.twin("gw-1", "wq-1")[0] == 13  # type: ignore[index]
        store.apply([twin_msg(12, twin)])  # the retained twin replayed on resubscribe
        assert store.twin("gw-1", "wq-1")[0] == 13  # type: ignore[index]
        store.apply([wire(TOPICS.status, m.death("gw-1", "s-1", 2, T0, "lost"))])
    db = sqlite3.connect(path)
    online, assets, state = db.execute("SELECT online, assets, state FROM gateways").fetchone()
    assert online == 0 and json.loads(assets) == {"wq-1": 12}
    assert json.loads(state) == {"reason": "lost"}


def test_events_and_applied_are_kept(tmp_path: Path) -> None:
    body = {
        "type": "anomaly",
        "asset": "wq-1",
        "quantities": ["ph"],
        "score": 0.9,
        "threshold": 0.8,
        "model": "wq@1",
        "detected_at": T0,
        "observed_at": T0,
        "state": "start",
    }
    with TwinStore(tmp_path / "s.db") as store:
        ev = wire(TOPICS.event("wq-1"), m.event("gw-1", "s-1", T0, 9, "wq-1", body))
        ap = wire(
            TOPICS.applied("wq-1"), m.applied("gw-1", "s-1", T0, "wq-1", "d-1", {"period": 5.0}, [])
        )
        store.apply([ev, ap, ev])
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("SELECT seq, type FROM events").fetchall() == [(9, "anomaly")]
    assert db.execute("SELECT desired_id, ok FROM applied").fetchall() == [("d-1", 1)]


@pytest.mark.parametrize("validation", ["full", "light"])
def test_decode_refuses_what_the_sink_cannot_use(validation: Any) -> None:
    ok = m.readings_batch(
        "gw-1", "s-1", T0, [(1, "a", "q", 1.0, "C62", T0, T0, "good", None)], False
    )
    decode(TOPICS.readings, m.dumps(ok), validation)
    bad_row = json.loads(m.dumps(ok))
    bad_row["rows"][0][3] = {"x": 1}
    cases = [
        (TOPICS.readings, json.dumps(bad_row).encode(), "rows"),
        (TOPICS.readings, b"{not json", "not JSON"),
        (TOPICS.readings, b"[1]", "JSON object"),
        (TOPICS.delta("wq-1"), m.dumps(m.delta("gw-1", "s", T0, "wq-1", 0, {})), "revision"),
        (TOPICS.delta("other"), m.dumps(m.delta("gw-1", "s", T0, "wq-1", 2, {})), "asset"),
        ("twinedge/v1/dublin/gw-2/readings", m.dumps(ok), "gateway"),
        (TOPICS.status, m.dumps(ok), "does not belong"),
        ("twinedge/v1/dublin/gw-1/bogus", m.dumps(ok), "not a feed topic"),
    ]
    for topic, payload, needle in cases:
        with pytest.raises(FrameError, match=needle):
            decode(topic, payload, validation)


def test_a_rebirth_birth_is_not_taken_for_a_duplicate(tmp_path: Path) -> None:
    first = m.birth("gw-1", "s-1", 2, "dublin", T0, {"wq-1": 12}, {})
    again = m.birth("gw-1", "s-1", 2, "dublin", T0 + 30, {"wq-1": 15}, {})  # same boot, later
    assert first["key"] != again["key"]
    with TwinStore(tmp_path / "s.db") as store:
        store.apply([wire(TOPICS.status, first), wire(TOPICS.status, again)])
        assert store.counters.duplicate_messages == 0
    db = sqlite3.connect(tmp_path / "s.db")
    assert json.loads(db.execute("SELECT assets FROM gateways").fetchone()[0]) == {"wq-1": 15}
