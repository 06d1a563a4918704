"""Model lifecycle over the downlink of a running gateway on a real mosquitto: a category's model
put in shadow mode, a signed model bundle hot-swapped in while readings keep flowing, and a
tampered or unsigned bundle refused with the previous model still scoring."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.broker import MosquittoProcess
from gateway.config import load_site
from gateway.security import load_private_key, new_key_pair, sign, sign_bundle
from gateway.testing import FeedRecorder, Received

MODELS = Path(__file__).resolve().parents[1] / "models"
SITE = """
[gateway]
id = "gw-models"
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
"""
BASE = "twinedge/v1/lab/gw-models"


def applied(got: list[Received], ref: str) -> list[dict[str, Any]]:
    return [r.doc for r in got if r.doc.get("kind") == "applied" and r.doc["desired_id"] == ref]


def readings(got: list[Received]) -> int:
    return sum(len(r.doc["rows"]) for r in got if r.doc.get("kind") == "readings")


async def test_shadow_mode_and_signed_bundle_swap(broker: MosquittoProcess, tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    private, public = new_key_pair()
    (tmp_path / "keys" / "ops.key").write_bytes(private)
    (tmp_path / "keys" / "ops.pub").write_bytes(public)
    ops = load_private_key(tmp_path / "keys" / "ops.key")
    (tmp_path / "site.toml").write_text(SITE.format(url=broker.url), encoding="utf-8")
    site = load_site(tmp_path / "site.toml")
    bundles = tmp_path / "bundles"
    good = bundles / "wq-next"
    shutil.copytree(MODELS / "water-quality", good)
    manifest = json.loads((good / "manifest.json").read_text())
    manifest["version"] = "1.0.1-test"  # the same model under a new version: visible once in use
    (good / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sign_bundle(good, ops, exp=time.time() + 86400)
    tampered = bundles / "wq-tampered"
    shutil.copytree(good, tampered)
    (tampered / "model.onnx").write_bytes((tampered / "model.onnx").read_bytes() + b"\0")
    unsigned = bundles / "wq-unsigned"
    shutil.copytree(MODELS / "water-quality", unsigned)

    def signed(kind: str, payload: dict[str, Any]) -> str:
        aud = f"{BASE}/{kind}/wq-1"
        return json.dumps(sign(payload, ops, aud=aud, exp=time.time() + 300))

    async with FeedRecorder(broker.url, f"{BASE}/#") as rec, Gateway(site) as gw:
        await rec.wait_for(lambda got: readings(got) > 20)
        assert gw.detector is not None
        before = gw.detector.stats()["water-quality"]
        assert before["mode"] == "active"

        await rec.publish(
            f"{BASE}/desired/wq-1", signed("desired", {"v": 1, "id": "m-1", "mode": "shadow"})
        )
        got = await rec.wait_for(lambda got: bool(applied(got, "m-1")))
        assert applied(got, "m-1")[0]["ok"] and applied(got, "m-1")[0]["config"]["mode"] == "shadow"
        assert gw.detector.stats()["water-quality"]["mode"] == "shadow"

        for ref, bundle in (
            ("s-bad", "wq-tampered"),
            ("s-unsigned", "wq-unsigned"),
            ("s-escape", "../bundles/wq-next"),
        ):
            cmd = {"v": 1, "id": ref, "command": "swap_model", "args": {"bundle": bundle}}
            await rec.publish(f"{BASE}/command/wq-1", signed("command", cmd))
            got = await rec.wait_for(lambda got, ref=ref: bool(applied(got, ref)))
            report = applied(got, ref)[0]
            assert report["ok"] is False and report["errors"], ref
            assert gw.detector.stats()["water-quality"]["version"] == before["version"]  # kept

        flowing = readings(rec.received)
        cmd = {"v": 1, "id": "s-ok", "command": "swap_model", "args": {"bundle": "wq-next"}}
        await rec.publish(f"{BASE}/command/wq-1", signed("command", cmd))
        got = await rec.wait_for(lambda got: bool(applied(got, "s-ok")))
        report = applied(got, "s-ok")[0]
        assert report["ok"] is True, report["errors"]
        assert report["config"]["model"] == f"{manifest['name']}@1.0.1-test"
        after = gw.detector.stats()["water-quality"]
        assert after["version"] == "1.0.1-test" != before["version"]
        assert after["mode"] == "shadow"  # the category keeps its mode across a swap
        await rec.wait_for(lambda got: readings(got) > flowing + 20)  # readings never stopped
        assert gw.status()["downlink"]["refused"] == 0  # refusals above are reported, not dropped
