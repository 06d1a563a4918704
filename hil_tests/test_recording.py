"""A gateway with [recording] on keeps a bounded rolling recording of what it stored, writes it
on a clean stop, and `twinedge rehearse --recording` replays it against a candidate."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from gateway.app import Gateway
from gateway.config import load_site
from gateway.rehearse.recording import load_recording

SITE = """
[gateway]
id = "gw-rec"
site = "lab"
store = "store.db"
[api]
enabled = false
[recording]
enabled = true
max_bytes = "1MB"
path = "week.jsonl.gz"
[[assets]]
id = "wq-1"
category = "water-quality"
location = [4.9, 52.37]
source = "demo:water-quality?period=0.02s&seed=1"
[[assets]]
id = "ped-1"
category = "pedestrian-counter"
location = [4.91, 52.37]
source = "demo:pedestrian-counter?period=0.02s&seed=3"
"""


async def test_recording_written_on_stop_and_rehearsed(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(SITE, encoding="utf-8")
    site = load_site(tmp_path / "site.toml")
    async with Gateway(site) as gw:
        assert gw.recorder is not None
        async with asyncio.timeout(20):
            while gw.readings_in < 600:  # noqa: ASYNC110 - readings arrive at ~500/s
                await asyncio.sleep(0.05)
        recorded = gw.status()["recording"]
    assert recorded["wq-1"]["rows"] > 0 and recorded["ped-1"]["rows"] > 0
    path = tmp_path / "week.jsonl.gz"
    series = {s.asset: s for s in load_recording(path)}
    assert "temperature" in series["wq-1"].values and len(series["wq-1"].times) > 50
    # counts only for a pedestrian counter: no battery, no rssi, no identifiers
    assert set(series["ped-1"].values) <= {"count_in", "count_out"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "rehearse", "--site", str(site.file),
        "--candidate", str(site.file), "--recording", str(path), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-1500:]
    report = json.loads(out)
    assert report["input"]["kind"] == "recording"
    assert set(report["sides"]) == {"current", "candidate"}
    assert report["sides"]["current"]["readings"] > 0  # the recorded readings were replayed
