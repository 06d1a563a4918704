"""The feed's JSON Schemas accept what the builders in gateway/sync/messages.py produce and
refuse messages a consumer could not use."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gateway.sync import messages as m
from gateway.sync import schemas

from .conftest import T0


def wire(doc: dict[str, Any]) -> dict[str, Any]:
    """What a consumer receives: the builder's output after the uplink's :func:`m.dumps`."""
    out: dict[str, Any] = json.loads(m.dumps(doc))
    return out


def built(twins: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    wq = twins["water-quality"]
    rows = [
        (41, "wq-1", "temperature", 12.3, "CEL", T0, T0 + 0.1, "good", 0.12),
        (42, "wq-1", "ph", 7.2, "C62", None, T0 + 0.1, "suspect", None),
        (43, "wq-1", "turbidity", None, "NTU", T0, T0 + 0.1, "invalid", None),
    ]
    anomaly = {
        "type": "anomaly",
        "asset": "wq-1",
        "quantities": ["turbidity"],
        "score": 0.93,
        "threshold": 0.8,
        "model": "water-quality@1.0.0",
        "detected_at": T0,
        "observed_at": T0,
        "state": "start",
    }
    docs = [
        m.birth("gw-1", "s-1", 3, "dublin", T0, {"wq-1": 12}, {"version": "0.1.0"}),
        m.death("gw-1", "s-1", 3, T0, "stopped"),
        m.twin("gw-1", "s-1", T0, "wq-1", 12, wq),
        m.delta("gw-1", "s-1", T0, "wq-1", 13, {"state": {"ph": {"value": 7.3}}, "revision": 13}),
        m.delta("gw-1", "s-1", T0, "wq-1", 14, {"anomalies": {"turbidity": None}}),
        m.readings_batch("gw-1", "s-1", T0, rows, backfill=False),
        m.event("gw-1", "s-1", T0, 44, "wq-1", anomaly),
        m.event("gw-1", "s-1", T0, 45, "wq-1", {"type": "drop", "count": 10}),
        m.applied("gw-1", "s-1", T0, "wq-1", "d-1", {"period": 5.0, "thresholds": {}}, []),
        m.applied("gw-1", "s-1", T0, "wq-1", "d-2", {"period": 1.0}, ["period: too short"]),
    ]
    return [wire(d) for d in docs]


def test_every_built_message_validates(twins: dict[str, dict[str, Any]]) -> None:
    kinds = set()
    for doc in built(twins):
        schemas.validator(doc["kind"]).validate(doc)
        kinds.add(doc["kind"])
    assert kinds == set(schemas.UPLINK_KINDS)


def test_twin_state_of_every_category_validates(twins: dict[str, dict[str, Any]]) -> None:
    for twin in twins.values():
        schemas.validator("twin-state").validate(twin)


@pytest.mark.parametrize(
    ("kind", "doc"),
    [
        ("desired", {"v": 1, "id": "d-1", "period": "5s", "thresholds": {"turbidity": 0.9}}),
        ("desired", {"v": 1, "id": "d-2", "period": 0.5}),
        ("desired", {"v": 1, "id": "d-3", "period": "250ms"}),
        ("command", {"v": 1, "id": "c-1", "command": "dim", "args": {"level": 40}}),
        ("command", {"v": 1, "id": "c-2", "command": "reboot"}),
        ("rebirth", {"v": 1, "reason": "gap", "asset": "wq-1", "have": 3, "got": 5}),
    ],
)
def test_downlink_examples_validate(kind: str, doc: dict[str, Any]) -> None:
    schemas.validator(kind).validate(doc)


def _errors(kind: str, doc: Any) -> list[str]:
    return [e.message for e in schemas.validator(kind).iter_errors(doc)]


def test_bad_messages_are_refused(twins: dict[str, dict[str, Any]]) -> None:
    docs = {d["kind"]: d for d in reversed(built(twins))}  # the first of each kind
    no_key = copy.deepcopy(docs["birth"])
    del no_key["key"]
    assert any("'key' is a required property" in e for e in _errors("birth", no_key))
    wrong_version = dict(docs["death"], v=2)
    assert _errors("death", wrong_version)
    unknown_field = dict(docs["delta"], extra=1)
    assert any("extra" in e for e in _errors("delta", unknown_field))
    short_row = copy.deepcopy(docs["readings"])
    short_row["rows"][0] = short_row["rows"][0][:8]
    assert _errors("readings", short_row)
    bad_quality = copy.deepcopy(docs["readings"])
    bad_quality["rows"][0][7] = "great"
    assert _errors("readings", bad_quality)
    bad_anomaly = copy.deepcopy(docs["event"])
    del bad_anomaly["event"]["model"]
    assert any("'model'" in e for e in _errors("event", bad_anomaly))
    slash_asset = dict(docs["twin"], asset="a/b")
    assert _errors("twin", slash_asset)
    assert _errors("desired", {"v": 1, "id": "d", "period": "soon"})
    assert _errors("desired", {"v": 1, "id": "d", "period": -1})
    assert _errors("command", {"v": 1, "id": "c", "command": "self-destruct"})


def test_unknown_kind_has_no_validator() -> None:
    with pytest.raises(KeyError, match="no feed schema"):
        schemas.validator("gossip")


def test_signed_downlink_envelopes_validate() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway.security import sign

    key = Ed25519PrivateKey.generate()
    topics = m.Topics("twinedge/v1", "dublin", "gw-1")
    desired = {"v": 1, "id": "d-9", "period": "5s"}
    env = sign(desired, key, aud=f"{topics.base}/desired/wq-1", exp=T0 + 3600)
    schemas.validator("desired").validate(json.loads(json.dumps(env)))
    cmd = sign({"v": 1, "id": "c-9", "command": "identify"}, key, aud="x", exp=T0 + 3600)
    schemas.validator("command").validate(cmd)
    tampered = dict(env, payload={"v": 1, "id": "d-9", "period": "soon"})
    assert _errors("desired", tampered)
    assert _errors("desired", dict(env, extra=1))
