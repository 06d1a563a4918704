"""The API server against a real event hub: routes, SSE, token, faults, shutdown."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import aiohttp
import pytest

import gateway.api.server as server_mod
from gateway.api import ApiServer, serve_api
from gateway.errors import ConfigError

from .hub import Hub, snapshot, wait_until


@pytest.fixture
async def hub() -> Hub:
    return Hub()


@pytest.fixture
async def api(hub: Hub) -> AsyncIterator[ApiServer]:
    snap = snapshot()
    async with serve_api(status=lambda: snap, events=hub.events, port=0) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def read_sse(resp: aiohttp.ClientResponse, n: int) -> list[tuple[str, dict[str, Any]]]:
    """Parse ``n`` events (skipping comments) from an SSE response."""
    out: list[tuple[str, dict[str, Any]]] = []
    kind, data = "message", ""
    async with asyncio.timeout(5):
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and data:
                out.append((kind, json.loads(data)))
                kind, data = "message", ""
                if len(out) == n:
                    return out
    return out


async def test_status_is_the_snapshot_plus_units_and_clock(api: ApiServer, http) -> None:
    async with http.get(f"{api.url}api/status") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["assets"]["wq-1"]["state"]["temperature"]["value"] == 12.3
    assert body["units"]["CEL"] == "°C"
    assert abs(body["now"] - body["uplink"]["last_ack_at"]) < 60
    assert api.port != 0 and api.url == f"http://127.0.0.1:{api.port}/"


async def test_page_is_served_from_package_files_and_needs_nothing_online(api, http) -> None:
    async with http.get(api.url) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        html = await resp.text()
    for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
        async with http.get(api.url + ref) as asset:
            assert asset.status == 200, ref
    files = resources.files("gateway.api").joinpath("static")
    for name in ("index.html", "app.js", "style.css"):
        text = files.joinpath(name).read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name
        assert "@import" not in text and ".innerHTML" not in text, name


async def test_healthz_reports_uplink_state(api, http) -> None:
    async with http.get(f"{api.url}healthz") as resp:
        assert resp.status == 200
        assert (await resp.json())["uplink"] == "connected"


async def test_sse_delivers_filtered_events_in_order(api, hub: Hub, http) -> None:
    url = f"{api.url}api/events?asset=wq-1&type=reading,liveness"
    async with http.get(url) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        await hub.wait_subscribers(2)  # the history recorder and this client
        hub.publish({"type": "reading", "asset": "sl-1", "quantity": "power", "value": 1.0})
        hub.publish({"type": "warning", "msg": "x", "device": "wq-1"})
        for i in range(3):
            hub.publish(
                {
                    "type": "reading",
                    "asset": "wq-1",
                    "quantity": "ph",
                    "value": 7 + i,
                    "unit": "C62",
                    "quality": "good",
                    "ts": 1.0 + i,
                }
            )
        hub.publish({"type": "liveness", "asset": "wq-1", "online": False})
        got = await read_sse(resp, 4)
    assert [k for k, _ in got] == ["reading", "reading", "reading", "liveness"]
    assert [e.get("value") for _, e in got[:3]] == [7, 8, 9]
    assert got[3][1]["online"] is False


def test_quantity_filter_matches_anomalies_by_any_quantity_they_cover() -> None:
    wanted = server_mod.EventFilter.from_query({"quantity": "orp", "asset": "wq-1"})
    assert wanted({"type": "anomaly", "asset": "wq-1", "quantities": ["ph", "orp"]})
    assert not wanted({"type": "anomaly", "asset": "wq-1", "quantities": ["ph"]})
    assert wanted({"type": "reading", "asset": "wq-1", "quantity": "orp"})
    assert not wanted({"type": "reading", "asset": "wq-2", "quantity": "orp"})
    assert wanted({"type": "warning", "device": "wq-1", "msg": "x"}) is False  # no quantity


async def test_history_keeps_recent_values_for_sparklines(api, hub: Hub, http) -> None:
    await hub.wait_subscribers(1)
    for i in range(server_mod.HISTORY_POINTS + 5):
        hub.publish(
            {
                "type": "reading",
                "asset": "wq-1",
                "quantity": "ph",
                "value": float(i),
                "ts": 100.0 + i,
            }
        )
    hub.publish({"type": "reading", "asset": "wq-1", "quantity": "ph", "value": "bad"})
    await wait_until(
        lambda: (
            len(api.history.series.get("wq-1", {}).get("ph", ())) == server_mod.HISTORY_POINTS
            and api.history.series["wq-1"]["ph"][-1][1] == 124
        )
    )
    async with http.get(f"{api.url}api/history?asset=wq-1") as resp:
        body = await resp.json()
    assert body["wq-1"]["ph"][0] == [105.0, 5.0]
    assert len(body["wq-1"]["ph"]) == server_mod.HISTORY_POINTS


async def test_slow_sse_client_is_dropped_from_not_waited_for(hub: Hub, monkeypatch) -> None:
    monkeypatch.setattr(server_mod, "SSE_QUEUE", 4)
    monkeypatch.setattr(server_mod, "SSE_WRITE_TIMEOUT_S", 0.5)
    snap = snapshot()
    async with serve_api(status=lambda: snap, events=hub.events, port=0) as api:
        _reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")  # then never read
        await writer.drain()
        await hub.wait_subscribers(2)
        big = "x" * 65536
        while api.stats.sse_slow_disconnects == 0:
            hub.publish({"type": "warning", "msg": big, "device": "wq-1"})
            await asyncio.sleep(0)
        assert api.stats.sse_dropped > 0
        await wait_until(lambda: api.stats.sse_clients == 0)
        writer.close()


async def test_shutdown_ends_open_streams_promptly(hub: Hub) -> None:
    snap = snapshot()
    async with aiohttp.ClientSession() as http, asyncio.timeout(5):
        async with serve_api(status=lambda: snap, events=hub.events, port=0) as api:
            resp = await http.get(f"{api.url}api/events")
            await hub.wait_subscribers(2)
        assert api.stats.sse_clients == 0
        resp.close()


async def test_stream_ends_when_the_app_closes_its_feed(api, hub: Hub, http) -> None:
    async with http.get(f"{api.url}api/events") as resp:
        await hub.wait_subscribers(2)
        hub.close()
        async with asyncio.timeout(5):
            rest = await resp.content.read()
    assert rest.startswith(b"retry: 2000\n")


async def test_non_loopback_needs_a_token(hub: Hub) -> None:
    with pytest.raises(ConfigError, match="token"):
        async with serve_api(status=snapshot, events=hub.events, host="0.0.0.0", port=0):
            pass


async def test_token_guards_data_but_not_health_or_page(hub: Hub, http) -> None:
    async with serve_api(
        status=snapshot, events=hub.events, host="0.0.0.0", port=0, token="s3cret"
    ) as api:
        base = f"http://127.0.0.1:{api.port}"
        for path in ("/api/status", "/metrics", "/api/events", "/api/history"):
            async with http.get(base + path) as resp:
                assert resp.status == 401, path
                assert "token" in (await resp.json())["error"]
        async with http.get(base + "/api/status?token=wrong") as resp:
            assert resp.status == 401
        async with http.get(base + "/api/status", headers={"Authorization": "Bearer s3cret"}) as r:
            assert r.status == 200
        async with http.get(base + "/metrics?token=s3cret") as resp:
            assert resp.status == 200
        for path in ("/", "/healthz", "/app.js"):
            async with http.get(base + path) as resp:
                assert resp.status == 200, path
        assert api.stats.unauthorized == 5


async def test_nothing_changes_state_even_with_the_token(api, http) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        async with http.request(method, f"{api.url}api/status") as resp:
            assert resp.status == 405, method


async def test_a_failing_status_is_a_503_that_names_the_fault(hub: Hub, http) -> None:
    def broken() -> dict[str, Any]:
        raise KeyError("assets")

    async with serve_api(status=broken, events=hub.events, port=0) as api:
        async with http.get(f"{api.url}api/status") as resp:
            assert resp.status == 503
            assert "gateway status unavailable" in (await resp.json())["error"]
        async with http.get(f"{api.url}healthz") as resp:
            assert resp.status == 503
        assert api.stats.status_errors == 2
        async with http.get(api.url) as resp:
            assert resp.status == 200  # the page itself still loads


async def test_non_finite_values_become_null(hub: Hub, http) -> None:
    snap = snapshot()
    snap["assets"]["wq-1"]["state"]["temperature"]["value"] = float("nan")
    async with (
        serve_api(status=lambda: snap, events=hub.events, port=0) as api,
        http.get(f"{api.url}api/status") as resp,
    ):
        text = await resp.text()
    assert "NaN" not in text
    assert json.loads(text)["assets"]["wq-1"]["state"]["temperature"]["value"] is None


async def test_a_failing_feed_ends_the_stream_not_the_server(http) -> None:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def failing() -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        async def gen() -> AsyncIterator[dict[str, Any]]:
            raise OSError("feed gone")
            yield {}

        yield gen()

    snap = snapshot()
    async with serve_api(status=lambda: snap, events=failing, port=0) as api:
        async with http.get(f"{api.url}api/events") as resp:
            async with asyncio.timeout(5):
                await resp.content.read()
        async with http.get(f"{api.url}api/status") as resp:
            assert resp.status == 200


async def test_port_in_use_is_a_clear_config_error(api: ApiServer, hub: Hub) -> None:
    with pytest.raises(ConfigError, match="listen"):
        async with serve_api(status=snapshot, events=hub.events, port=api.port):
            pass


async def test_a_client_leaving_mid_stream_is_no_error(api, hub: Hub, http, caplog) -> None:
    resp = await http.get(f"{api.url}api/events")
    await hub.wait_subscribers(2)
    hub.publish({"type": "warning", "msg": "first", "device": "wq-1"})
    assert (await read_sse(resp, 1))[0][1]["msg"] == "first"
    resp.close()  # the browser tab is closed
    async with asyncio.timeout(5):
        while api.stats.sse_clients:  # the next write finds the closed socket
            hub.publish({"type": "warning", "msg": "after", "device": "wq-1"})
            await asyncio.sleep(0.01)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
