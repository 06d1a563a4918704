"""``twinedge doctor`` checks against real ports, a real mosquitto (plain and TLS), real SQLite
files and real model files; the clock check against a stand-in ``timedatectl`` on PATH."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.broker import free_port, mosquitto
from gateway.config import BrokerConfig, load_site
from gateway.doctor import (
    Status,
    check_ble,
    check_broker,
    check_clock,
    check_disk,
    check_models,
    check_serial_port,
    check_store,
    run_checks,
)

REPO = Path(__file__).resolve().parents[1]


def broker_cfg(port: int, tls: bool = False, ca: Path | None = None) -> BrokerConfig:
    scheme = "mqtts" if tls else "mqtt"
    return BrokerConfig(
        url=f"{scheme}://127.0.0.1:{port}",
        host="127.0.0.1",
        port=port,
        tls=tls,
        client_id="doctor",
        ca_file=ca,
    )


# -- serial --------------------------------------------------------------------------------------


def test_serial_port_present_and_usable() -> None:
    main, other = os.openpty()
    try:
        c = check_serial_port(os.ttyname(other))
    finally:
        os.close(main), os.close(other)
    assert c.status is Status.OK


def test_missing_and_wrong_serial_paths_fail_with_a_remedy(tmp_path: Path) -> None:
    gone = check_serial_port("/dev/ttyUSB-twinedge-absent")
    assert gone.status is Status.FAIL and "/dev/serial/by-id/" in gone.remedy
    plain = tmp_path / "ttyUSB0"
    plain.write_text("")
    wrong = check_serial_port(str(plain))
    assert wrong.status is Status.FAIL and "not a character device" in wrong.detail


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_a_user_outside_the_ports_group_is_told_to_join_it() -> None:
    main, other = os.openpty()
    path = os.ttyname(other)
    os.chown(path, 0, 20)  # root:dialout as udev leaves a USB serial adapter
    os.chmod(path, 0o660)
    try:
        out = _as_nobody(lambda: json.dumps(check_serial_port(path).as_dict()))
    finally:
        os.close(main), os.close(other)
    found = json.loads(out)
    assert found["status"] == "fail"
    assert "user nobody is not in it" in found["detail"]
    assert found["remedy"].startswith("sudo usermod -aG dialout nobody")


def _as_nobody(job: Callable[[], str]) -> str:
    """Run ``job`` in a forked child that dropped to user and group nobody with no supplementary
    groups; return what it printed. Forked after the imports, so the child needs no access to
    the checkout (which may not be readable by that user)."""
    r, w = os.pipe()
    with warnings.catch_warnings():  # Python 3.12 warns about fork() with threads alive
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, job().encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        out = pipe.read().decode()
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the check failed as user nobody"
    return out


# -- BLE -----------------------------------------------------------------------------------------


def test_ble_adapter_presence_and_rfkill(tmp_path: Path) -> None:
    sys_class = tmp_path / "bluetooth"
    assert check_ble(False, sys_class).status is Status.SKIP
    missing = check_ble(True, sys_class)
    assert missing.status is Status.FAIL and "Bluetooth" in missing.remedy
    soft = sys_class / "hci0" / "rfkill3" / "soft"
    soft.parent.mkdir(parents=True)
    soft.write_text("1\n")
    assert check_ble(True, sys_class).remedy == "sudo rfkill unblock bluetooth"
    soft.write_text("0\n")
    bus = tmp_path / "system_bus_socket"
    no_bus = check_ble(True, sys_class, bus)
    assert no_bus.status is Status.FAIL and "bluez" in no_bus.remedy
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(bus))
        ok = check_ble(True, sys_class, bus)
    assert ok.status is Status.OK and ok.subject == "hci0"


# -- broker --------------------------------------------------------------------------------------


async def test_broker_reachable_and_unreachable() -> None:
    async with mosquitto() as broker:
        ok = await check_broker(broker_cfg(broker.port))
    assert ok.status is Status.OK
    assert ok.detail == "TCP connection ok (no TLS), MQTT 5 CONNECT accepted"
    down = await check_broker(broker_cfg(free_port()))
    assert down.status is Status.FAIL and "start the broker" in down.remedy


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            obj.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


def make_pki(tmp: Path) -> tuple[Path, Path, Path, Path]:
    """A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA."""
    ca_key, other_key, srv_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "twinedge test CA")])
    ca = _cert("twinedge test CA", ca_key, ca_name, ca_key, True)
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some other CA")])
    other = _cert("some other CA", other_key, other_name, other_key, True)
    srv = _cert("127.0.0.1", srv_key, ca_name, ca_key, False)
    return (
        _pem(tmp / "ca.pem", ca),
        _pem(tmp / "other.pem", other),
        _pem(tmp / "server.pem", srv),
        _pem(tmp / "server.key", srv_key),
    )


async def test_broker_tls_handshake_checks_the_ca(tmp_path: Path) -> None:
    ca, other, cert, key = make_pki(tmp_path)
    extra = f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    async with mosquitto(extra=extra) as broker:
        good = await check_broker(broker_cfg(broker.port, tls=True, ca=ca))
        bad = await check_broker(broker_cfg(broker.port, tls=True, ca=other))
        plain_to_tls = await check_broker(broker_cfg(broker.port, tls=True, ca=None))
    assert good.status is Status.OK
    assert good.detail == "TLS handshake ok, MQTT 5 CONNECT accepted"
    assert bad.status is Status.FAIL and "certificate rejected" in bad.detail
    assert bad.remedy == "set [broker].ca_file to the CA that signed the broker's certificate"
    assert plain_to_tls.status is Status.FAIL


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    """A mosquitto password file with user ``gw`` and password ``right-secret``."""
    passwords = tmp_path / "passwd"
    passwords.write_text("")
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwords), "gw", "right-secret"], check=True, timeout=30
    )
    return passwords


async def test_broker_credentials_are_checked_with_an_mqtt_session(
    password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = f"allow_anonymous false\npassword_file {password_file}\n"
    async with mosquitto(extra=extra) as broker:
        cfg = dataclasses.replace(
            broker_cfg(broker.port), username="gw", password_env="TWINEDGE_TEST_BROKER_PASSWORD"
        )
        monkeypatch.setenv("TWINEDGE_TEST_BROKER_PASSWORD", "wrong")
        bad = await check_broker(cfg)
        monkeypatch.setenv("TWINEDGE_TEST_BROKER_PASSWORD", "right-secret")
        good = await check_broker(cfg)
    assert bad.status is Status.FAIL and "MQTT CONNECT failed" in bad.detail, bad.detail
    assert "authoriz" in bad.detail.lower()
    assert bad.remedy == "check [broker] username, password_file/password_env and protocol"
    assert good.status is Status.OK and good.detail.endswith("MQTT 5 CONNECT accepted")


async def test_a_silent_broker_times_out_with_a_remedy() -> None:
    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:  # accepts TCP but never speaks TLS
        c = await check_broker(broker_cfg(port, tls=True), timeout_s=0.5)
        for w in accepted:
            w.close()
            await w.wait_closed()
    assert c.status is Status.FAIL and "no answer within 0.5 s" in c.detail


# -- clock ---------------------------------------------------------------------------------------


def _fake_timedatectl(tmp: Path, answer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = tmp / "timedatectl"
    exe.write_text(f'#!/bin/sh\n[ "$1" = show ] && echo {answer}\n')
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp}:{os.environ['PATH']}")


async def test_clock_uses_timedatectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_timedatectl(tmp_path, "no", monkeypatch)
    c = await check_clock()
    assert c.status is Status.FAIL and "set-ntp true" in c.remedy
    _fake_timedatectl(tmp_path, "yes", monkeypatch)
    assert (await check_clock()).status is Status.OK


async def test_clock_falls_back_to_adjtimex(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    c = await check_clock()
    assert "adjtimex" in c.detail and c.status in (Status.OK, Status.FAIL)


# -- disk and store ------------------------------------------------------------------------------


def test_disk_budget(tmp_path: Path) -> None:
    assert check_disk(tmp_path / "var" / "gw.db", 1 << 20).status is Status.OK
    c = check_disk(tmp_path / "gw.db", 1 << 60)
    assert c.status is Status.FAIL and "lower [buffer].max_bytes" in c.remedy


def _store(path: Path, rows: int = 2000) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE readings (seq INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("CREATE INDEX readings_body ON readings (body)")
    conn.executemany(
        "INSERT INTO readings (body) VALUES (?)", [(f"row {i} " + "x" * 50,) for i in range(rows)]
    )
    conn.commit()
    conn.close()


async def test_store_integrity(tmp_path: Path) -> None:
    store = tmp_path / "gw.db"
    assert "first run" in (await check_store(store)).detail
    _store(store)
    assert (await check_store(store)).status is Status.OK
    conn = sqlite3.connect(store)
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'readings'").fetchone()
    conn.close()
    data = bytearray(store.read_bytes())
    page = 4096
    data[(root - 1) * page : root * page] = b"\xa5" * page  # scribble over the table's root page
    store.write_bytes(bytes(data))
    bad = await check_store(store)
    assert bad.status is Status.FAIL and "move the file aside" in bad.remedy
    store.write_bytes(b"not a database at all" * 100)
    junk = await check_store(store)
    assert junk.status is Status.FAIL and "unreadable" in junk.detail


# -- models --------------------------------------------------------------------------------------


def _bundle(folder: Path, name: str = "water-quality") -> Path:
    """A copy of a shipped model bundle (model.onnx + manifest.json)."""
    shutil.copytree(REPO / "models" / name, folder)
    return folder


async def test_model_bundles(tmp_path: Path) -> None:
    _bundle(tmp_path / "water-quality")
    tampered = _bundle(tmp_path / "streetlight", "streetlight")
    with (tampered / "model.onnx").open("ab") as f:
        f.write(b"\0")
    wrong_input = _bundle(tmp_path / "counter", "pedestrian-counter")
    manifest = json.loads((wrong_input / "manifest.json").read_text())
    manifest["input"]["shape"][-1] += 1  # the manifest no longer describes the model
    (wrong_input / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "broken").mkdir()
    found = {c.subject: c for c in await check_models(tmp_path)}
    assert found["water-quality"].status is Status.OK, found["water-quality"].detail
    assert found["water-quality"].detail.startswith("version 1.0.0, sha256 matches")
    assert found["streetlight"].status is Status.FAIL and "differs" in found["streetlight"].detail
    assert found["counter"].status is Status.FAIL and "unusable" in found["counter"].detail
    assert "twinedge model verify" in found["counter"].remedy
    assert found["broken"].status is Status.FAIL and "manifest" in found["broken"].detail
    assert (await check_models(tmp_path / "none"))[0].status is Status.FAIL
    assert (await check_models(None))[0].status is Status.SKIP


# -- a whole site, and the command -----------------------------------------------------------------


def write_site(tmp: Path, broker_port: int, serial: str) -> Path:
    _bundle(tmp / "models" / "water-quality")
    site = tmp / "site.toml"
    site.write_text(f"""
[gateway]
id = "gw-doctor"
site = "testsite"
store = "var/gw.db"
models = "models"

[broker]
url = "mqtt://127.0.0.1:{broker_port}"

[buffer]
max_bytes = "8MB"

[[assets]]
id = "wq-1"
category = "water-quality"
source = "serial:{serial}"
location = [4.35, 50.85]

[[assets]]
id = "sl-1"
category = "streetlight"
source = "serial:/dev/ttyUSB-twinedge-absent"
location = [4.36, 50.85]
""")
    return site


async def test_run_checks_on_a_site(tmp_path: Path) -> None:
    main, other = os.openpty()
    tty = os.ttyname(other)
    try:
        async with mosquitto() as broker:
            site = load_site(write_site(tmp_path, broker.port, tty))
            checks = await run_checks(site, ble_sys=tmp_path / "no-bluetooth")
    finally:
        os.close(main), os.close(other)
    by = {(c.check, c.subject): c.status for c in checks}
    assert by[("serial", tty)] is Status.OK
    assert by[("serial", "/dev/ttyUSB-twinedge-absent")] is Status.FAIL
    assert by[("broker", f"mqtt://127.0.0.1:{broker.port}")] is Status.OK
    assert by[("store", str(tmp_path / "var" / "gw.db"))] is Status.OK
    assert by[("model", "water-quality")] is Status.OK
    assert {c.check for c in checks} == {
        "serial",
        "ble",
        "clock",
        "broker",
        "store",
        "disk",
        "model",
    }


async def test_doctor_command_exit_codes_and_remedies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_timedatectl(tmp_path, "yes", monkeypatch)
    site = write_site(tmp_path, free_port(), "/dev/null")  # nobody listens on that port
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "doctor",
        "--site",
        str(site),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "80"},
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 1, err.decode()
    lines = out.decode().splitlines()
    broker = lines.index(next(line for line in lines if line.startswith("FAIL broker")))
    assert lines[broker + 1].strip().startswith("fix: start the broker")  # remedy on one line
    assert any(line.startswith("FAIL serial  /dev/ttyUSB-twinedge-absent") for line in lines)
    assert lines[-1] == "2 check(s) failed"  # the broker and the absent port
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "doctor",
        "--site",
        str(site),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode == 1
    results = json.loads(out)
    assert {r["status"] for r in results} <= {"ok", "warn", "fail", "skip"}
    failed = [r for r in results if r["status"] == "fail"]
    assert [r["check"] for r in failed] == ["serial", "broker"]
    assert all(r["remedy"] for r in failed)
    bad_site = tmp_path / "bad.toml"
    bad_site.write_text("[gateway]\nid = 'x'\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "doctor",
        "--site",
        str(bad_site),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 2 and "bad.toml" in err.decode()
