"""A real mosquitto set up by the tests with TLS, client-certificate or password auth and an ACL.

Two listeners: a TLS one for the gateway (the one under test) and a plain loopback one for the
test's own recorder (anonymous: may read everything and write the downlink topics only).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.broker import free_port, wait_port
from hil_tests.security.pki import CA, Issued

GATEWAY = "gw-test"
PREFIX = f"twinedge/v1/lab/{GATEWAY}"
ACL = """
# anonymous clients (the test's recorder on the plain listener)
topic read twinedge/v1/#
topic write twinedge/v1/+/+/desired/#
topic write twinedge/v1/+/+/command/#

# every gateway (certificate common name = MQTT user = gateway id): its own prefix only
pattern readwrite twinedge/v1/lab/%u/#
"""


@dataclass
class Pki:
    ca: CA
    server: Issued
    client: Issued
    wrong_ca: CA


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = CA(tmp_path / "pki", "site-ca")
    return Pki(
        ca,
        ca.issue("broker", server=True),
        ca.issue(GATEWAY),
        CA(tmp_path / "pki-other", "other-ca"),
    )


@dataclass
class SecureBroker:
    plain_url: str
    tls_url: str
    log: Path


def _passwd(path: Path, user: str, password: str) -> None:
    exe = shutil.which("mosquitto_passwd", path=os.environ.get("PATH", "") + ":/usr/bin")
    if exe is None:
        pytest.skip("mosquitto_passwd is not installed")
    path.write_text("", encoding="utf-8")
    subprocess.run([exe, "-b", str(path), user, password], check=True, capture_output=True)


@asynccontextmanager
async def secure_broker(
    folder: Path, pki: Pki, *, client_certs: bool = True, password: str | None = None
) -> AsyncIterator[SecureBroker]:
    """mosquitto with TLS on one port (client certificates required, identity = username, or
    a password file) and the ACL above; plain anonymous listener for the recorder."""
    exe = shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if exe is None:
        pytest.skip("mosquitto is not installed")
    folder.mkdir(exist_ok=True)
    plain, tls = free_port(), free_port()
    (folder / "acl").write_text(ACL, encoding="utf-8")
    lines = [
        "per_listener_settings false",
        "allow_anonymous true",
        "persistence false",
        "set_tcp_nodelay true",
        f"acl_file {folder / 'acl'}",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        f"listener {plain} 127.0.0.1",
        f"listener {tls} 127.0.0.1",
        f"cafile {pki.ca.file}",
        f"certfile {pki.server.cert}",
        f"keyfile {pki.server.key}",
    ]
    if os.geteuid() == 0:
        lines.insert(0, "user root")  # else mosquitto drops to a user who cannot read the keys
    if client_certs:
        lines += ["require_certificate true", "use_identity_as_username true"]
    if password is not None:
        _passwd(folder / "passwd", GATEWAY, password)
        lines.insert(1, f"password_file {folder / 'passwd'}")
    conf = folder / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log = folder / "mosquitto.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            exe, "-c", str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=err
        )
    try:
        await wait_port("127.0.0.1", plain)
        await wait_port("127.0.0.1", tls)
        yield SecureBroker(f"mqtt://127.0.0.1:{plain}", f"mqtts://127.0.0.1:{tls}", log)
    finally:
        proc.terminate()
        await proc.wait()
