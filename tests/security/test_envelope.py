"""Signed envelopes: what is accepted and every way one is refused; nonces survive a restart;
model bundles are checked file by file."""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import ModelError
from gateway.security import (
    MAX_ENVELOPE_BYTES,
    MAX_LIFETIME_S,
    SIGNATURE_FILE,
    BundleError,
    DownlinkGuard,
    NonceStore,
    SignatureError,
    canonical,
    key_id,
    load_trusted,
    new_key_pair,
    parse_json_object,
    sign,
    sign_bundle,
    verify,
    verify_bundle,
)

TOPIC = "twinedge/v1/lab/gw-1/desired/wq-1"
MODELS = Path(__file__).resolve().parents[2] / "models"
NOW = 1_800_000_000.0


@pytest.fixture
def ops(tmp_path: Path) -> tuple[Ed25519PrivateKey, dict[str, bytes]]:
    private, public = new_key_pair()
    (tmp_path / "ops.key").write_bytes(private)
    (tmp_path / "ops.pub").write_bytes(public)
    from gateway.security import load_private_key

    return load_private_key(tmp_path / "ops.key"), load_trusted([tmp_path / "ops.pub"])


def envelope(key: Ed25519PrivateKey, **kw: Any) -> dict[str, Any]:
    payload = kw.pop("payload", {"v": 1, "id": "d-1", "period": "2s"})
    return sign(payload, key, aud=kw.pop("aud", TOPIC), exp=kw.pop("exp", NOW + 600), **kw)


def refused(doc: dict[str, Any], trusted: dict[str, bytes], **kw: Any) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        verify(doc, trusted, aud=kw.pop("aud", TOPIC), now=kw.pop("now", NOW), **kw)
    return info.value


def test_signed_envelope_verifies_and_returns_its_payload(ops: Any) -> None:
    key, trusted = ops
    doc = envelope(key)
    assert set(doc) == {"v", "kid", "exp", "nonce", "aud", "payload", "sig"}
    assert doc["kid"] == next(iter(trusted)) and len(doc["kid"]) == 16
    wire = json.loads(json.dumps(doc))  # survives a trip through JSON as any consumer sends it
    assert verify(wire, trusted, aud=TOPIC, now=NOW) == {"v": 1, "id": "d-1", "period": "2s"}


def test_every_tampered_field_breaks_the_signature(ops: Any) -> None:
    key, trusted = ops
    for field, value in [
        ("payload", {"v": 1, "id": "d-1", "period": "0.1s"}),
        ("exp", NOW + 601),
        ("nonce", "A" * 24),
        ("aud", "twinedge/v1/lab/gw-1/desired/other"),
    ]:
        doc = envelope(key) | {field: value}
        err = refused(doc, trusted, aud=doc["aud"])
        assert err.reason == "bad-signature", field
        assert err.ref in ("d-1", "")


def test_refusal_reasons(ops: Any, tmp_path: Path) -> None:
    key, trusted = ops
    plain = {"v": 1, "id": "d-9", "period": "1s"}
    assert refused(plain, trusted).reason == "unsigned"
    assert refused(plain, trusted).ref == "d-9"
    other = Ed25519PrivateKey.generate()
    assert refused(envelope(other), trusted).reason == "unknown-key"
    assert refused(envelope(key, exp=NOW - 61), trusted).reason == "expired"
    assert verify(envelope(key, exp=NOW - 30), trusted, aud=TOPIC, now=NOW)  # clock skew
    too_long = envelope(key, exp=NOW + MAX_LIFETIME_S + 10)
    assert refused(too_long, trusted).reason == "expired"
    err = refused(envelope(key), trusted, aud="twinedge/v1/lab/gw-2/desired/wq-1")
    assert err.reason == "wrong-audience" and "gw-2" in str(err)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"v": 2}, "'v'"),
        ({"v": True}, "'v'"),
        ({"kid": "OPS"}, "'kid'"),
        ({"exp": "soon"}, "'exp'"),
        ({"exp": True}, "'exp'"),
        ({"nonce": "short"}, "'nonce'"),
        ({"nonce": "x" * 65}, "'nonce'"),
        ({"aud": ""}, "'aud'"),
        ({"payload": [1, 2]}, "'payload'"),
        ({"sig": "not base64!"}, "'sig'"),
        ({"sig": base64.b64encode(b"x" * 63).decode()}, "'sig'"),
        ({"extra": 1}, "unknown envelope fields"),
    ],
)
def test_malformed_envelopes(ops: Any, change: dict[str, Any], why: str) -> None:
    key, trusted = ops
    err = refused(envelope(key) | change, trusted)
    assert err.reason == "malformed" and why in str(err)


def test_replay_refused_even_after_a_restart(ops: Any, tmp_path: Path) -> None:
    key, trusted = ops
    path = tmp_path / "store.db.nonces.json"
    doc = envelope(key)
    verify(doc, trusted, aud=TOPIC, now=NOW, replay=NonceStore(path))
    assert refused(doc, trusted, replay=NonceStore(path)).reason == "replayed"  # a new process
    assert path.stat().st_size < 200
    # a second, different envelope from the same key is fine
    verify(envelope(key), trusted, aud=TOPIC, now=NOW, replay=NonceStore(path))


def test_expired_nonces_are_forgotten_and_the_store_is_bounded(ops: Any, tmp_path: Path) -> None:
    key, trusted = ops
    store = NonceStore(tmp_path / "n.json", max_entries=3)
    for _ in range(3):
        verify(envelope(key, exp=NOW + 10), trusted, aud=TOPIC, now=NOW, replay=store)
    err = refused(envelope(key), trusted, replay=store)
    assert err.reason == "replay-store-full" and len(store) == 3
    later = NOW + 10 + 61  # the three have expired (with the clock skew): their room is free
    verify(envelope(key, exp=later + 600), trusted, aud=TOPIC, now=later, replay=store)
    assert len(NonceStore(tmp_path / "n.json")) == 1


def test_unreadable_nonce_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "n.json"
    path.write_text("{ torn", encoding="utf-8")
    store = NonceStore(path)
    assert len(store) == 0 and store.recovered_from is not None
    assert store.recovered_from.read_text(encoding="utf-8") == "{ torn"


def test_guard_requires_signatures_when_told(ops: Any, tmp_path: Path) -> None:
    key, trusted = ops
    plain = json.dumps({"v": 1, "id": "p", "period": "1s"}).encode()
    strict = DownlinkGuard(trusted, True, NonceStore(tmp_path / "a.json"))
    with pytest.raises(SignatureError, match="unsigned"):
        strict.open(plain, TOPIC)
    lenient = DownlinkGuard(trusted, False, NonceStore(tmp_path / "b.json"))
    assert lenient.open(plain, TOPIC)["id"] == "p"
    forged = envelope(key) | {"payload": {"v": 1, "id": "x", "period": "0.1s"}}
    with pytest.raises(SignatureError, match="bad-signature"):
        lenient.open(json.dumps(forged).encode(), TOPIC)  # an envelope is always checked
    good = json.dumps(envelope(key, exp=time.time() + 60)).encode()
    assert lenient.open(good, TOPIC)["id"] == "d-1"
    with pytest.raises(SignatureError, match="replayed"):
        lenient.open(good, TOPIC)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xff\xfe", "utf-8"),
        (b"[1]", "JSON object"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", "deep"),
        (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "deeper than"),
        (b"{" + b" " * MAX_ENVELOPE_BYTES + b"}", "bytes >"),
    ],
)
def test_strict_json(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        parse_json_object(data)
    assert type(info.value) in (ValueError, UnicodeDecodeError)


def test_canonical_encoding_is_stable() -> None:
    a = canonical({"b": [1, 2.5, "é"], "a": {"y": None, "x": True}})
    assert a == '{"a":{"x":true,"y":null},"b":[1,2.5,"é"]}'.encode()
    assert key_id(b"\x00" * 32) == "66687aadf862bd77"


# -- bundles ---------------------------------------------------------------------------------


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    dst = tmp_path / "water-quality"
    dst.mkdir()
    for name in ("manifest.json", "model.onnx"):
        shutil.copy(MODELS / "water-quality" / name, dst / name)
    return dst


def test_signed_bundle_verifies(ops: Any, bundle: Path) -> None:
    key, trusted = ops
    sign_bundle(bundle, key, time.time() + 3600)
    verify_bundle(bundle, trusted)
    files = json.loads((bundle / SIGNATURE_FILE).read_text(encoding="utf-8"))["payload"]["files"]
    assert set(files) == {"manifest.json", "model.onnx"}


@pytest.mark.parametrize("tamper", ["change", "add", "remove", "unsigned", "expired", "stranger"])
def test_tampered_bundle_is_refused(ops: Any, bundle: Path, tamper: str) -> None:
    key, trusted = ops
    signer = Ed25519PrivateKey.generate() if tamper == "stranger" else key
    sign_bundle(bundle, signer, time.time() + (-3600 if tamper == "expired" else 3600))
    if tamper == "change":
        with (bundle / "model.onnx").open("ab") as f:
            f.write(b"\x00")
    elif tamper == "add":
        (bundle / "extra.py").write_text("import os\n", encoding="utf-8")
    elif tamper == "remove":
        (bundle / "manifest.json").unlink()
    elif tamper == "unsigned":
        (bundle / SIGNATURE_FILE).unlink()
    with pytest.raises(BundleError) as info:
        verify_bundle(bundle, trusted)
    assert isinstance(info.value, ModelError)  # what the detector's callers already handle
    expected = {
        "change": "files changed: model.onnx",
        "add": "files not signed: extra.py",
        "remove": "files missing: manifest.json",
        "unsigned": "no signature",
        "expired": "expired",
        "stranger": "unknown-key",
    }[tamper]
    assert expected in str(info.value)
