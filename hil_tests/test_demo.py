"""`twinedge demo --json` as a user runs it: six emulated assets behind real serial, Modbus and
BLE transports (or in-process), one JSON summary whose numbers agree with what the feed consumer
received."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest


@pytest.mark.parametrize(
    ("broker", "devices"), [("embedded", "emulated"), ("mosquitto", "in-process")]
)
async def test_demo_json_summary(broker: str, devices: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "demo", "--duration", "4", "--json",
        "--period", "0.25s", "--broker", broker, "--devices", devices,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    summary = json.loads(out)
    assert set(summary["assets"]) == {
        "wq-harbour", "wq-canal", "light-quay-1", "light-quay-2", "ped-bridge", "ped-square"
    }  # fmt: skip
    assert summary["readings_in"] > 6 * 4 * 4  # six assets, >= 4 quantities, several samples
    assert summary["readings_published"] == summary["readings_in"]  # drained before exit
    assert summary["buffer_rows"] == 0 and summary["dropped"] == 0
    feed = summary["feed"]
    assert feed["readings_received"] == summary["readings_in"]  # the consumer saw every one
    assert feed["duplicates"] == 0 and feed["revision_gaps"] == 0
    for asset_id, asset in summary["assets"].items():
        assert asset["online"], asset_id
        assert asset["revision"] >= 2 and asset["state"], asset_id
        assert feed["twins"][asset_id] >= asset["revision"] - 1  # the feed kept up
        for q in asset["state"].values():
            assert q["unit"] and q["quality"] in ("good", "suspect")
    temp = summary["assets"]["wq-harbour"]["state"]["temperature"]
    assert temp["unit"] == "CEL" and -5 < temp["value"] < 40
