"""NGSI-LD projection of the native feed onto FIWARE Smart Data Models. Pure code, no I/O.

One asset becomes one entity of its category's model (water-quality → WaterQualityObserved,
streetlight → Streetlight, pedestrian-counter → CrowdFlowObserved) plus one ``Device`` entity
for the node that measures it (liveness, battery, rssi, firmware); an anomaly event becomes an
``Anomaly`` entity. Entity ids are ``urn:ngsi-ld:<Type>:<site>:<asset>``. Canonical quantity
names map to the models' attribute names (``ph`` → ``pH``, ``dissolved_oxygen`` → ``O2``,
``power_state`` → ``powerState``, ``count_in`` → ``peopleCountTowards`` ...).

Two forms: ``normalized`` (every measured property is ``{"type": "Property", "value",
"observedAt", "unitCode"}``, location a ``GeoProperty``) and ``keyValues`` (plain values; what
the Smart Data Models JSON Schemas describe). A value outside the range the model allows (a
negative ORP, a pH above 14) is left out of the entity and counted in
:attr:`NgsiProjection.out_of_model_range`: the native feed still carries it.

:meth:`NgsiProjection.entities` takes any native feed message (twin, delta, readings, event)
and returns the entities it updates, to be sent by ``POST /ngsi-ld/v1/entityOperations/upsert``
(``?options=update`` merges attributes) or published on MQTT by :meth:`to_messages`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self
from urllib.parse import quote

from gateway.errors import ConfigError
from gateway.readings import iso

__all__ = [
    "CORE_CONTEXT",
    "MODELS",
    "SDM_CONTEXT",
    "NgsiProjection",
    "entity_id",
]

log = logging.getLogger("twinedge.sync.ngsi_ld")

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
SDM_CONTEXT = "https://smartdatamodels.org/context.jsonld"
Form = Literal["normalized", "keyValues"]


@dataclass(frozen=True, slots=True)
class Attr:
    """How one canonical quantity appears in a model: name, unit and the model's value range."""

    name: str
    unit: str | None = None  # None: keep the reading's own unit code
    low: float | None = None
    high: float | None = None
    scale: float = 1.0


#: category -> (entity type, canonical quantity -> attribute)
MODELS: dict[str, tuple[str, dict[str, Attr]]] = {
    "water-quality": (
        "WaterQualityObserved",
        {
            "temperature": Attr("temperature"),
            "ph": Attr("pH", "C62", 0.0, 14.0),
            "conductivity": Attr("conductivity", None, 0.0),
            "dissolved_oxygen": Attr("O2", None, 0.0),
            "turbidity": Attr("turbidity", None, 0.0),
            "orp": Attr("orp", None, 0.0),
        },
    ),
    "streetlight": (
        "Streetlight",
        {
            # dim_level is a percentage; the model's illuminanceLevel is a fraction 0..1
            "dim_level": Attr("illuminanceLevel", "C62", 0.0, 1.0, 0.01),
            "power": Attr("powerConsumption"),
            "voltage": Attr("voltage"),
            "current": Attr("current"),
        },
    ),
    "pedestrian-counter": (
        "CrowdFlowObserved",
        {
            "count_in": Attr("peopleCountTowards", None, 0.0),
            "count_out": Attr("peopleCountAway", None, 0.0),
        },
    ),
}
_DEVICE_QUANTITIES = {"battery", "rssi"}
_CONTROLLED = {
    "temperature": "temperature",
    "ph": "pH",
    "conductivity": "conductivity",
    "turbidity": "turbidity",
    "orp": "orp",
    "dissolved_oxygen": "waterPollution",
    "dim_level": "light",
    "power": "power",
    "count_in": "motion",
    "count_out": "motion",
}
_DIRECTIONS = ("inbound", "outbound")
#: the attribute holding the observation time (Streetlight's schema has no dateObserved)
_DATE_ATTR = {"Streetlight": "observationDateTime"}
_INTEGER_ATTRS = {"peopleCountTowards", "peopleCountAway", "peopleCount"}


def entity_id(entity_type: str, site: str, *parts: str) -> str:
    """``urn:ngsi-ld:<Type>:<site>:<asset>[:...]`` with each part percent-encoded as needed."""
    tail = ":".join(quote(p, safe="-._~") for p in (site, *parts))
    return f"urn:ngsi-ld:{entity_type}:{tail}"


@dataclass(slots=True)
class _Identity:
    """What a twin tells us about an asset that readings and deltas do not repeat."""

    category: str
    location: dict[str, Any] | None
    name: str | None
    attributes: dict[str, Any]


@dataclass(slots=True)
class NgsiProjection:
    """Turns native feed messages into NGSI-LD entities for one site.

    Remembers each asset's category and location from twin messages (or :meth:`remember`) so
    that deltas and reading batches, which do not repeat them, can be projected too.
    """

    site: str
    form: Form = "normalized"
    context: tuple[str, ...] = (SDM_CONTEXT, CORE_CONTEXT)
    topic_prefix: str = "twinedge/ngsi-ld/v1"
    out_of_model_range: int = 0
    unknown_asset: int = 0
    _assets: dict[str, _Identity] = field(default_factory=dict)

    @classmethod
    def from_config(cls, site: str, table: Mapping[str, Any], file: str = "site.toml") -> Self:
        """Build from the site file's ``[projection]`` table (see docs/feed.md)."""
        form = table.get("form", "normalized")
        if form not in ("normalized", "keyValues"):
            raise ConfigError(file, "projection.form", "'normalized' or 'keyValues'", form)
        context = table.get("context", [SDM_CONTEXT, CORE_CONTEXT])
        if isinstance(context, str):
            context = [context]
        if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
            raise ConfigError(file, "projection.context", "a URL or a list of URLs", context)
        prefix = table.get("topic_prefix", "twinedge/ngsi-ld/v1")
        if not isinstance(prefix, str) or not prefix or "#" in prefix or "+" in prefix:
            raise ConfigError(file, "projection.topic_prefix", "an MQTT topic prefix", prefix)
        return cls(site, form, tuple(context), prefix.rstrip("/"))

    # -- identity ------------------------------------------------------------------------------

    def remember(self, twin: Mapping[str, Any]) -> None:
        """Record an asset's category, location and static attributes from its twin object."""
        loc = twin.get("location")
        self._assets[str(twin["id"])] = _Identity(
            str(twin.get("category", "")),
            dict(loc) if isinstance(loc, Mapping) else None,
            twin.get("name") if isinstance(twin.get("name"), str) else None,
            dict(twin.get("attributes") or {}),
        )

    def entity_type(self, asset: str) -> str | None:
        ident = self._assets.get(asset)
        model = MODELS.get(ident.category) if ident else None
        return model[0] if model else None

    # -- dispatch ------------------------------------------------------------------------------

    def entities(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The entities one native feed message updates (empty for kinds with no projection)."""
        kind = message.get("kind")
        if kind == "twin":
            self.remember(message["twin"])
            return self.twin_entities(message["twin"])
        if kind == "delta":
            return self.delta_entities(str(message["asset"]), message["patch"])
        if kind == "readings":
            return self.readings_entities(message["rows"])
        if kind == "event":
            body = message["event"]
            # a shadow-mode model is on trial: its anomalies are not published as alerts
            live = body.get("type") == "anomaly" and body.get("mode", "active") == "active"
            return [self.anomaly_entity(body)] if live else []
        return []

    def to_messages(self, message: Mapping[str, Any]) -> list[tuple[str, bytes]]:
        """MQTT delivery: ``(topic, payload)`` per entity, topic ``{prefix}/{site}/{Type}/{asset}``.

        The payload is the entity as JSON-LD (with ``@context``), what an NGSI-LD broker's MQTT
        bridge or a platform's own consumer upserts.
        """
        out = []
        for ent in self.entities(message):
            tail = ent["id"].split(":", 3)[3]  # <site>:<asset>[:...]
            leaf = tail.split(":", 1)[1] if ":" in tail else tail
            topic = f"{self.topic_prefix}/{self.site}/{ent['type']}/{leaf.replace(':', '/')}"
            out.append((topic, _dumps(ent)))
        return out

    # -- projections ---------------------------------------------------------------------------

    def twin_entities(self, twin: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The asset entity and its Device entity from a full twin object."""
        asset = str(twin["id"])
        ident = self._assets.get(asset)
        if ident is None:
            self.remember(twin)
            ident = self._assets[asset]
        out = []
        state = twin.get("state") or {}
        main = self._asset_entity(asset, ident, state, full=True)
        if main is not None:
            out.append(main)
        out.append(self._device_entity(asset, ident, twin, state))
        return out

    def delta_entities(self, asset: str, patch: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Partial entities with only what the patch changed (for ``options=update``)."""
        ident = self._assets.get(asset)
        if ident is None:
            self.unknown_asset += 1
            log.debug("ngsi-ld: delta for unknown asset %s skipped", asset)
            return []
        out = []
        state = {k: v for k, v in (patch.get("state") or {}).items() if isinstance(v, Mapping)}
        main = self._asset_entity(asset, ident, state, full=False)
        if main is not None and len(main) > 2 + ("@context" in main):
            out.append(main)
        dev = self._device_entity(asset, ident, patch, state, partial=True)
        if len(dev) > 2 + ("@context" in dev):
            out.append(dev)
        return out

    def readings_entities(self, rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
        """One partial entity per (asset, observed time) in the batch, oldest first."""
        groups: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}
        for _seq, asset, quantity, value, unit, observed, received, quality, score in rows:
            if asset not in self._assets:
                self.unknown_asset += 1
                continue
            t = observed if observed is not None else received
            groups.setdefault((asset, t), {})[quantity] = {
                "value": value,
                "unit": unit,
                "quality": quality,
                "observed_at": observed,
                "received_at": received,
                "score": score,
            }
        out = []
        for (asset, _t), state in groups.items():
            ent = self._asset_entity(asset, self._assets[asset], state, full=False)
            if ent is not None and len(ent) > 2 + ("@context" in ent):
                out.append(ent)
        return out

    def anomaly_entity(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """An Anomaly entity for one anomaly event; its id names the asset and detection time."""
        asset = str(body["asset"])
        detected = float(body["detected_at"])
        eid = entity_id("Anomaly", self.site, asset, str(round(detected * 1000)))
        ent = self._start(eid, "Anomaly")
        etype = self.entity_type(asset)
        if etype:
            self._rel(ent, "detectedBy", entity_id("Device", self.site, asset))
        quantities = [str(q) for q in body["quantities"]]
        self._text(ent, "anomalousProperty", ",".join(quantities), detected)
        self._date(ent, "dateDetected", detected)
        breach = {
            "dateObserved": iso(body.get("observed_at") or detected),
            "measuredValue": float(body["score"]),
            "thresholdType": "UPPER",
            "thresholdValue": float(body["threshold"]),
        }
        self._text(ent, "thresholdBreach", [breach], detected)
        self._text(ent, "anomalyModel", str(body["model"]), detected)
        self._text(ent, "anomalyState", str(body["state"]), detected)
        if etype:
            self._rel(ent, "refAsset", entity_id(etype, self.site, asset))
        return ent

    # -- building blocks -----------------------------------------------------------------------

    def _asset_entity(
        self, asset: str, ident: _Identity, state: Mapping[str, Any], *, full: bool
    ) -> dict[str, Any] | None:
        model = MODELS.get(ident.category)
        if model is None:
            return None
        etype, attrs = model
        ent = self._start(entity_id(etype, self.site, asset), etype)
        if full:
            self._static(ent, ident)
        for quantity, v in state.items():
            if quantity in attrs:
                self._measure(ent, attrs[quantity], v)
        if etype == "Streetlight":
            self._streetlight(ent, state, full)
        elif etype == "CrowdFlowObserved":
            self._crowd(ent, state, ident if full else None)
        times = [t for q, v in state.items() if q not in _DEVICE_QUANTITIES and (t := _time(v))]
        if full and not times:
            return None  # an observation entity needs an observation (its dateObserved)
        if times and len(ent) > 2 + ("@context" in ent):
            self._date(ent, _DATE_ATTR.get(etype, "dateObserved"), max(times))
            if not full and ident.location:  # an MQTT consumer has no upsert merge: keep
                self._geo(ent, ident.location)  # every observation a valid entity
        return ent

    def _device_entity(
        self,
        asset: str,
        ident: _Identity,
        twin: Mapping[str, Any],
        state: Mapping[str, Any],
        *,
        partial: bool = False,
    ) -> dict[str, Any]:
        ent = self._start(entity_id("Device", self.site, asset), "Device")
        if not partial:
            cats = ["sensor", "actuator"] if ident.category == "streetlight" else ["sensor"]
            self._text(ent, "category", cats, None)
            props = sorted({_CONTROLLED[q] for q in state if q in _CONTROLLED})
            self._text(ent, "controlledProperty", props, None)
            etype = self.entity_type(asset)
            if etype:
                self._rel(ent, "controlledAsset", [entity_id(etype, self.site, asset)])
            if ident.location:
                self._geo(ent, ident.location)
        live = twin.get("liveness")
        if isinstance(live, Mapping):
            seen = live.get("last_seen")
            if "online" in live:
                self._text(ent, "deviceState", "online" if live["online"] else "offline", seen)
            if isinstance(seen, int | float):
                self._date(ent, "dateLastValueReported", float(seen))
        seen = live.get("last_seen") if isinstance(live, Mapping) else None
        self._device_info(ent, twin.get("device"), state, seen)
        return ent

    def _device_info(
        self, ent: dict[str, Any], device: Any, state: Mapping[str, Any], seen: Any
    ) -> None:
        """Firmware, battery and rssi from the readings if any, else from the device facts
        (observed when the device was last seen)."""
        seen = float(seen) if isinstance(seen, int | float) else None
        info = device.get("info") if isinstance(device, Mapping) else None
        info = info if isinstance(info, Mapping) else {}
        if isinstance(info.get("firmware"), str):
            self._text(ent, "firmwareVersion", info["firmware"], seen)
        battery = state.get("battery", {}).get("value") if "battery" in state else None
        battery = battery if battery is not None else info.get("battery")
        if isinstance(battery, int | float) and 0 <= battery <= 100:
            t = _time(state.get("battery")) or seen
            self._prop(ent, "batteryLevel", round(battery / 100.0, 4), "C62", t)
        rssi = state.get("rssi", {}).get("value") if "rssi" in state else None
        rssi = rssi if rssi is not None else info.get("rssi")
        if isinstance(rssi, int | float):
            self._prop(ent, "rssi", rssi, "2N", _time(state.get("rssi")) or seen)

    def _measure(self, ent: dict[str, Any], attr: Attr, v: Mapping[str, Any]) -> bool:
        value = v.get("value")
        if not isinstance(value, int | float) or v.get("quality") == "invalid":
            return False
        x = value * attr.scale
        if (attr.low is not None and x < attr.low) or (attr.high is not None and x > attr.high):
            self.out_of_model_range += 1
            log.debug("ngsi-ld: %s=%s outside the model's range left out", attr.name, x)
            return False
        if attr.name in _INTEGER_ATTRS:
            x = round(x)
        unit = attr.unit or str(v.get("unit") or "")
        self._prop(ent, attr.name, x, unit or None, _time(v), v.get("quality"))
        return True

    def _streetlight(self, ent: dict[str, Any], state: Mapping[str, Any], full: bool) -> None:
        power = _num(state.get("power_state"))
        if power is not None:
            dim = _num(state.get("dim_level"))
            value = "off" if power < 0.5 else "low" if dim is not None and dim < 100 else "on"
            self._text(ent, "powerState", value, _time(state.get("power_state")))
        fault = _num(state.get("lamp_fault"))
        if fault is not None or full:
            status = "defectiveLamp" if fault is not None and fault >= 0.5 else "ok"
            self._text(ent, "status", status, _time(state.get("lamp_fault")))

    def _crowd(
        self, ent: dict[str, Any], state: Mapping[str, Any], ident: _Identity | None
    ) -> None:
        towards = _num(state.get("count_in"))
        away = _num(state.get("count_out"))
        if towards is not None and away is not None and towards >= 0 and away >= 0:
            t = _time(state.get("count_in"))
            self._prop(ent, "peopleCount", round(towards + away), "IE", t)
        direction = ident.attributes.get("direction") if ident else None  # static: full only
        if direction in _DIRECTIONS:
            self._text(ent, "direction", direction, None)

    def _static(self, ent: dict[str, Any], ident: _Identity) -> None:
        if ident.location:
            self._geo(ent, ident.location)
        if ident.name:
            self._text(ent, "name", ident.name, None)

    # -- form-dependent writers ----------------------------------------------------------------

    def _start(self, eid: str, etype: str) -> dict[str, Any]:
        ent: dict[str, Any] = {"id": eid, "type": etype}
        if self.form == "normalized":
            ent["@context"] = list(self.context)
        return ent

    def _prop(
        self,
        ent: dict[str, Any],
        name: str,
        value: Any,
        unit: str | None,
        observed: float | None,
        quality: Any = None,
    ) -> None:
        if self.form == "keyValues":
            ent[name] = value
            return
        p: dict[str, Any] = {"type": "Property", "value": value}
        if observed is not None:
            p["observedAt"] = iso(observed)
        if unit:
            p["unitCode"] = unit
        if quality not in (None, "good"):
            p["quality"] = {"type": "Property", "value": quality}
        ent[name] = p

    def _text(self, ent: dict[str, Any], name: str, value: Any, observed: float | None) -> None:
        self._prop(ent, name, value, None, observed)

    def _date(self, ent: dict[str, Any], name: str, ts: float) -> None:
        text = iso(ts)
        if self.form == "keyValues":
            ent[name] = text
        else:
            ent[name] = {"type": "Property", "value": {"@type": "DateTime", "@value": text}}

    def _geo(self, ent: dict[str, Any], location: Mapping[str, Any]) -> None:
        geo = {"type": location["type"], "coordinates": list(location["coordinates"])}
        ent["location"] = geo if self.form == "keyValues" else {"type": "GeoProperty", "value": geo}

    def _rel(self, ent: dict[str, Any], name: str, target: str | list[str]) -> None:
        if self.form == "keyValues":
            ent[name] = target
        else:
            ent[name] = {"type": "Relationship", "object": target}


def _time(v: Any) -> float | None:
    if not isinstance(v, Mapping):
        return None
    t = v.get("observed_at")
    if t is None:
        t = v.get("received_at")
    return float(t) if isinstance(t, int | float) else None


def _num(v: Any) -> float | None:
    if isinstance(v, Mapping):
        x = v.get("value")
        return float(x) if isinstance(x, int | float) else None
    return None


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
