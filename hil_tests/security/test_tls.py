"""The uplink over TLS against a real mosquitto that requires client certificates and enforces
an ACL: the gateway connects and publishes with its own certificate; a wrong CA, no client
certificate or a wrong pin fail with a clear reason while the gateway keeps buffering; the
broker refuses anything outside the gateway's own prefix; the broker password never shows."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from gateway.app import Gateway
from gateway.config import Site, load_site
from gateway.testing import FeedRecorder, Received
from hil_tests.security.conftest import GATEWAY, PREFIX, Pki, secure_broker

SITE = """
[gateway]
id = "{gw}"
site = "lab"
store = "store.db"
delta_interval = "0.2s"
[broker]
url = "{url}"
{broker}
[api]
enabled = false
[[assets]]
id = "wq-1"
category = "water-quality"
location = [4.9, 52.37]
source = "demo:water-quality?period=0.05s&seed=1"
"""


def make_site(folder: Path, url: str, broker: str) -> Site:
    folder.mkdir(exist_ok=True)
    path = folder / "site.toml"
    path.write_text(SITE.format(gw=GATEWAY, url=url, broker=broker), encoding="utf-8")
    return load_site(path)


def tls_keys(pki: Pki, *, ca: Path | None = None, client: bool = True) -> str:
    lines = [f'ca_file = "{ca or pki.ca.file}"']
    if client:
        lines += [f'cert_file = "{pki.client.cert}"', f'key_file = "{pki.client.key}"']
    return "\n".join(lines)


async def until(cond: Callable[[], bool], within: float = 20.0) -> None:
    """Wait for a condition on the gateway's own state, with a timeout."""
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110 - polls in-memory gateway state, bounded by the timeout
            await asyncio.sleep(0.02)


def readings(got: list[Received]) -> list[Received]:
    return [r for r in got if r.doc.get("kind") == "readings"]


async def test_mutual_tls_connects_and_publishes(tmp_path: Path, pki: Pki) -> None:
    async with secure_broker(tmp_path / "mq", pki) as broker:
        site = make_site(tmp_path / "gw", broker.tls_url, tls_keys(pki))
        async with FeedRecorder(broker.plain_url, f"{PREFIX}/#") as rec, Gateway(site) as gw:
            got = await rec.wait_for(lambda got: len(readings(got)) >= 3)
            assert got[0].doc["kind"] == "birth"
            assert gw.status()["uplink"]["state"] == "connected"
            assert gw.status()["uplink"]["last_error"] is None


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong-ca", "the broker's certificate is not trusted"),
        ("no-client-cert", "client certificate"),
        ("wrong-pin", "pin_sha256"),
    ],
)
async def test_refused_connection_says_why_and_keeps_buffering(
    tmp_path: Path, pki: Pki, case: str, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = {
        "wrong-ca": tls_keys(pki, ca=pki.wrong_ca.file),
        "no-client-cert": tls_keys(pki, client=False),
        "wrong-pin": tls_keys(pki) + f'\npin_sha256 = "{"0" * 64}"',
    }[case]
    async with secure_broker(tmp_path / "mq", pki) as broker:
        site = make_site(tmp_path / "gw", broker.tls_url, keys)
        async with FeedRecorder(broker.plain_url, f"{PREFIX}/#") as rec, Gateway(site) as gw:
            assert gw.uplink is not None
            await until(lambda: gw.uplink is not None and gw.uplink.last_error is not None)
            rows, seen = gw.outbox.rows, gw.readings_in
            # still reading, still buffering
            await until(lambda: gw.readings_in >= seen + 40 and gw.outbox.rows > rows)
            status = gw.status()["uplink"]
            assert status["state"] != "connected" and expected in status["last_error"]
            assert any(expected in r.getMessage() for r in caplog.records)
            assert not rec.received  # nothing reached the broker


async def test_pinned_broker_certificate_connects(tmp_path: Path, pki: Pki) -> None:
    pin = ":".join(f"{b:02X}" for b in bytes.fromhex(pki.server.spki_sha256))
    async with secure_broker(tmp_path / "mq", pki) as broker:
        site = make_site(tmp_path / "gw", broker.tls_url, tls_keys(pki) + f'\npin_sha256 = "{pin}"')
        async with FeedRecorder(broker.plain_url, f"{PREFIX}/#") as rec, Gateway(site):
            await rec.wait_for(lambda got: len(readings(got)) >= 2)


async def test_acl_confines_the_gateway_to_its_prefix(tmp_path: Path, pki: Pki) -> None:
    ctx = ssl.create_default_context(cafile=str(pki.ca.file))
    ctx.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    async with secure_broker(tmp_path / "mq", pki) as broker:
        port = int(broker.tls_url.rsplit(":", 1)[1])
        async with (
            FeedRecorder(broker.plain_url, "twinedge/v1/#") as rec,
            aiomqtt.Client("127.0.0.1", port, tls_context=ctx, identifier="acl-probe") as gw,
        ):
            others = [
                "twinedge/v1/lab/gw-other/readings",
                "twinedge/v1/lab/gw-other/desired/wq-1",
                "twinedge/v1/other-site/gw-test/status",
            ]
            for topic in others:
                await gw.publish(topic, json.dumps({"v": 1, "forged": topic}), qos=1)
            await gw.publish(f"{PREFIX}/readings", json.dumps({"v": 1, "kind": "marker"}), qos=1)
            got = await rec.wait_for(lambda got: any(r.doc.get("kind") == "marker" for r in got))
            assert [r.topic for r in got] == [f"{PREFIX}/readings"]  # the forged ones never arrived


async def test_broker_password_never_appears(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-Pa55word-4e1d"
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TWINEDGE_TEST_BROKER_PASSWORD", secret)
    auth = f'username = "{GATEWAY}"\npassword_env = "TWINEDGE_TEST_BROKER_PASSWORD"\n'
    async with secure_broker(tmp_path / "mq", pki, client_certs=False, password=secret) as broker:
        site = make_site(tmp_path / "gw", broker.tls_url, tls_keys(pki, client=False) + "\n" + auth)
        async with FeedRecorder(broker.plain_url, f"{PREFIX}/#") as rec:
            async with Gateway(site) as gw:
                await rec.wait_for(lambda got: len(readings(got)) >= 2)
                views = [json.dumps(gw.status(), default=str), repr(site), repr(site.broker)]
            monkeypatch.setenv("TWINEDGE_TEST_BROKER_PASSWORD", secret + "-wrong")
            async with Gateway(site) as gw:  # the broker refuses a wrong password
                await until(lambda: gw.uplink is not None and gw.uplink.last_error is not None)
                views.append(json.dumps(gw.status(), default=str))
                assert "refused the login" in str(gw.uplink.last_error)
        feed = [r.raw for r in rec.received]
    logs = [r.getMessage() for r in caplog.records] + [caplog.text]
    assert any("uplink to" in line for line in logs)  # the failure was logged, without the secret
    assert len(feed) > 3
    for text in [*views, *logs]:
        assert secret not in text
    for raw in feed:
        assert secret.encode() not in raw
