"""/metrics: valid Prometheus text exposition with the figures of the snapshot."""

from __future__ import annotations

import re

import aiohttp

from gateway.api import serve_api
from gateway.api.metrics import render_metrics
from gateway.api.server import ApiStats

from .hub import Hub, snapshot

SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})?'
    r" (?P<value>[-+]?(?:[0-9.]+(?:e[-+]?[0-9]+)?|NaN|Inf))$"
)


def parse(text: str) -> dict[str, float]:
    """Check every line against the exposition format; return ``name{labels}`` -> value."""
    assert text.endswith("\n")
    declared: dict[str, str] = {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in declared, f"family {name} declared twice"
            declared[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"not a valid sample line: {line!r}"
        assert m["name"] in declared, f"{m['name']} has no TYPE line"
        key = m["name"] + (f"{{{m['labels']}}}" if m["labels"] else "")
        out[key] = float(m["value"])
    return out


def test_snapshot_figures_become_metrics() -> None:
    snap = snapshot()
    snap["assets"]["sl-1"]["liveness"]["online"] = False
    m = parse(render_metrics(snap, ApiStats(sse_clients=2)))
    assert m["twinedge_readings_in_total"] == 1234
    assert m["twinedge_readings_out_total"] == 1200
    assert m["twinedge_buffer_rows"] == 42 and m["twinedge_buffer_bytes"] == 81920
    assert m["twinedge_buffer_dropped_total"] == 5
    assert m['twinedge_buffer_dropped_by_asset_total{asset="wq-1"}'] == 5
    assert m['twinedge_uplink_connected{broker="mqtt://127.0.0.1:1883"}'] == 1
    assert m["twinedge_uplink_backlog_rows"] == 7
    assert m['twinedge_publish_latency_milliseconds{quantile="0.99"}'] == 12.0
    assert m['twinedge_device_online{asset="wq-1",category="water-quality"}'] == 1
    assert m['twinedge_device_online{asset="sl-1",category="streetlight"}'] == 0
    assert m['twinedge_device_frames_bad_total{asset="wq-1"}'] == 2
    assert m['twinedge_device_reconnects_total{asset="sl-1"}'] == 3
    assert m['twinedge_device_active_anomalies{asset="wq-1"}'] == 1
    assert m['twinedge_model_scored_total{category="water-quality"}'] == 1234
    assert m['twinedge_model_flagged_total{category="water-quality"}'] == 17
    assert m['twinedge_model_inference_microseconds_per_row{category="water-quality"}'] == 6.3
    assert m['twinedge_model_load_milliseconds{category="water-quality"}'] == 4.1
    assert (
        m[
            'twinedge_model_info{category="water-quality",model="water-quality@1.0.0",'
            'version="1.0.0",mode="active"}'
        ]
        == 1
    )
    assert m["twinedge_api_sse_clients"] == 2


def test_label_values_are_escaped_and_missing_sections_left_out() -> None:
    snap = {"assets": {'odd"id\\\n': {"category": "x", "liveness": {"online": True}}}}
    text = render_metrics(snap, ApiStats())
    m = parse(text)
    assert m['twinedge_device_online{asset="odd\\"id\\\\\\n",category="x"}'] == 1
    assert "twinedge_buffer_rows" not in text  # no buffer section: no made-up zero
    assert "twinedge_uplink_connected" not in text


async def test_metrics_endpoint_serves_the_exposition() -> None:
    hub = Hub()
    snap = snapshot()
    async with (
        serve_api(status=lambda: snap, events=hub.events, port=0) as api,
        aiohttp.ClientSession() as http,
        http.get(f"{api.url}metrics") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        m = parse(await resp.text())
    assert m["twinedge_uptime_seconds"] == 65.0
