"""Site checks for ``twinedge doctor``: can this box run this site file?

Each check returns :class:`Check` results: ok, warn, fail or skip, with what was found and, for
a failure, the remedy in one line. The checks read the machine (device nodes, ``/sys``, the
clock, the disk, the store file, model files) and the network (a TCP connection and TLS
handshake to the broker); none changes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import grp
import hashlib
import json
import os
import pwd
import shutil
import sqlite3
import ssl
import stat
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import BrokerConfig, Site

__all__ = [
    "Check",
    "Status",
    "check_ble",
    "check_broker",
    "check_clock",
    "check_disk",
    "check_models",
    "check_serial_ports",
    "check_store",
    "run_checks",
]

BROKER_TIMEOUT_S = 5.0
SERIAL_SCHEMES = ("serial", "modbus")
BLE_SCHEMES = ("ble", "ble-adv")
_TIME_ERROR = 5  # adjtimex(2): the kernel clock is not synchronised


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: which check, about what, its status, what was seen and the one-line fix."""

    check: str
    subject: str
    status: Status
    detail: str
    remedy: str = ""

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


# -- serial ports --------------------------------------------------------------------------------


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def check_serial_port(path: str) -> Check:
    """The port exists, is a character device and this user may read and write it."""
    if not path.startswith("/"):
        return Check("serial", path, Status.SKIP, "not a device path (a URL or emulator)")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Check(
            "serial",
            path,
            Status.FAIL,
            "no such device",
            "plug the device in or fix the path; stable names are in /dev/serial/by-id/",
        )
    if not stat.S_ISCHR(st.st_mode):
        return Check(
            "serial",
            path,
            Status.FAIL,
            "exists but is not a character device",
            "point the asset's source at the tty (e.g. /dev/ttyUSB0), not a regular file",
        )
    if os.access(path, os.R_OK | os.W_OK):
        return Check("serial", path, Status.OK, "readable and writable")
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    mode = stat.filemode(st.st_mode)
    if st.st_gid not in os.getgroups():
        return Check(
            "serial",
            path,
            Status.FAIL,
            f"{mode} owned by group {group}; user {_user()} is not in it",
            f"sudo usermod -aG {group} {_user()} and log in again "
            "(or install deploy/99-twinedge.rules)",
        )
    return Check(
        "serial",
        path,
        Status.FAIL,
        f"{mode}: group {group} may not read and write",
        "install deploy/99-twinedge.rules and replug the device (sets mode 0660)",
    )


def check_serial_ports(paths: Iterable[str]) -> list[Check]:
    found = [check_serial_port(p) for p in dict.fromkeys(paths)]
    return found or [Check("serial", "-", Status.SKIP, "the site has no serial devices")]


# -- Bluetooth -----------------------------------------------------------------------------------


def check_ble(
    needed: bool,
    sys_class: Path = Path("/sys/class/bluetooth"),
    system_bus: Path = Path("/run/dbus/system_bus_socket"),
) -> Check:
    """A Bluetooth adapter is present, not blocked by rfkill, and reachable through BlueZ on the
    system D-Bus (bleak's way to the radio on Linux)."""
    adapters = sorted(p.name for p in sys_class.glob("hci*")) if sys_class.is_dir() else []
    if not adapters:
        if not needed:
            return Check("ble", "adapter", Status.SKIP, "no adapter; the site has no BLE devices")
        return Check(
            "ble",
            "adapter",
            Status.FAIL,
            f"no Bluetooth adapter in {sys_class}",
            "plug in a Bluetooth 4.0+ adapter or enable the onboard one (dtoverlay, BIOS)",
        )
    blocked = [
        name
        for name in adapters
        for soft in sys_class.joinpath(name).glob("rfkill*/soft")
        if soft.read_text().strip() == "1"
    ]
    if blocked and needed:
        return Check(
            "ble",
            ",".join(blocked),
            Status.FAIL,
            "adapter blocked by rfkill",
            "sudo rfkill unblock bluetooth",
        )
    if needed and not system_bus.exists():
        return Check(
            "ble",
            ",".join(adapters),
            Status.FAIL,
            f"adapter present but no system D-Bus at {system_bus}",
            "sudo apt install bluez dbus && sudo systemctl enable --now dbus bluetooth",
        )
    return Check("ble", ",".join(adapters), Status.OK, "adapter present")


# -- broker --------------------------------------------------------------------------------------


def _tls_context(broker: BrokerConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(broker.ca_file) if broker.ca_file else None)
    if broker.cert_file is not None and broker.key_file is not None:
        ctx.load_cert_chain(str(broker.cert_file), str(broker.key_file))
    return ctx


async def check_broker(broker: BrokerConfig | None, timeout_s: float = BROKER_TIMEOUT_S) -> Check:
    """The broker accepts a TCP connection and, for ``mqtts://``, completes a TLS handshake."""
    if broker is None:
        return Check("broker", "-", Status.SKIP, "the site has no [broker]")
    subject = broker.display_url
    try:
        ctx = _tls_context(broker) if broker.tls else None
    except (OSError, ssl.SSLError) as e:
        return Check(
            "broker",
            subject,
            Status.FAIL,
            f"TLS files unusable: {e}",
            "check [broker] ca_file, cert_file and key_file are PEM files that match",
        )
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(
                broker.host, broker.port, ssl=ctx, server_hostname=broker.host if ctx else None
            )
    except TimeoutError:
        return Check(
            "broker",
            subject,
            Status.FAIL,
            f"no answer within {timeout_s:g} s",
            f"check the network path and firewall to the broker (port {broker.port}/tcp)",
        )
    except ssl.SSLCertVerificationError as e:
        return Check(
            "broker",
            subject,
            Status.FAIL,
            f"TLS certificate rejected: {e.verify_message}",
            "set [broker].ca_file to the CA that signed the broker's certificate",
        )
    except ssl.SSLError as e:
        return Check(
            "broker",
            subject,
            Status.FAIL,
            f"TLS handshake failed: {e.reason}",
            "check the broker's TLS listener and [broker] cert_file/key_file",
        )
    except OSError as e:
        return Check(
            "broker",
            subject,
            Status.FAIL,
            f"cannot connect: {e.strerror or e}",
            "start the broker or fix [broker].url (host and port)",
        )
    detail = "TLS handshake ok" if ctx else "TCP connection ok (no TLS)"
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):  # the broker hung up first: fine
        await writer.wait_closed()
    refused = await _mqtt_refusal(broker, ctx, timeout_s)
    if refused is not None:
        return Check(
            "broker",
            subject,
            Status.FAIL,
            f"{detail}, but MQTT CONNECT failed: {refused}",
            "check [broker] username, password_file/password_env and protocol",
        )
    return Check("broker", subject, Status.OK, f"{detail}, MQTT {broker.protocol} CONNECT accepted")


async def _mqtt_refusal(
    broker: BrokerConfig, ctx: ssl.SSLContext | None, timeout_s: float
) -> str | None:
    """Why the broker refuses an MQTT session with the site's credentials, or None if it accepts.

    The client id is the gateway's with ``-doctor`` appended, so a running gateway is not
    disconnected by its own check.
    """
    import aiomqtt

    try:
        password = broker.password()
    except OSError as e:
        return f"the password file is unreadable ({e.strerror or e})"
    version = aiomqtt.ProtocolVersion.V5 if broker.protocol == "5" else aiomqtt.ProtocolVersion.V311
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=password,
        identifier=f"{broker.client_id}-doctor",
        protocol=version,
        tls_context=ctx,
        timeout=timeout_s,
    )
    try:
        async with asyncio.timeout(timeout_s), client:
            return None
    except TimeoutError:
        return f"no CONNACK within {timeout_s:g} s"
    except aiomqtt.MqttError as e:
        return str(e)


# -- clock ---------------------------------------------------------------------------------------


def _adjtimex_state() -> int | None:
    """adjtimex(2) with modes=0 (read only): TIME_OK .. TIME_ERROR, or None if unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # larger than struct timex; modes=0 reads only
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    return None if state < 0 else state


async def _timedatectl() -> str | None:
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            exe,
            "show",
            "--property=NTPSynchronized",
            "--value",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(5):
            out, _ = await proc.communicate()
    except (OSError, TimeoutError):
        return None
    answer = out.decode().strip()
    return answer if proc.returncode == 0 and answer in ("yes", "no") else None


async def check_clock() -> Check:
    """The system clock is synchronised (systemd-timesyncd/chrony/ntpd) and plausible."""
    if time.time() < 1_704_067_200:  # 2024-01-01: a box without RTC that never synced
        return Check(
            "clock",
            "system",
            Status.FAIL,
            f"the clock says {time.strftime('%Y-%m-%d', time.gmtime())}",
            "give the box network time: sudo timedatectl set-ntp true",
        )
    answer = await _timedatectl()
    if answer == "yes":
        return Check("clock", "system", Status.OK, "synchronised (timedatectl)")
    if answer == "no":
        return Check(
            "clock",
            "system",
            Status.FAIL,
            "not synchronised (timedatectl)",
            "sudo timedatectl set-ntp true, and allow NTP (123/udp) to a time server",
        )
    state = _adjtimex_state()
    if state is None:
        return Check("clock", "system", Status.WARN, "cannot tell: no timedatectl, no adjtimex")
    if state == _TIME_ERROR:
        return Check(
            "clock",
            "system",
            Status.FAIL,
            "not synchronised (adjtimex)",
            "run a time daemon (systemd-timesyncd or chrony) that reaches an NTP server",
        )
    return Check("clock", "system", Status.OK, "synchronised (adjtimex)")


# -- disk and store ------------------------------------------------------------------------------


def _store_bytes(store: Path) -> int:
    return sum(
        p.stat().st_size for p in (store, Path(f"{store}-wal"), Path(f"{store}-shm")) if p.exists()
    )


def _existing_parent(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path("/")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def check_disk(store: Path, max_bytes: int) -> Check:
    """Free space on the store's file system covers the rest of the buffer's byte budget."""
    where = _existing_parent(store.parent)
    free = shutil.disk_usage(where).free
    need = max(0, max_bytes - _store_bytes(store))
    detail = f"{_size(free)} free in {where}, buffer may still grow by {_size(need)}"
    if free >= need:
        return Check("disk", str(store), Status.OK, detail)
    fit = (free + _store_bytes(store)) * 9 // 10 // (1 << 20)
    return Check(
        "disk",
        str(store),
        Status.FAIL,
        detail,
        f"free space there or lower [buffer].max_bytes to at most {fit}MB",
    )


def _quick_check(store: Path) -> str:
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows[:3])


async def check_store(store: Path) -> Check:
    """``PRAGMA quick_check`` on the store file (read-only; safe while the gateway runs)."""
    if not store.exists():
        return Check("store", str(store), Status.OK, "not created yet: the first run creates it")
    remedy = (
        f"stop the gateway and move the file aside (mv {store} {store}.corrupt); "
        "its unsent rows are lost, a fresh store starts a new session"
    )
    try:
        result = await asyncio.to_thread(_quick_check, store)  # a blocking library call
    except sqlite3.DatabaseError as e:
        return Check("store", str(store), Status.FAIL, f"unreadable: {e}", remedy)
    if result == "ok":
        return Check("store", str(store), Status.OK, "quick_check ok")
    return Check("store", str(store), Status.FAIL, f"quick_check: {result}", remedy)


# -- models --------------------------------------------------------------------------------------


def _manifest(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    for name in ("manifest.json", "manifest.toml"):
        path = folder / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if name.endswith(".json") else tomllib.loads(text)
            if isinstance(data, dict):
                return path, data
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_model_hash(folder: Path) -> Check:
    """The model file's sha256 matches its manifest."""
    try:
        found = _manifest(folder)
    except (ValueError, OSError) as e:  # json/toml decode errors are ValueErrors
        return Check(
            "model",
            folder.name,
            Status.FAIL,
            f"manifest unreadable: {e}",
            f"restore {folder}/manifest from the release",
        )
    if found is None:
        return Check(
            "model",
            folder.name,
            Status.FAIL,
            "no manifest.json or manifest.toml",
            f"restore {folder} from the release (model file and manifest together)",
        )
    manifest_path, manifest = found
    model = folder / str(manifest.get("file", "model.onnx"))
    expected = manifest.get("sha256")
    version = manifest.get("version", "?")
    if not isinstance(expected, str):
        return Check(
            "model",
            folder.name,
            Status.FAIL,
            f"{manifest_path.name} has no sha256",
            f"restore {manifest_path} from the release",
        )
    if not model.is_file():
        return Check(
            "model",
            folder.name,
            Status.FAIL,
            f"{model.name} is missing",
            f"restore {model} from the release",
        )
    actual = _sha256(model)
    if actual != expected.lower():
        return Check(
            "model",
            folder.name,
            Status.FAIL,
            f"{model.name} sha256 {actual[:12]}… differs from the manifest's {expected[:12]}…",
            f"restore {folder} from the release (model file and manifest together)",
        )
    return Check("model", folder.name, Status.OK, f"version {version}, sha256 matches")


async def check_model(folder: Path) -> Check:
    """The sha256 matches the manifest, then the runtime's own verification: onnxruntime opens
    the model and its input and output match what the manifest states."""
    found = await asyncio.to_thread(check_model_hash, folder)  # hashing a file blocks
    if found.status is not Status.OK:
        return found
    from gateway.detect.bundle import load_bundle
    from gateway.errors import ModelError

    try:
        await asyncio.to_thread(load_bundle, folder)  # onnxruntime session: a blocking call
    except ModelError as e:
        return Check(
            "model",
            folder.name,
            Status.FAIL,
            f"unusable: {e}",
            f"restore {folder} from the release; twinedge model verify {folder} shows the details",
        )
    return Check("model", folder.name, Status.OK, f"{found.detail}, loads and matches its inputs")


async def check_models(models_dir: Path | None) -> list[Check]:
    if models_dir is None:
        return [Check("model", "-", Status.SKIP, "the site names no models folder")]
    if not models_dir.is_dir():
        return [
            Check(
                "model",
                str(models_dir),
                Status.FAIL,
                "no such folder",
                "fix [gateway].models or install the models there",
            )
        ]
    folders = sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [await check_model(f) for f in folders] or [
        Check("model", str(models_dir), Status.WARN, "no models installed: scoring is off")
    ]


# -- all together --------------------------------------------------------------------------------


async def run_checks(
    site: Site | None, *, ble_sys: Path = Path("/sys/class/bluetooth")
) -> list[Check]:
    """Every check; those that need a site file are skipped without one."""
    schemes = [a.source.scheme for a in site.assets] if site else []
    checks: list[Check] = []
    if site is None:
        checks.append(Check("site", "-", Status.SKIP, "no site file given (--site SITE.toml)"))
    else:
        ports = [a.source.target for a in site.assets if a.source.scheme in SERIAL_SCHEMES]
        checks += check_serial_ports(ports)
    checks.append(check_ble(any(s in BLE_SCHEMES for s in schemes), ble_sys))
    pending = [check_clock()]
    if site is not None:
        pending += [check_broker(site.broker), check_store(site.store_path)]
    checks += await asyncio.gather(*pending)
    if site is not None:
        checks.append(check_disk(site.store_path, site.buffer.max_bytes))
        checks += await check_models(site.models_dir)
    return checks


def failed(checks: Sequence[Check]) -> bool:
    return any(c.status is Status.FAIL for c in checks)
