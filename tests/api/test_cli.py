"""``twinedge status`` and ``twinedge tail`` run as real processes against a real API server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from typing import Any

from gateway.api import serve_api
from gateway.commands.status import format_event

from .hub import Hub, snapshot


async def twinedge(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await twinedge(*args, env=env)
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def stale_snapshot() -> dict[str, Any]:
    snap = snapshot()
    snap["assets"]["sl-1"]["liveness"]["last_seen"] = time.time() - 120  # past stale_after_s
    return snap


async def test_status_table_shows_devices_units_liveness_and_faults() -> None:
    hub, snap = Hub(), stale_snapshot()
    async with serve_api(status=lambda: snap, events=hub.events, port=0) as api:
        code, out, err = await run("status", "--url", api.url)
    assert code == 0, err
    assert "gw-test" in out and "harbour" in out and "connected" in out
    wq = next(line for line in out.splitlines() if "wq-1" in line)
    assert "online" in wq and "turbidity" in wq  # the active anomaly
    assert "temperature 12.3 °C" in out and "power 41.5 W" in out
    sl = next(line for line in out.splitlines() if "sl-1" in line)
    assert "STALE" in sl and "(stale)" in sl
    assert "frame CRC mismatch" in out


async def test_status_json_is_the_api_snapshot() -> None:
    hub, snap = Hub(), snapshot()
    async with serve_api(status=lambda: snap, events=hub.events, port=0) as api:
        code, out, _ = await run("status", "--json", "--url", api.url)
    assert code == 0
    body = json.loads(out)
    assert body["assets"].keys() == snap["assets"].keys()
    assert body["buffer"]["dropped"]["total"] == 5


async def test_status_names_an_unreachable_gateway() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = await run("status", "--url", f"http://127.0.0.1:{port}")
    assert code == 1
    assert f"cannot reach the gateway at http://127.0.0.1:{port}" in err
    assert "Traceback" not in err


async def test_status_uses_the_token_from_the_environment() -> None:
    hub, snap = Hub(), snapshot()
    async with serve_api(
        status=lambda: snap, events=hub.events, host="0.0.0.0", port=0, token="t0ken"
    ) as api:
        url = f"http://127.0.0.1:{api.port}"
        code, _, err = await run("status", "--url", url)
        assert code == 1 and "wants a token" in err
        code, out, err = await run("status", "--url", url, env={"TWINEDGE_TOKEN": "t0ken"})
        assert code == 0, err
        assert "wq-1" in out


async def test_tail_follows_filtered_events_live() -> None:
    hub, snap = Hub(), snapshot()
    async with serve_api(status=lambda: snap, events=hub.events, port=0) as api:
        proc = await twinedge(
            "tail",
            "--url",
            api.url,
            "--asset",
            "wq-1",
            "--type",
            "reading",
            "--type",
            "liveness",
            "--count",
            "3",
        )
        await hub.wait_subscribers(2, within=30)  # the history recorder, then tail
        hub.publish(
            {
                "type": "reading",
                "asset": "sl-1",
                "quantity": "power",
                "value": 3.0,
                "unit": "WTT",
                "quality": "good",
                "ts": 0.0,
            }
        )
        hub.publish(
            {
                "type": "reading",
                "asset": "wq-1",
                "quantity": "temperature",
                "value": 12.25,
                "unit": "CEL",
                "quality": "good",
                "ts": 0.5,
            }
        )
        hub.publish({"type": "warning", "msg": "noise", "device": "wq-1"})
        hub.publish(
            {
                "type": "reading",
                "asset": "wq-1",
                "quantity": "ph",
                "value": 9.9,
                "unit": "C62",
                "quality": "suspect",
                "ts": 1.0,
            }
        )
        hub.publish({"type": "liveness", "asset": "wq-1", "online": False, "ts": 2.0})
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines() == [
        "00:00:00.500Z reading  wq-1 temperature = 12.25 °C (good)",
        "00:00:01.000Z reading  wq-1 ph = 9.9 (suspect)",
        "00:00:02.000Z liveness wq-1 STALE",
    ]


async def test_tail_reports_the_end_of_the_stream() -> None:
    hub, snap = Hub(), snapshot()
    async with serve_api(status=lambda: snap, events=hub.events, port=0) as api:
        proc = await twinedge("tail", "--url", api.url, "--json")
        await hub.wait_subscribers(2, within=30)
        hub.publish({"type": "anomaly", "asset": "wq-1", "quantity": "turbidity", "score": 0.9})
        hub.close()
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    assert proc.returncode == 1
    assert json.loads(out.decode().splitlines()[0])["score"] == 0.9
    assert "closed the event stream" in err.decode()


def test_format_event_covers_every_kind() -> None:
    assert format_event(
        {
            "type": "anomaly",
            "asset": "wq-1",
            "quantity": "ph",
            "score": 0.93,
            "threshold": 0.8,
            "model": "water-quality@1.0.0",
            "ts": 0,
        }
    ) == ("00:00:00.000Z anomaly  wq-1 ph score 0.93 threshold 0.8 water-quality@1.0.0")
    assert format_event(
        {
            "type": "anomaly",
            "asset": "wq-1",
            "quantities": ["ph", "orp"],
            "state": "end",
            "score": 0.2,
            "threshold": 0.3,
            "model": "water-quality@1.0.0",
            "ts": 0,
        }
    ) == ("00:00:00.000Z anomaly  wq-1 ph,orp ended score 0.2 threshold 0.3 water-quality@1.0.0")
    assert format_event({"type": "warning", "device": "sl-2", "msg": "bad CRC", "ts": 0}) == (
        "00:00:00.000Z warning  sl-2 bad CRC"
    )
    assert format_event({"type": "liveness", "asset": "c-1", "online": True, "ts": 0}).endswith(
        "c-1 online"
    )


async def test_status_wait_rides_out_a_gateway_that_is_still_starting() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await twinedge("status", "--url", f"http://127.0.0.1:{port}", "--wait", "20")
    hub, snap = Hub(), snapshot()
    async with serve_api(status=lambda: snap, events=hub.events, port=port):
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "gw-test" in out.decode()


async def test_status_lists_the_models() -> None:
    hub, snap = Hub(), snapshot()
    async with serve_api(status=lambda: snap, events=hub.events, port=0) as api:
        code, out, err = await run("status", "--url", api.url)
    assert code == 0, err
    row = next(line for line in out.splitlines() if "water-quality@1.0.0" in line)
    assert "active" in row and "1234" in row and "17" in row and "6.3" in row


async def test_status_check_fails_on_what_needs_a_technician() -> None:
    hub, snap = Hub(), stale_snapshot()
    async with serve_api(status=lambda: snap, events=hub.events, port=0) as api:
        code, _, err = await run("status", "--check", "--json", "--url", api.url)
        assert code == 1
        assert err.splitlines() == [
            "twinedge: check: sl-1 is stale",
            "twinedge: check: the buffer dropped 5 readings",
        ]
        snap["assets"]["sl-1"]["liveness"]["last_seen"] = time.time()
        snap["buffer"]["dropped"]["total"] = 0
        code, _, err = await run("status", "--check", "--url", api.url)
        assert code == 0, err
