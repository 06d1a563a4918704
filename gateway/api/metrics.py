"""Prometheus text exposition (format 0.0.4) of a gateway status snapshot. Pure code, no I/O.

Every family is written with ``# HELP`` and ``# TYPE``; label values are escaped as the format
requires. A snapshot key that is missing (an older or partial gateway) leaves its family out
rather than reporting a made-up zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Family", "render_metrics"]

_DEVICE_COUNTERS = {
    "frames_ok": "Frames decoded from the device",
    "frames_bad": "Frames from the device that failed to decode (CRC, framing, schema)",
    "gaps": "Readings missing by sequence number",
    "duplicates": "Duplicate frames by sequence number",
    "reconnects": "Times the device transport was reopened",
    "out_of_range": "Values outside the quantity's physical range",
}


class _Stats(Protocol):
    sse_clients: int
    sse_dropped: int
    sse_slow_disconnects: int
    status_errors: int
    unauthorized: int
    requests: int


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


@dataclass(slots=True)
class Family:
    """One metric family: name, type, help and its samples."""

    name: str
    kind: str  # counter | gauge | summary | untyped
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: object, **labels: object) -> None:
        number = _number(value)
        if number is not None:
            self.samples.append(({k: str(v) for k, v in labels.items()}, number))

    def render(self) -> Iterable[str]:
        if not self.samples:
            return
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            yield (
                f"{self.name}{{{label_text}}} {_fmt(value)}"
                if label_text
                else (f"{self.name} {_fmt(value)}")
            )


def _section(snap: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = snap.get(key)
    return value if isinstance(value, Mapping) else {}


def _gateway(snap: Mapping[str, Any]) -> list[Family]:
    gw = _section(snap, "gateway")
    info = Family("twinedge_info", "gauge", "Gateway identity; the value is always 1")
    if gw:
        info.add(
            1,
            gateway=gw.get("id", ""),
            site=gw.get("site", ""),
            version=gw.get("version", ""),
            session=gw.get("session", ""),
        )
    uptime = Family("twinedge_uptime_seconds", "gauge", "Seconds since the gateway started")
    uptime.add(gw.get("uptime_s"))
    readings = _section(snap, "readings")
    r_in = Family("twinedge_readings_in_total", "counter", "Readings received from devices")
    r_in.add(readings.get("in"))
    r_out = Family("twinedge_readings_out_total", "counter", "Readings acknowledged upstream")
    r_out.add(readings.get("out"))
    return [info, uptime, r_in, r_out]


def _uplink(snap: Mapping[str, Any]) -> list[Family]:
    up = _section(snap, "uplink")
    state = Family("twinedge_uplink_connected", "gauge", "1 when the MQTT uplink is connected")
    if "state" in up:
        state.add(up.get("state") == "connected", broker=up.get("broker", ""))
    backlog = Family("twinedge_uplink_backlog_rows", "gauge", "Buffered rows not yet published")
    backlog.add(up.get("backlog_rows"))
    published = Family(
        "twinedge_uplink_published_rows_total",
        "counter",
        "Rows published and acknowledged by the broker",
    )
    published.add(up.get("published_rows"))
    reconnects = Family("twinedge_uplink_reconnects_total", "counter", "Uplink reconnections")
    reconnects.add(up.get("reconnects"))
    ack = Family(
        "twinedge_uplink_last_ack_timestamp_seconds",
        "gauge",
        "Unix time of the last broker acknowledgement",
    )
    ack.add(up.get("last_ack_at"))
    latency = Family(
        "twinedge_publish_latency_milliseconds",
        "gauge",
        "Publish-to-acknowledgement latency by quantile",
    )
    for q, value in _section(up, "publish_latency_ms").items():
        latency.add(value, quantile=_quantile(q))
    return [state, backlog, published, reconnects, ack, latency]


def _quantile(key: str) -> str:
    """``p50`` -> ``0.5``, ``p99.9`` -> ``0.999``; other keys pass through."""
    if key.startswith("p"):
        try:
            return _fmt(float(key[1:]) / 100)
        except ValueError:
            pass
    return key


def _buffer(snap: Mapping[str, Any]) -> list[Family]:
    buf = _section(snap, "buffer")
    fams = []
    for key, help_text in (
        ("rows", "Rows in the store-and-forward buffer"),
        ("bytes", "Bytes the buffer occupies on disk"),
        ("max_rows", "Row budget of the buffer"),
        ("max_bytes", "Byte budget of the buffer"),
    ):
        fam = Family(f"twinedge_buffer_{key}", "gauge", help_text)
        fam.add(buf.get(key))
        fams.append(fam)
    dropped = _section(buf, "dropped")
    total = Family(
        "twinedge_buffer_dropped_total", "counter", "Rows dropped by the buffer-full policy"
    )
    total.add(dropped.get("total"))
    by_asset = Family(
        "twinedge_buffer_dropped_by_asset_total",
        "counter",
        "Rows dropped by the buffer-full policy, per asset",
    )
    for asset, n in _section(dropped, "by_asset").items():
        by_asset.add(n, asset=asset)
    return [*fams, total, by_asset]


def _assets(snap: Mapping[str, Any]) -> list[Family]:
    online = Family("twinedge_device_online", "gauge", "1 when the device reports in time")
    seen = Family(
        "twinedge_device_last_seen_timestamp_seconds",
        "gauge",
        "Unix time the device was last heard",
    )
    anomalies = Family(
        "twinedge_device_active_anomalies",
        "gauge",
        "Quantities of the asset currently flagged by an anomaly model",
    )
    counters = {
        key: Family(f"twinedge_device_{key}_total", "counter", text)
        for key, text in _DEVICE_COUNTERS.items()
    }
    for asset_id, twin in _section(snap, "assets").items():
        if not isinstance(twin, Mapping):
            continue
        labels = {"asset": asset_id, "category": twin.get("category", "")}
        live = _section(twin, "liveness")
        if "online" in live:
            online.add(bool(live.get("online")), **labels)
        seen.add(live.get("last_seen"), asset=asset_id)
        anomalies.add(len(_section(twin, "anomalies")), asset=asset_id)
        for key, value in _section(_section(twin, "device"), "counters").items():
            if key in counters:
                counters[key].add(value, asset=asset_id)
    return [online, seen, anomalies, *counters.values()]


def _models(snap: Mapping[str, Any]) -> list[Family]:
    """Per category's model, from the detector's stats (``rows_scored``, ``us_per_row``, ...)."""
    info = Family("twinedge_model_info", "gauge", "Loaded anomaly model; the value is always 1")
    scored = Family("twinedge_model_scored_total", "counter", "Rows scored by the model")
    flagged = Family("twinedge_model_flagged_total", "counter", "Rows scored above threshold")
    events = Family("twinedge_model_anomaly_events_total", "counter", "Anomaly events raised")
    per_row = Family(
        "twinedge_model_inference_microseconds_per_row",
        "gauge",
        "Mean scoring time per row (features and inference)",
    )
    timing = Family(
        "twinedge_model_inference_milliseconds",
        "gauge",
        "Model inference time per call by quantile",
    )
    load = Family("twinedge_model_load_milliseconds", "gauge", "Time the model took to load")
    for category, model in _section(snap, "models").items():
        if not isinstance(model, Mapping):
            continue
        info.add(
            1,
            category=category,
            model=model.get("model", category),
            version=model.get("version", ""),
            mode=model.get("mode", ""),
        )
        scored.add(model.get("rows_scored", model.get("scored")), category=category)
        flagged.add(model.get("rows_flagged"), category=category)
        events.add(model.get("events"), category=category)
        per_row.add(model.get("us_per_row"), category=category)
        load.add(model.get("load_ms"), category=category)
        for q, value in _section(model, "latency_ms").items():
            timing.add(value, category=category, quantile=_quantile(q))
    return [info, scored, flagged, events, per_row, timing, load]


def _api(stats: _Stats) -> list[Family]:
    clients = Family("twinedge_api_sse_clients", "gauge", "Open live-event streams")
    clients.add(stats.sse_clients)
    dropped = Family(
        "twinedge_api_sse_dropped_events_total",
        "counter",
        "Events not sent to a live-event client whose queue was full",
    )
    dropped.add(stats.sse_dropped)
    slow = Family(
        "twinedge_api_sse_slow_disconnects_total",
        "counter",
        "Live-event clients disconnected because they stopped reading",
    )
    slow.add(stats.sse_slow_disconnects)
    errors = Family(
        "twinedge_api_status_errors_total", "counter", "Times the gateway status could not be read"
    )
    errors.add(stats.status_errors)
    refused = Family(
        "twinedge_api_unauthorized_total",
        "counter",
        "Requests refused for a missing or wrong token",
    )
    refused.add(stats.unauthorized)
    return [clients, dropped, slow, errors, refused]


def render_metrics(snap: Mapping[str, Any], stats: _Stats) -> str:
    """The whole exposition, ending with a newline."""
    families = [
        *_gateway(snap),
        *_uplink(snap),
        *_buffer(snap),
        *_assets(snap),
        *_models(snap),
        *_api(stats),
    ]
    lines = [line for fam in families for line in fam.render()]
    return "\n".join(lines) + "\n"
