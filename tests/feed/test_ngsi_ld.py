"""The NGSI-LD projection: key-values entities validate against the Smart Data Models schemas,
the normalized form has the shape of the models' examples plus observedAt and unitCode."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.sync import messages as m
from gateway.sync.ngsi_ld import NgsiProjection, entity_id
from gateway.sync.projection import project
from gateway.sync.schemas import sdm_validator

from .conftest import T0, value

SDM = resources.files("gateway.sync.schemas").joinpath("sdm")


def sdm_errors(entity: dict[str, Any]) -> list[str]:
    return [e.message for e in sdm_validator(entity["type"]).iter_errors(entity)]


def twin_message(twin: dict[str, Any]) -> dict[str, Any]:
    return m.twin("gw-1", "s-1", T0, twin["id"], twin["revision"], twin)


def test_key_values_entities_validate_against_official_schemas(
    twins: dict[str, dict[str, Any]],
) -> None:
    proj = NgsiProjection("dublin", "keyValues")
    types = set()
    for twin in twins.values():
        for ent in proj.entities(twin_message(twin)):
            assert sdm_errors(ent) == [], ent
            types.add(ent["type"])
    assert types == {"WaterQualityObserved", "Streetlight", "CrowdFlowObserved", "Device"}


def test_water_quality_names_units_and_ids(twins: dict[str, dict[str, Any]]) -> None:
    proj = NgsiProjection("dublin", "normalized")
    wq, dev = proj.entities(twin_message(twins["water-quality"]))
    assert wq["id"] == "urn:ngsi-ld:WaterQualityObserved:dublin:wq-1"
    assert dev["id"] == "urn:ngsi-ld:Device:dublin:wq-1"
    expect = {
        "temperature": (12.3, "CEL"),
        "pH": (7.2, "C62"),
        "conductivity": (410.0, "G42"),
        "O2": (8.1, "M1"),
        "turbidity": (3.2, "NTU"),
        "orp": (215.0, "2Z"),
    }
    for name, (val, unit) in expect.items():
        assert wq[name]["value"] == val
        assert wq[name]["unitCode"] == unit
        assert wq[name]["observedAt"] == "2025-11-21T04:40:00.000Z"
    assert wq["turbidity"]["quality"] == {"type": "Property", "value": "suspect"}
    assert wq["location"] == {
        "type": "GeoProperty",
        "value": {"type": "Point", "coordinates": [-6.2603, 53.3498]},
    }
    assert dev["controlledAsset"] == {"type": "Relationship", "object": [wq["id"]]}
    assert dev["batteryLevel"]["value"] == 0.87
    assert dev["rssi"]["value"] == -71
    assert dev["firmwareVersion"]["value"] == "1.2.0"
    assert dev["deviceState"]["value"] == "online"


def test_streetlight_state_mapping(twins: dict[str, dict[str, Any]]) -> None:
    proj = NgsiProjection("dublin", "keyValues")
    light, _dev = proj.entities(twin_message(twins["streetlight"]))
    assert light["powerState"] == "low"  # on, dimmed to 60 %
    assert light["illuminanceLevel"] == pytest.approx(0.6)
    assert light["status"] == "ok"
    assert light["powerConsumption"] == 42.5
    off = m.delta(
        "gw-1",
        "s-1",
        T0,
        "sl-7",
        13,
        {"state": {"power_state": value(0, "C62"), "lamp_fault": value(1, "C62")}},
    )
    (patch,) = proj.entities(off)
    assert patch == {
        "id": light["id"],
        "type": "Streetlight",
        "location": {"type": "Point", "coordinates": [-6.2603, 53.3498]},
        "powerState": "off",
        "status": "defectiveLamp",
        "observationDateTime": "2025-11-21T04:40:00.000Z",
    }


def test_crowd_flow_counts_and_device_battery(twins: dict[str, dict[str, Any]]) -> None:
    proj = NgsiProjection("dublin", "normalized")
    crowd, dev = proj.entities(twin_message(twins["pedestrian-counter"]))
    assert crowd["peopleCountTowards"]["value"] == 14
    assert crowd["peopleCountAway"]["value"] == 9
    assert crowd["peopleCount"]["value"] == 23
    assert crowd["peopleCount"]["unitCode"] == "IE"
    assert crowd["direction"]["value"] == "inbound"
    assert dev["batteryLevel"] == {
        "type": "Property",
        "value": 0.76,
        "observedAt": "2025-11-21T04:40:00.000Z",
        "unitCode": "C62",
    }
    assert dev["rssi"]["unitCode"] == "2N"


def test_normalized_form_has_the_shape_of_the_examples(twins: dict[str, dict[str, Any]]) -> None:
    proj = NgsiProjection("dublin", "normalized")
    for twin in twins.values():
        for ent in proj.entities(twin_message(twin)):
            if ent["type"] != "Device":
                example = json.loads(
                    SDM.joinpath(ent["type"], "example-normalized.jsonld").read_text()
                )
                assert set(example) >= {"id", "type", "@context"}
                assert example["id"].startswith(f"urn:ngsi-ld:{ent['type']}:")
                assert ent["id"].startswith(f"urn:ngsi-ld:{ent['type']}:dublin:")
                assert example["location"]["type"] == ent["location"]["type"] == "GeoProperty"
                date = "observationDateTime" if ent["type"] == "Streetlight" else "dateObserved"
                assert example[date]["value"]["@type"] == ent[date]["value"]["@type"] == "DateTime"
            assert isinstance(ent["@context"], list)
            for name, attr in ent.items():
                if name in ("id", "type", "@context"):
                    continue
                assert attr["type"] in ("Property", "GeoProperty", "Relationship"), name
                assert ("value" in attr) != ("object" in attr), name
                if isinstance(attr.get("value"), int | float) and not isinstance(
                    attr["value"], bool
                ):
                    assert "unitCode" in attr, name
                    assert attr["observedAt"].endswith("Z"), name


def test_normalized_and_key_values_carry_the_same_values(
    twins: dict[str, dict[str, Any]],
) -> None:
    norm = NgsiProjection("dublin", "normalized")
    kv = NgsiProjection("dublin", "keyValues")
    for twin in twins.values():
        for a, b in zip(
            norm.entities(twin_message(twin)), kv.entities(twin_message(twin)), strict=True
        ):
            assert set(a) - {"@context"} == set(b)
            for name, attr in a.items():
                if name in ("id", "type", "@context"):
                    continue
                got = attr.get("value", attr.get("object"))
                if isinstance(got, dict) and "@value" in got:
                    got = got["@value"]
                assert got == b[name], name


def test_out_of_model_range_values_are_left_out_and_counted(
    twins: dict[str, dict[str, Any]],
) -> None:
    twin = twins["water-quality"]
    twin["state"]["orp"] = value(-35.0, "2Z")  # a real ORP can be negative; the model says >= 0
    twin["state"]["ph"] = value(15.0, "C62")
    proj = NgsiProjection("dublin", "keyValues")
    wq, _ = proj.entities(twin_message(twin))
    assert "orp" not in wq and "pH" not in wq
    assert proj.out_of_model_range == 2
    assert sdm_errors(wq) == []


def test_delta_and_readings_become_partial_entities(twins: dict[str, dict[str, Any]]) -> None:
    proj = NgsiProjection("dublin", "keyValues")
    proj.entities(twin_message(twins["water-quality"]))
    delta = m.delta(
        "gw-1",
        "s-1",
        T0,
        "wq-1",
        13,
        {"state": {"ph": value(7.5, "C62", t=T0 + 1)}, "liveness": {"online": False}},
    )
    ent, dev = proj.entities(delta)
    assert ent == {
        "id": "urn:ngsi-ld:WaterQualityObserved:dublin:wq-1",
        "type": "WaterQualityObserved",
        "location": {"type": "Point", "coordinates": [-6.2603, 53.3498]},
        "pH": 7.5,
        "dateObserved": "2025-11-21T04:40:01.000Z",
    }
    assert dev == {
        "id": "urn:ngsi-ld:Device:dublin:wq-1",
        "type": "Device",
        "deviceState": "offline",
    }
    rows = [
        (1, "wq-1", "temperature", 12.0, "CEL", T0, T0, "good", None),
        (2, "wq-1", "ph", 7.0, "C62", T0, T0, "good", None),
        (3, "wq-1", "temperature", 12.1, "CEL", T0 + 1, T0 + 1, "good", None),
        (4, "ghost", "temperature", 1.0, "CEL", T0, T0, "good", None),
    ]
    batch = proj.entities(m.readings_batch("gw-1", "s-1", T0, rows, backfill=True))
    assert [(e.get("temperature"), e.get("pH")) for e in batch] == [(12.0, 7.0), (12.1, None)]
    assert proj.unknown_asset == 1


def test_anomaly_event_entity() -> None:
    proj = NgsiProjection("dublin", "keyValues")
    body = {
        "type": "anomaly",
        "asset": "wq-1",
        "quantities": ["turbidity"],
        "score": 0.93,
        "threshold": 0.8,
        "model": "water-quality@1.0.0",
        "detected_at": T0,
        "observed_at": T0 - 1,
        "state": "start",
    }
    (ent,) = proj.entities(m.event("gw-1", "s-1", T0, 7, "wq-1", body))
    assert ent["id"] == entity_id("Anomaly", "dublin", "wq-1", "1763700000000")
    assert ent["anomalousProperty"] == "turbidity"
    assert ent["thresholdBreach"][0]["thresholdValue"] == 0.8
    assert sdm_errors(ent) == []
    assert proj.entities(m.event("gw-1", "s-1", T0, 8, "wq-1", {"type": "drop"})) == []
    shadow = dict(body, mode="shadow")
    assert proj.entities(m.event("gw-1", "s-1", T0, 9, "wq-1", shadow)) == []


def test_to_messages_topics_and_payloads(twins: dict[str, dict[str, Any]]) -> None:
    proj = project("ngsi-ld", "dublin", {"form": "normalized", "topic_prefix": "city/ngsi/"})
    assert proj is not None
    msgs = proj.to_messages(twin_message(twins["streetlight"]))
    assert [t for t, _ in msgs] == [
        "city/ngsi/dublin/Streetlight/sl-7",
        "city/ngsi/dublin/Device/sl-7",
    ]
    assert json.loads(msgs[0][1])["id"] == "urn:ngsi-ld:Streetlight:dublin:sl-7"


def test_ids_are_percent_encoded() -> None:
    assert entity_id("Device", "my site", "a#1") == "urn:ngsi-ld:Device:my%20site:a%231"


def test_bad_projection_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"site.toml: projection.form"):
        project("ngsi-ld", "dublin", {"form": "compact"})
    with pytest.raises(ConfigError, match=r"projection.kind"):
        project("orion", "dublin", {})
    assert project("native", "dublin", {}) is None
    with pytest.raises(ConfigError, match=r"projection\.fomr: expected a key among"):
        project("ngsi-ld", "dublin", {"fomr": "keyValues"})
    with pytest.raises(ConfigError, match=r"projection\.url"):
        project("ngsi-ld", "dublin", {"delivery": "http"})
    with pytest.raises(ConfigError, match=r"projection\.delivery"):
        project("ngsi-ld", "dublin", {"delivery": "carrier-pigeon"})


def test_a_twin_without_observations_projects_only_its_device(
    twins: dict[str, dict[str, Any]],
) -> None:
    twin = dict(twins["water-quality"], state={})
    proj = NgsiProjection("dublin", "keyValues")
    (dev,) = proj.entities(twin_message(twin))
    assert dev["type"] == "Device" and sdm_errors(dev) == []
