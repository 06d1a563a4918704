"""Signed envelopes for the downlink and for model bundles: Ed25519, expiry, nonce, key ids.

An envelope is one JSON object::

    {"v": 1, "kid": "3f0c9a1d2b4e6f70", "exp": 1767225600, "nonce": "Qm9uam91ciBsZSBtb25kZQ",
     "aud": "twinedge/v1/lab/gw-1/desired/wq-1", "payload": {...}, "sig": "<base64>"}

``sig`` is the Ed25519 signature of :data:`SIG_CONTEXT` followed by the canonical encoding of
every other field (:func:`canonical`: JSON with sorted keys, no spaces, UTF-8). ``kid`` is the
first 16 hex digits of the SHA-256 of the raw 32-byte public key, so a verifier finds the key
without trusting a name. ``aud`` is the MQTT topic the message is meant for (or ``"bundle"``), so
a message signed for one asset or gateway cannot be replayed to another. ``exp`` is a Unix time
in seconds, at most :data:`MAX_LIFETIME_S` ahead. ``nonce`` is 16-64 URL-safe characters; the
gateway remembers every nonce it accepted until the envelope's expiry, in a small file next to
its store (:class:`NonceStore`), so a replay is refused even after a restart.

:class:`DownlinkGuard` is what the gateway runs on every desired/command message; it raises
:class:`SignatureError` whose ``reason`` is one of :data:`REASONS`. :func:`verify_bundle` checks
a model bundle's ``signature.json`` (a manifest of every file's SHA-256, signed) before the
bundle is used. See docs/security.md for the threat model and key rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gateway.errors import ModelError, TwinedgeError

__all__ = [
    "BUNDLE_AUDIENCE",
    "BUNDLE_MAX_LIFETIME_S",
    "MAX_ENVELOPE_BYTES",
    "MAX_LIFETIME_S",
    "REASONS",
    "SIGNATURE_FILE",
    "BundleError",
    "DownlinkGuard",
    "NonceStore",
    "SignatureError",
    "bundle_digests",
    "canonical",
    "key_id",
    "load_private_key",
    "load_public_key",
    "load_trusted",
    "new_key_pair",
    "parse_json_object",
    "sign",
    "sign_bundle",
    "verify",
    "verify_bundle",
]

log = logging.getLogger("twinedge.security")

ENVELOPE_VERSION = 1
SIG_CONTEXT = b"twinedge-envelope-v1\x00"
MAX_ENVELOPE_BYTES = 64 * 1024
MAX_LIFETIME_S = 7 * 24 * 3600  # an envelope valid longer than this is refused
BUNDLE_MAX_LIFETIME_S = 400 * 24 * 3600  # a model bundle's signature may live this long
CLOCK_SKEW_S = 60  # an envelope this far past its expiry is still accepted
MAX_NONCES = 10_000  # remembered at once; more live envelopes than this are refused
MAX_JSON_DEPTH = 32
BUNDLE_AUDIENCE = "bundle"
SIGNATURE_FILE = "signature.json"
MAX_BUNDLE_FILES = 256
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_KID = re.compile(r"^[0-9a-f]{16}$")
_FIELDS = frozenset({"v", "kid", "exp", "nonce", "aud", "payload", "sig"})

#: why an envelope was refused
REASONS = (
    "malformed",  # not an envelope of the right shape, too big, too deep
    "unsigned",  # a plain message where a signature is required
    "unknown-key",  # signed by a key this gateway does not trust
    "bad-signature",  # the signature does not match the content
    "expired",  # past its expiry (or valid for longer than MAX_LIFETIME_S)
    "wrong-audience",  # signed for another topic, asset or gateway
    "replayed",  # this nonce was accepted before
    "replay-store-full",  # too many live nonces to remember: refused rather than forgotten
)


class SignatureError(TwinedgeError, ValueError):
    """An envelope or bundle signature was refused; ``reason`` is one of :data:`REASONS`.

    ``ref`` is what the refused message calls itself (the payload's ``id`` when it has a short
    string one, else ``""``): only for reporting, it is not trusted.
    """

    def __init__(self, reason: str, detail: str, ref: str = "") -> None:
        self.reason = reason
        self.detail = detail
        self.ref = ref
        super().__init__(f"{reason}: {detail}")


class BundleError(SignatureError, ModelError):
    """A model bundle's signature or file digests do not check out; the bundle must not be used."""


# -- keys ------------------------------------------------------------------------------------


def key_id(public_raw: bytes) -> str:
    """The key id of a raw 32-byte Ed25519 public key: 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def new_key_pair() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    public = key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def load_private_key(path: Path) -> Any:
    """An Ed25519 private key from a PEM file (as written by ``twinedge keys new``)."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = ser.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise TwinedgeError(f"{path}: not a readable unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TwinedgeError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> bytes:
    """The raw 32 bytes of an Ed25519 public key in a PEM file; ValueError if it is not one."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = ser.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"not a readable PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)


def load_trusted(paths: Iterable[Path]) -> dict[str, bytes]:
    """``{kid: raw public key}`` of the given public key files."""
    return {key_id(raw): raw for raw in (load_public_key(p) for p in paths)}


# -- encoding --------------------------------------------------------------------------------


def canonical(doc: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, UTF-8, no NaN or infinity."""
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return out


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, stopping early past ``limit``."""
    if limit < 0:
        return 1
    if isinstance(obj, dict):
        return 1 + max((_depth(v, limit - 1) for v in obj.values()), default=0)
    if isinstance(obj, list):
        return 1 + max((_depth(v, limit - 1) for v in obj), default=0)
    return 0


def parse_json_object(data: bytes, limit: int = MAX_ENVELOPE_BYTES) -> dict[str, Any]:
    """Strict UTF-8 JSON object of at most ``limit`` bytes and :data:`MAX_JSON_DEPTH` levels,
    without duplicate keys, NaN or infinity; raises ValueError (never anything else)."""
    if len(data) > limit:
        raise ValueError(f"{len(data)} bytes > {limit}")
    try:
        doc = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_refuse_constant,
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    if _depth(doc, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not base64") from None


# -- sign and verify -------------------------------------------------------------------------


def sign(
    payload: Mapping[str, Any],
    private_key: Any,
    *,
    aud: str,
    exp: float,
    nonce: str | None = None,
) -> dict[str, Any]:
    """Wrap ``payload`` in an envelope signed with ``private_key`` (an Ed25519PrivateKey)."""
    from cryptography.hazmat.primitives import serialization as ser

    raw = private_key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    body: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "kid": key_id(raw),
        "exp": int(exp),
        "nonce": nonce or secrets.token_urlsafe(18),
        "aud": aud,
        "payload": dict(payload),
    }
    sig = private_key.sign(SIG_CONTEXT + canonical(body))
    return body | {"sig": base64.b64encode(sig).decode("ascii")}


def _ref(doc: Mapping[str, Any]) -> str:
    payload = doc.get("payload", doc)
    ref = payload.get("id") if isinstance(payload, Mapping) else None
    return ref if isinstance(ref, str) and 0 < len(ref) <= 128 else ""


def _shape(doc: Mapping[str, Any], ref: str) -> bytes:
    """Check the envelope's fields; returns the signature bytes."""

    def bad(why: str) -> SignatureError:
        return SignatureError("malformed", why, ref)

    extra = sorted(set(doc) - _FIELDS)
    if extra:
        raise bad(f"unknown envelope fields {extra}")
    if doc.get("v") != ENVELOPE_VERSION or isinstance(doc.get("v"), bool):
        raise bad(f"'v' must be {ENVELOPE_VERSION}")
    if not isinstance(doc.get("kid"), str) or not _KID.match(doc["kid"]):
        raise bad("'kid' must be 16 hex digits")
    exp = doc.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise bad("'exp' must be a Unix time in seconds")
    if not isinstance(doc.get("nonce"), str) or not _NONCE.match(doc["nonce"]):
        raise bad("'nonce' must be 16-64 characters of A-Z a-z 0-9 _ -")
    if not isinstance(doc.get("aud"), str) or not doc["aud"]:
        raise bad("'aud' must name the topic the message is for")
    if not isinstance(doc.get("payload"), dict):
        raise bad("'payload' must be a JSON object")
    try:
        sig = _b64decode(doc["sig"]) if isinstance(doc.get("sig"), str) else b""
    except ValueError:
        sig = b""
    if len(sig) != 64:
        raise bad("'sig' must be the base64 of a 64-byte Ed25519 signature")
    return sig


def verify(
    doc: Mapping[str, Any],
    trusted: Mapping[str, bytes],
    *,
    aud: str,
    now: float | None = None,
    replay: NonceStore | None = None,
    max_lifetime: float = MAX_LIFETIME_S,
) -> dict[str, Any]:
    """Check an envelope and return its payload; raises :class:`SignatureError`.

    Order: shape, key, signature, expiry, audience, then the nonce (recorded in ``replay``
    before this returns, so a crash after applying cannot reopen the message to a replay).
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    ref = _ref(doc)
    if "sig" not in doc and "kid" not in doc:
        raise SignatureError("unsigned", "the message carries no signature", ref)
    sig = _shape(doc, ref)
    kid: str = doc["kid"]
    raw = trusted.get(kid)
    if raw is None:
        raise SignatureError("unknown-key", f"key {kid} is not trusted here", ref)
    body = {k: doc[k] for k in ("v", "kid", "exp", "nonce", "aud", "payload")}
    try:
        message = SIG_CONTEXT + canonical(body)
        Ed25519PublicKey.from_public_bytes(raw).verify(sig, message)
    except (InvalidSignature, ValueError):
        raise SignatureError(
            "bad-signature", f"signature by key {kid} does not match", ref
        ) from None
    now = time.time() if now is None else now
    exp = float(doc["exp"])
    if exp + CLOCK_SKEW_S < now:
        raise SignatureError("expired", f"expired {now - exp:.0f} s ago", ref)
    if exp - now > max_lifetime:
        raise SignatureError("expired", f"valid for more than {max_lifetime:.0f} s", ref)
    if doc["aud"] != aud:
        raise SignatureError("wrong-audience", f"signed for {doc['aud']!r}, not {aud!r}", ref)
    if replay is not None:
        replay.claim(kid, doc["nonce"], exp + CLOCK_SKEW_S, now, ref)
    payload: dict[str, Any] = doc["payload"]
    return payload


# -- replay protection -----------------------------------------------------------------------


class NonceStore:
    """Nonces accepted and not yet expired, persisted in a small JSON file (atomic rewrite).

    Bounded by :data:`MAX_NONCES`: when that many envelopes are still live, new ones are refused
    (``replay-store-full``) rather than an old nonce forgotten. An unreadable file is moved aside
    and logged; what it held is lost (see docs/security.md).
    """

    def __init__(self, path: Path, max_entries: int = MAX_NONCES) -> None:
        self.path = path
        self.max_entries = max_entries
        self._seen: dict[str, float] = {}
        self.recovered_from: Path | None = None
        self._load()

    def __len__(self) -> int:
        return len(self._seen)

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            seen = data["nonces"]
            if not isinstance(seen, dict):
                raise ValueError("'nonces' is not an object")
            self._seen = {str(k): float(v) for k, v in seen.items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            aside = self.path.with_name(self.path.name + f".bad-{int(time.time())}")
            self.path.replace(aside)
            self.recovered_from = aside
            log.error("replay store %s unreadable (%s); moved aside to %s", self.path, e, aside)

    def _purge(self, now: float) -> None:
        self._seen = {k: exp for k, exp in self._seen.items() if exp >= now}

    def claim(self, kid: str, nonce: str, until: float, now: float, ref: str = "") -> None:
        """Record ``kid:nonce`` until ``until``; SignatureError if it was seen or no room."""
        key = f"{kid}:{nonce}"
        self._purge(now)
        if key in self._seen:
            raise SignatureError("replayed", f"nonce {nonce} was used before", ref)
        if len(self._seen) >= self.max_entries:
            raise SignatureError(
                "replay-store-full", f"{len(self._seen)} live nonces remembered already", ref
            )
        self._seen[key] = until
        self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump({"v": 1, "nonces": self._seen}, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class DownlinkGuard:
    """Opens downlink messages: verifies envelopes, refuses unsigned ones when required.

    With ``require`` false a plain JSON object passes as it is (a site without trusted keys, or
    one migrating to signed downlink); an envelope is still verified and refused if it fails.
    """

    def __init__(self, trusted: Mapping[str, bytes], require: bool, store: NonceStore) -> None:
        self.trusted = dict(trusted)
        self.require = require
        self.store = store

    def open(self, payload: bytes, topic: str, now: float | None = None) -> dict[str, Any]:
        """The message's JSON object (the envelope's payload when signed).

        Raises ValueError for bytes that are not a JSON object and SignatureError (a
        ValueError) for an envelope that fails or an unsigned message where one is required.
        """
        doc = parse_json_object(payload)
        if "sig" not in doc and "kid" not in doc:
            if self.require:
                raise SignatureError("unsigned", "a signed envelope is required", _ref(doc))
            return doc
        return verify(doc, self.trusted, aud=topic, now=now, replay=self.store)


# -- model bundles ---------------------------------------------------------------------------


def bundle_digests(bundle_dir: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file in the bundle except its signature."""
    out: dict[str, str] = {}
    for p in sorted(bundle_dir.rglob("*")):
        if not p.is_file() or p.name == SIGNATURE_FILE:
            continue
        if "__pycache__" in p.parts:
            continue
        if len(out) >= MAX_BUNDLE_FILES:
            raise BundleError("malformed", f"{bundle_dir}: more than {MAX_BUNDLE_FILES} files")
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 16), b""):
                h.update(chunk)
        out[p.relative_to(bundle_dir).as_posix()] = h.hexdigest()
    return out


def sign_bundle(bundle_dir: Path, private_key: Any, exp: float) -> Path:
    """Write ``signature.json`` into ``bundle_dir``: the signed digests of all its files."""
    files = bundle_digests(bundle_dir)
    if not files:
        raise TwinedgeError(f"{bundle_dir}: no files to sign")
    env = sign({"files": files}, private_key, aud=BUNDLE_AUDIENCE, exp=exp)
    out = bundle_dir / SIGNATURE_FILE
    out.write_text(json.dumps(env, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def verify_bundle(bundle_dir: Path, trusted: Mapping[str, bytes], now: float | None = None) -> None:
    """Raise :class:`BundleError` unless ``bundle_dir/signature.json`` is a valid, unexpired
    signature by a trusted key over exactly the files in the directory, each with its SHA-256.

    Call it before handing the directory to anything that loads it, e.g.
    ``verify_bundle(d, site.security.trusted); detector.swap(d)``.
    """
    sig_file = bundle_dir / SIGNATURE_FILE
    try:
        doc = parse_json_object(sig_file.read_bytes())
    except FileNotFoundError:
        raise BundleError("unsigned", f"{sig_file}: no signature") from None
    except (OSError, ValueError) as e:
        raise BundleError("malformed", f"{sig_file}: {e}") from None
    try:
        payload = verify(
            doc, trusted, aud=BUNDLE_AUDIENCE, now=now, max_lifetime=BUNDLE_MAX_LIFETIME_S
        )
    except SignatureError as e:
        raise BundleError(e.reason, f"{sig_file}: {e.detail}") from None
    listed = payload.get("files")
    if not isinstance(listed, dict) or set(payload) != {"files"}:
        raise BundleError("malformed", f"{sig_file}: payload must be {{'files': {{...}}}}")
    actual = bundle_digests(bundle_dir)
    missing = sorted(set(listed) - set(actual))
    extra = sorted(set(actual) - set(listed))
    changed = sorted(k for k in set(listed) & set(actual) if listed[k] != actual[k])
    for what, names in (("missing", missing), ("not signed", extra), ("changed", changed)):
        if names:
            raise BundleError("bad-signature", f"{bundle_dir}: files {what}: {', '.join(names)}")
