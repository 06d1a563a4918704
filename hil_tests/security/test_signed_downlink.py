"""Signed downlink end to end on a real mosquitto: a desired change signed by a trusted key is
applied and reported; unsigned, forged, expired, unknown-key, misaddressed and replayed messages
are refused, counted and reported with ok=false while readings keep flowing; a replay is still
refused after the gateway restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.broker import MosquittoProcess
from gateway.config import Site, load_site
from gateway.security import load_private_key, new_key_pair, sign
from gateway.testing import FeedRecorder, Received

SITE = """
[gateway]
id = "gw-test"
site = "lab"
store = "store.db"
delta_interval = "0.2s"
[broker]
url = "{url}"
[api]
enabled = false
[security]
trusted_keys = ["keys/ops.pub"]
[[assets]]
id = "wq-1"
category = "water-quality"
location = [4.9, 52.37]
source = "demo:water-quality?period=0.05s&seed=1"
[[assets]]
id = "light-1"
category = "streetlight"
location = [4.91, 52.37]
source = "demo:streetlight?period=0.1s&seed=2"
"""
BASE = "twinedge/v1/lab/gw-test"
DESIRED = f"{BASE}/desired/wq-1"


def make_site(tmp_path: Path, url: str) -> tuple[Site, Any, Any]:
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("ops", "intruder"):
        private, public = new_key_pair()
        (keys / f"{name}.key").write_bytes(private)
        (keys / f"{name}.pub").write_bytes(public)
    (tmp_path / "site.toml").write_text(SITE.format(url=url), encoding="utf-8")
    site = load_site(tmp_path / "site.toml")
    return site, load_private_key(keys / "ops.key"), load_private_key(keys / "intruder.key")


def applied(got: list[Received], ref: str) -> list[dict[str, Any]]:
    return [r.doc for r in got if r.doc.get("kind") == "applied" and r.doc["desired_id"] == ref]


def n_readings(got: list[Received]) -> int:
    return sum(1 for r in got if r.doc.get("kind") == "readings")


async def test_signed_applied_bad_refused_counted_and_reported(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    site, ops, intruder = make_site(tmp_path, broker.url)
    soon = time.time() + 300
    good = sign({"v": 1, "id": "d-ok", "period": "0.5s"}, ops, aud=DESIRED, exp=soon)
    bad = {
        "d-unsigned": {"v": 1, "id": "d-unsigned", "period": "0.2s"},
        "d-forged": good | {"payload": {"v": 1, "id": "d-forged", "period": "0.2s"}},
        "d-expired": sign(
            {"v": 1, "id": "d-expired", "period": "0.2s"}, ops, aud=DESIRED, exp=time.time() - 120
        ),
        "d-intruder": sign(
            {"v": 1, "id": "d-intruder", "period": "0.2s"}, intruder, aud=DESIRED, exp=soon
        ),
        "d-elsewhere": sign(
            {"v": 1, "id": "d-elsewhere", "period": "0.2s"},
            ops,
            aud=f"{BASE}/desired/light-1",
            exp=soon,
        ),
    }
    reasons = {
        "d-unsigned": "unsigned",
        "d-forged": "bad-signature",
        "d-expired": "expired",
        "d-intruder": "unknown-key",
        "d-elsewhere": "wrong-audience",
    }
    async with FeedRecorder(broker.url, f"{BASE}/#") as rec:
        async with Gateway(site) as gw:
            await rec.wait_for(lambda got: n_readings(got) >= 2)
            await rec.publish(DESIRED, json.dumps(good))
            got = await rec.wait_for(lambda got: bool(applied(got, "d-ok")))
            ok = applied(got, "d-ok")[0]
            assert ok["ok"] is True and ok["config"]["period"] == 0.5
            assert gw.twins["wq-1"].config["period"] == 0.5
            for doc in bad.values():
                await rec.publish(DESIRED, json.dumps(doc))
            await rec.publish(DESIRED, json.dumps(good))  # the same signed message again
            got = await rec.wait_for(
                lambda got: all(applied(got, ref) for ref in bad) and len(applied(got, "d-ok")) == 2
            )
            for ref, reason in reasons.items():
                report = applied(got, ref)[0]
                assert report["ok"] is False and reason in report["errors"][0], ref
                assert report["config"]["period"] == 0.5  # the config in force, unchanged
            replay = applied(got, "d-ok")[1]
            assert replay["ok"] is False and "replayed" in replay["errors"][0]
            status = gw.status()["downlink"]
            assert status["refused"] == 6
            assert status["signature_refused"] == {
                "unsigned": 1,
                "bad-signature": 1,
                "expired": 1,
                "unknown-key": 1,
                "wrong-audience": 1,
                "replayed": 1,
            }
            assert gw.twins["wq-1"].config["period"] == 0.5  # nothing refused was applied
            assert getattr(gw.sources["wq-1"], "period", None) == 0.5
            warned = [w["msg"] for w in gw.warnings if w["device"] == "wq-1"]
            assert sum("signature refused" in m for m in warned) == 6
            seen = n_readings(rec.received)
            await rec.wait_for(lambda got: n_readings(got) > seen + 3)  # readings still flow
        # a restart does not reopen the replay window
        async with Gateway(site) as gw2:
            await rec.wait_for(lambda got: n_readings(got) > seen + 6)
            await rec.publish(DESIRED, json.dumps(good))
            got = await rec.wait_for(lambda got: len(applied(got, "d-ok")) == 3)
            assert "replayed" in applied(got, "d-ok")[2]["errors"][0]
            assert gw2.status()["downlink"]["signature_refused"] == {"replayed": 1}


async def test_signed_command_reaches_the_device(broker: MosquittoProcess, tmp_path: Path) -> None:
    site, ops, _ = make_site(tmp_path, broker.url)
    topic = f"{BASE}/command/light-1"
    cmd = {"v": 1, "id": "c-1", "command": "dim", "args": {"level": 40}}
    async with FeedRecorder(broker.url, f"{BASE}/#") as rec, Gateway(site) as gw:
        await rec.wait_for(lambda got: n_readings(got) >= 2)
        await rec.publish(topic, json.dumps(cmd))  # unsigned: refused
        await rec.publish(topic, json.dumps(sign(cmd, ops, aud=topic, exp=time.time() + 60)))
        got = await rec.wait_for(lambda got: len(applied(got, "c-1")) == 2)
        first, second = applied(got, "c-1")
        assert first["ok"] is False and "unsigned" in first["errors"][0]
        assert second["ok"] is True, second
        assert getattr(gw.sources["light-1"], "dim_level", None) == 40.0
