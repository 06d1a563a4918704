"""The Eclipse Ditto projection: merge commands are RFC 7396 patches of the Thing, in order."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.sync import messages as m
from gateway.sync.ditto import DittoProjection, thing_patch
from gateway.sync.projection import project

from .conftest import T0, value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 MergePatch, written from the RFC's pseudocode to check our patches."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def test_twin_is_a_modify_of_the_whole_thing(twins: dict[str, dict[str, Any]]) -> None:
    proj = DittoProjection("city.dublin")
    cmd = proj.command(m.twin("gw-1", "s-1", T0, "wq-1", 12, twins["water-quality"]))
    assert cmd is not None
    assert cmd["topic"] == "city.dublin/wq-1/things/twin/commands/modify"
    assert cmd["path"] == "/"
    value_ = cmd["value"]
    assert value_["thingId"] == "city.dublin:wq-1"
    assert value_["attributes"]["revision"] == 12
    assert value_["attributes"]["category"] == "water-quality"
    assert value_["features"]["ph"]["properties"]["value"] == 7.2
    assert value_["features"]["liveness"]["properties"]["online"] is True
    assert cmd["headers"]["twinedge-revision"] == 12


def test_applying_the_merges_reproduces_the_twin(twins: dict[str, dict[str, Any]]) -> None:
    proj = DittoProjection("city.dublin")
    twin = twins["water-quality"]
    thing = proj.command(m.twin("gw-1", "s-1", T0, "wq-1", 12, twin))["value"]  # type: ignore[index]
    patches = [
        {"state": {"ph": {"value": 7.4, "observed_at": T0 + 1}}},
        {"anomalies": {"turbidity": None}, "liveness": {"online": False}},
        {"state": {"orp": None, "temperature": value(13.0, "CEL")}},
    ]
    for i, patch in enumerate(patches, start=13):
        cmd = proj.command(m.delta("gw-1", "s-1", T0, "wq-1", i, patch))
        assert cmd is not None
        assert cmd["topic"].endswith("/things/twin/commands/merge")
        assert cmd["headers"]["content-type"] == "application/merge-patch+json"
        assert cmd["headers"]["condition"].endswith(f"lt(attributes/revision,{i}))")
        thing = merge_patch(thing, cmd["value"])
        twin = merge_patch(twin, patch)
    twin["revision"] = 15
    expected = {"thingId": "city.dublin:wq-1", **thing_patch(twin)}
    assert thing == expected
    assert "orp" not in thing["features"]
    assert thing["features"]["anomalies"]["properties"] == {}
    assert thing["attributes"]["revision"] == 15


def test_to_messages_and_config() -> None:
    proj = project("ditto", "dublin-docks", {})
    assert isinstance(proj, DittoProjection)
    assert proj.namespace == "twinedge.dublin_docks"
    msgs = proj.to_messages(m.delta("gw-1", "s-1", T0, "wq-1", 2, {"state": {}}))
    assert msgs[0][0] == "twinedge/ditto/v1/twinedge.dublin_docks/wq-1"
    assert json.loads(msgs[0][1])["value"] == {"attributes": {"revision": 2}}
    assert proj.to_messages(m.death("gw-1", "s-1", 1, T0, "x")) == []
    with pytest.raises(ConfigError, match=r"projection\.namespace"):
        project("ditto", "d", {"namespace": "9-bad"})
