"""Twin objects: deltas with revisions, merge patches, liveness to stale, restore."""

from __future__ import annotations

from gateway.readings import Quality, Reading
from gateway.twin import Twin, merge_patch


def make() -> Twin:
    return Twin(
        "wq-1", category="water-quality", name="Probe", location={"type": "Point",
        "coordinates": [4.9, 52.3]}, attributes={"depth_m": 1.5}, source="demo:water-quality",
        profile="twinedge-water-node", stale_after=10.0, config={"period": 1.0, "thresholds": {}},
    )  # fmt: skip


def reading(q: str, v: float, t: float = 1000.0) -> Reading:
    return Reading("wq-1", q, v, "CEL", received_at=t, observed_at=t - 0.1)


def test_full_state_then_deltas_with_revisions() -> None:
    twin = make()
    assert twin.take_delta() is None
    twin.observe(reading("temperature", 12.5), mono=0.0)
    twin.observe(reading("temperature", 12.6), mono=0.5)
    rev, patch = twin.take_delta() or (0, {})
    assert rev == 1
    assert patch["state"]["temperature"]["value"] == 12.6  # one delta for the burst, last wins
    assert patch["liveness"] == {"online": True, "last_seen": 1000.0}
    assert twin.take_delta() is None  # nothing new
    twin.observe(reading("temperature", 12.6), mono=1.0)  # the very same reading: no change
    rev_same = twin.take_delta()
    assert rev_same is None
    twin.observe(reading("temperature", 12.6, t=1001.0), mono=1.0)
    twin.observe(reading("ph", 7.1, t=1001.0), mono=1.0)
    rev2, patch2 = twin.take_delta() or (0, {})
    assert rev2 == 2 and patch2["revision"] == 2
    assert set(patch2["state"]) == {"temperature", "ph"}


def test_patches_rebuild_the_full_state() -> None:
    twin = make()
    upstream = twin.snapshot()
    for i in range(5):
        twin.observe(reading("temperature", 10.0 + i, t=1000.0 + i), mono=float(i))
        twin.set_counters({"frames_ok": i, "gaps": 0})
        twin.set_anomaly("temperature", {"score": 0.9} if i == 2 else None)
        _rev, patch = twin.take_delta() or (0, {})
        merge_patch(upstream, patch)
    assert upstream == twin.snapshot()
    assert upstream["anomalies"] == {}  # set then cleared with null


def test_silent_device_goes_stale_never_a_constant_value() -> None:
    twin = make()
    twin.observe(reading("temperature", 12.5), mono=100.0)
    twin.take_delta()
    assert not twin.check_liveness(mono=109.0)
    assert twin.check_liveness(mono=110.5)
    _rev, patch = twin.take_delta() or (0, {})
    assert patch["liveness"]["online"] is False
    assert patch["state"]["temperature"]["quality"] == Quality.STALE
    assert not twin.check_liveness(mono=200.0)  # reported once
    twin.observe(reading("temperature", 12.7), mono=201.0)
    _rev, patch = twin.take_delta() or (0, {})
    assert patch["liveness"]["online"] is True
    assert patch["state"]["temperature"]["quality"] == "good"


def test_restore_keeps_revision_and_marks_stale() -> None:
    twin = make()
    twin.observe(reading("temperature", 12.5), mono=0.0)
    twin.set_counters({"frames_ok": 7})
    twin.take_delta()
    saved = twin.snapshot()
    again = make()
    again.restore(saved)
    assert again.revision == 1
    rev, _patch = again.take_delta() or (0, {})
    assert rev == 2  # revisions continue, never restart at 1
    snap = again.snapshot()
    assert snap["state"]["temperature"]["quality"] == "stale"
    assert snap["device"]["counters"] == {"frames_ok": 7}
    assert snap["liveness"]["online"] is False


def test_merge_patch_rfc7396() -> None:
    target = {"a": 1, "b": {"c": 2, "d": 3}}
    merge_patch(target, {"a": None, "b": {"c": None, "e": [1]}, "f": "x"})
    assert target == {"b": {"d": 3, "e": [1]}, "f": "x"}


def test_model_statistics_in_the_twin_without_nulls() -> None:
    twin = make()
    upstream = twin.snapshot()
    twin.set_model({"model": "water-quality@1.0.0", "mode": "active",
                    "scores": {"n": 0, "p50": None, "p95": None}})  # fmt: skip
    _rev, patch = twin.take_delta() or (0, {})
    merge_patch(upstream, patch)
    assert upstream == twin.snapshot()  # a null would have deleted on the consumer's side
    assert upstream["model"] == {"model": "water-quality@1.0.0", "mode": "active",
                                 "scores": {"n": 0}}  # fmt: skip
    assert twin.category == "water-quality"
