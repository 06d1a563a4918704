"""The site file (TOML): gateway identity, upstream broker, buffer limits and the assets.

Validated once at start-up by :func:`load_site`; every error names the file, the key and what was
expected, and unknown keys are refused (a typo must not silently fall back to a default). See
docs/configuration.md for the reference and examples/site.toml for a complete file.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import ConfigError
from gateway.profiles import Profile, load_profile
from gateway.sources import SourceSpec, parse_duration, parse_spec

__all__ = [
    "ApiConfig",
    "AssetConfig",
    "BrokerConfig",
    "BufferConfig",
    "SecurityConfig",
    "Site",
    "load_site",
]

CATEGORIES = ("water-quality", "streetlight", "pedestrian-counter")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DROP_POLICIES = ("oldest-readings-first",)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    url: str
    host: str
    port: int
    tls: bool
    client_id: str
    topic_prefix: str = "twinedge/v1"
    protocol: str = "5"  # "5" or "3.1.1"
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    pin_sha256: tuple[str, ...] = ()  # hex SHA-256 of the broker's certificate or public key
    keepalive: float = 30.0
    batch_max: int = 1000
    inflight: int = 16

    def password(self) -> str | None:
        """The broker password, read when needed; never stored in state or logs."""
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip()
        if self.password_env is not None:
            return os.environ.get(self.password_env)
        return None

    @property
    def display_url(self) -> str:
        """The URL without credentials, safe to show."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class BufferConfig:
    max_rows: int = 5_000_000
    max_bytes: int = 1 << 30
    synchronous: str = "normal"  # "normal" or "full"
    drop_policy: str = "oldest-readings-first"
    live_window: float = 60.0  # readings older than this when published are marked backfill


@dataclass(frozen=True, slots=True)
class ApiConfig:
    listen: str = "127.0.0.1:8080"
    token_file: Path | None = None
    enabled: bool = True

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Who may sign downlink messages and model bundles (see docs/security.md)."""

    trusted_keys: tuple[Path, ...] = ()
    trusted: dict[str, bytes] = field(default_factory=dict)  # key id -> raw Ed25519 public key
    require_signed_downlink: bool = False
    nonce_file: Path | None = None  # seen nonces, kept until their envelope expires


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    """A bounded rolling recording of raw readings per asset, for rehearsals (off by default)."""

    enabled: bool = False
    max_bytes: int = 8 << 20  # per asset
    path: Path | None = None  # where it is exported on stop (and by `twinedge rehearse`)


@dataclass(frozen=True, slots=True)
class AssetConfig:
    id: str
    category: str
    name: str
    location: dict[str, Any]
    source: SourceSpec
    profile: Profile | None
    stale_after: float
    period: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Site:
    file: Path
    gateway_id: str
    site: str
    store_path: Path
    broker: BrokerConfig | None
    buffer: BufferConfig
    api: ApiConfig
    assets: tuple[AssetConfig, ...]
    models_dir: Path | None = None
    projection: dict[str, Any] = field(default_factory=dict)
    delta_interval: float = 1.0
    security: SecurityConfig = field(default_factory=SecurityConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)


class _Table:
    """One TOML table being validated: remembers the file and the dotted key for messages."""

    def __init__(self, file: str, key: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(file, key, "a table", data)
        self.file, self.key, self.data = file, key, data
        self.used: set[str] = set()

    def path(self, k: str) -> str:
        return f"{self.key}.{k}" if self.key else k

    def get(self, k: str, default: Any = None) -> Any:
        self.used.add(k)
        return self.data.get(k, default)

    def string(
        self,
        k: str,
        default: str | None = None,
        *,
        pattern: re.Pattern[str] | None = None,
        what: str = "a non-empty string",
    ) -> str:
        v = self.get(k, default)
        if not isinstance(v, str) or not v or (pattern is not None and not pattern.match(v)):
            raise ConfigError(self.file, self.path(k), what, v)
        return v

    def opt_string(self, k: str) -> str | None:
        v = self.get(k)
        if v is None:
            return None
        if not isinstance(v, str) or not v:
            raise ConfigError(self.file, self.path(k), "a non-empty string", v)
        return v

    def integer(self, k: str, default: int, low: int = 1) -> int:
        v = self.get(k, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(self.file, self.path(k), f"an integer >= {low}", v)
        return v

    def duration(self, k: str, default: str | float) -> float:
        v = self.get(k, default)
        if not isinstance(v, str | int | float):  # parse_duration takes text or a number only
            raise ConfigError(self.file, self.path(k), "a duration such as '1s' or '250ms'", v)
        return parse_duration(v, file=self.file, key=self.path(k))

    def sub(self, k: str) -> _Table:
        return _Table(self.file, self.path(k), self.get(k, {}))

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise ConfigError(
                self.file, self.path(extra[0]), "a known key (see docs/configuration.md)"
            )


def load_site(path: str | Path) -> Site:
    """Read and validate a site file; raise :class:`ConfigError` naming file and key."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(file), "", "an existing site file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(file), "", f"valid TOML ({e})") from None
    return parse_site(data, file)


def parse_site(data: dict[str, Any], file: Path) -> Site:
    root = _Table(str(file), "", data)
    base = file.parent
    gw = root.sub("gateway")
    gateway_id = gw.string("id", pattern=_ID, what="an id of letters, digits, '.', '_', '-'")
    site_name = gw.string("site", pattern=_ID, what="a site id of letters, digits, '.', '_', '-'")
    store = base / gw.string("store", f"var/{gateway_id}.db")
    models = gw.get("models")
    models_dir = None if models is None else base / str(models)
    delta_interval = gw.duration("delta_interval", "1s")
    stale_default = gw.duration("stale_after", "30s")
    gw.done()
    broker = _broker(root.sub("broker"), gateway_id, base) if "broker" in data else None
    root.used.add("broker")
    buffer = _buffer(root.sub("buffer"))
    api = _api(root.sub("api"), base)
    projection = root.get("projection", {})
    if not isinstance(projection, dict):
        raise ConfigError(str(file), "projection", "a table", projection)
    _check_projection(projection, site_name, str(file), "broker" in data)
    assets = _assets(root, stale_default, base)
    security = _security(root.sub("security"), base, store)
    recording = _recording(root.sub("recording"), base)
    root.done()
    return Site(
        file,
        gateway_id,
        site_name,
        store,
        broker,
        buffer,
        api,
        assets,
        models_dir,
        projection,
        delta_interval,
        security,
        recording,
    )


def _check_projection(table: dict[str, Any], site: str, file: str, has_broker: bool) -> None:
    """Validate ``[projection]`` now, so a typo fails at start-up and in ``config check``."""
    from gateway.sync.projection import project  # the projections import their schemas lazily

    project(str(table.get("kind", "native")), site, table, file)
    if table.get("delivery") == "http" and has_broker:
        raise ConfigError(
            file,
            "projection.delivery",
            "'mqtt' when [broker] is set (the buffer has one consumer: with delivery = 'http' "
            "the context broker is the upstream and [broker] must be left out)",
            "http",
        )


def _broker(t: _Table, gateway_id: str, base: Path) -> BrokerConfig:
    url = t.string("url", what="a broker URL such as 'mqtt://host:1883' or 'mqtts://host:8883'")
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(
            t.file, t.path("url"), "a URL 'mqtt://host:port' or 'mqtts://host:port'", url
        )
    if parts.username or parts.password:
        raise ConfigError(
            t.file,
            t.path("url"),
            "no credentials in the URL (use username and password_file or password_env)",
            "<url with credentials>",
        )
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError(t.file, t.path("url"), "a port number from 1 to 65535", url) from None
    protocol = str(t.get("protocol", "5"))
    if protocol not in ("5", "3.1.1"):
        raise ConfigError(t.file, t.path("protocol"), "'5' or '3.1.1'", protocol)

    def existing(k: str) -> Path | None:
        v = t.opt_string(k)
        if v is None:
            return None
        p = base / v
        if not p.is_file():
            raise ConfigError(t.file, t.path(k), "a readable file", str(p))
        return p

    cfg = BrokerConfig(
        url=url,
        host=parts.hostname,
        port=port,
        tls=tls,
        client_id=t.string("client_id", gateway_id),
        topic_prefix=t.string("topic_prefix", "twinedge/v1").rstrip("/"),
        protocol=protocol,
        username=t.opt_string("username"),
        password_file=existing("password_file"),
        password_env=t.opt_string("password_env"),
        ca_file=existing("ca_file"),
        cert_file=existing("cert_file"),
        key_file=existing("key_file"),
        pin_sha256=_pins(t),
        keepalive=t.duration("keepalive", "30s"),
        batch_max=t.integer("batch_max", 1000),
        inflight=t.integer("inflight", 16),
    )
    if (cfg.cert_file is None) != (cfg.key_file is None):
        raise ConfigError(t.file, t.path("key_file"), "cert_file and key_file given together")
    if (cfg.ca_file or cfg.cert_file or cfg.pin_sha256) and not tls:
        raise ConfigError(t.file, t.path("url"), "an 'mqtts://' URL when TLS files are given", url)
    t.done()
    return cfg


def _pins(t: _Table) -> tuple[str, ...]:
    raw = t.get("pin_sha256", [])
    items = [raw] if isinstance(raw, str) else raw
    what = "a SHA-256 in hex (64 digits, ':' allowed) or a list of them"
    if not isinstance(items, list):
        raise ConfigError(t.file, t.path("pin_sha256"), what, raw)
    pins = []
    for item in items:
        pin = item.replace(":", "").lower() if isinstance(item, str) else ""
        if not re.fullmatch(r"[0-9a-f]{64}", pin):
            raise ConfigError(t.file, t.path("pin_sha256"), what, item)
        pins.append(pin)
    return tuple(pins)


def _security(t: _Table, base: Path, store: Path) -> SecurityConfig:
    from gateway.security import key_id, load_public_key

    keys = t.get("trusted_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise ConfigError(t.file, t.path("trusted_keys"), "a list of public key files", keys)
    paths = tuple(base / k for k in keys)
    trusted: dict[str, bytes] = {}
    for i, p in enumerate(paths):
        try:
            raw = load_public_key(p)
        except ValueError as e:
            raise ConfigError(
                t.file,
                f"{t.path('trusted_keys')}[{i}]",
                f"an Ed25519 public key file ({e})",
                str(p),
            ) from None
        trusted[key_id(raw)] = raw
    require = t.get("require_signed_downlink", bool(trusted))
    if not isinstance(require, bool):
        raise ConfigError(t.file, t.path("require_signed_downlink"), "true or false", require)
    if require and not trusted:
        raise ConfigError(
            t.file, t.path("trusted_keys"), "at least one key when signed downlink is required"
        )
    nonce = t.opt_string("nonce_file")
    cfg = SecurityConfig(
        paths,
        trusted,
        require,
        base / nonce if nonce else store.with_name(store.name + ".nonces.json"),
    )
    t.done()
    return cfg


_SIZE = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}


def _size(t: _Table, key: str, default: str) -> int:
    """A size such as '512MB' or '2GB' (at least 1MB)."""
    raw = t.get(key, default)
    m = (
        re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", str(raw).upper())
        if not isinstance(raw, bool)
        else None
    )
    if m is None:
        raise ConfigError(t.file, t.path(key), "a size such as '512MB' or '2GB'", raw)
    size = int(float(m.group(1)) * _SIZE[m.group(2)])
    if size < 1 << 20:
        raise ConfigError(t.file, t.path(key), "at least 1MB", raw)
    return size


def _recording(t: _Table, base: Path) -> RecordingConfig:
    enabled = t.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(t.file, t.path("enabled"), "true or false", enabled)
    path = t.opt_string("path")
    cfg = RecordingConfig(
        enabled, _size(t, "max_bytes", "8MB"), None if path is None else base / path
    )
    t.done()
    return cfg


def _buffer(t: _Table) -> BufferConfig:
    max_bytes = _size(t, "max_bytes", "1GB")
    sync = t.string("synchronous", "normal").lower()
    if sync not in ("normal", "full"):
        raise ConfigError(t.file, t.path("synchronous"), "'normal' or 'full'", sync)
    policy = t.string("drop_policy", DROP_POLICIES[0])
    if policy not in DROP_POLICIES:
        raise ConfigError(t.file, t.path("drop_policy"), f"one of {list(DROP_POLICIES)}", policy)
    cfg = BufferConfig(
        t.integer("max_rows", 5_000_000, low=1000),
        max_bytes,
        sync,
        policy,
        t.duration("live_window", "60s"),
    )
    t.done()
    return cfg


def _api(t: _Table, base: Path) -> ApiConfig:
    listen = t.string("listen", "127.0.0.1:8080")
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(t.file, t.path("listen"), "'HOST:PORT' such as '127.0.0.1:8080'", listen)
    token = t.opt_string("token_file")
    enabled = t.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(t.file, t.path("enabled"), "true or false", enabled)
    cfg = ApiConfig(listen, None if token is None else base / token, enabled)
    loopback = cfg.host in ("127.0.0.1", "localhost", "::1")
    if not loopback and cfg.token_file is None:
        raise ConfigError(
            t.file,
            t.path("token_file"),
            f"a token file when the API listens beyond localhost ({listen})",
        )
    t.done()
    return cfg


def _assets(root: _Table, stale_default: float, base: Path) -> tuple[AssetConfig, ...]:
    items = root.get("assets")
    if not isinstance(items, list) or not items:
        raise ConfigError(root.file, "assets", "at least one [[assets]] table")
    seen: set[str] = set()
    out = []
    for i, item in enumerate(items):
        asset = _asset(_Table(root.file, f"assets[{i}]", item), stale_default, base)
        if asset.id in seen:
            raise ConfigError(
                root.file, f"assets[{i}].id", "an id not used by another asset", asset.id
            )
        seen.add(asset.id)
        out.append(asset)
    return tuple(out)


def _asset(t: _Table, stale_default: float, base: Path) -> AssetConfig:
    aid = t.string("id", pattern=_ID, what="an asset id of letters, digits, '.', '_', '-'")
    category = t.string("category", what=f"one of {list(CATEGORIES)}")
    if category not in CATEGORIES:
        raise ConfigError(t.file, t.path("category"), f"one of {list(CATEGORIES)}", category)
    spec = parse_spec(
        t.string("source", what="a device spec such as 'serial:/dev/ttyUSB0'"),
        file=t.file,
        key=t.path("source"),
    )
    profile = _profile(t, base)
    if profile is not None and profile.category != category:
        raise ConfigError(
            t.file,
            t.path("profile"),
            f"a profile for category {category!r}",
            f"{profile.name} ({profile.category})",
        )
    period = None if t.data.get("period") is None else t.duration("period", "1s")
    attributes = t.get("attributes", {})
    if not isinstance(attributes, dict):
        raise ConfigError(t.file, t.path("attributes"), "a table of static attributes", attributes)
    asset = AssetConfig(
        id=aid,
        category=category,
        name=t.string("name", aid),
        location=_location(t),
        source=spec,
        profile=profile,
        stale_after=t.duration("stale_after", stale_default),
        period=period,
        attributes=dict(attributes),
    )
    t.done()
    return asset


def _profile(t: _Table, base: Path) -> Profile | None:
    name = t.opt_string("profile")
    if name is None:
        return None
    ref = str(base / name) if name.endswith(".toml") else name
    try:
        return load_profile(ref)
    except ConfigError as e:
        raise ConfigError(t.file, t.path("profile"), e.expected, name) from None


def _location(t: _Table) -> dict[str, Any]:
    v = t.get("location")
    coords: Any = v.get("coordinates") if isinstance(v, dict) and v.get("type") == "Point" else v
    if not _is_point(coords):
        raise ConfigError(
            t.file,
            t.path("location"),
            "a GeoJSON point [longitude, latitude] in degrees "
            "(or {type = 'Point', coordinates = [lon, lat]})",
            v,
        )
    return {"type": "Point", "coordinates": [float(c) for c in coords]}


def _is_point(coords: Any) -> bool:
    if not isinstance(coords, list) or len(coords) not in (2, 3):
        return False
    if not all(isinstance(c, int | float) and not isinstance(c, bool) for c in coords):
        return False
    if not all(math.isfinite(c) for c in coords):
        return False
    return bool(-180 <= coords[0] <= 180 and -90 <= coords[1] <= 90)
