"""``twinedge keys new|show|sign|verify|sign-bundle|verify-bundle``: signing keys for the downlink.

``new NAME`` writes ``NAME.key`` (Ed25519 private key, PEM, mode 0600) and ``NAME.pub``; put the
``.pub`` in the site file's ``[security] trusted_keys``. ``sign`` wraps a JSON object (a desired
change or a command) in a signed envelope for one topic; ``verify`` checks one. ``sign-bundle``
writes ``signature.json`` into a model bundle directory; ``verify-bundle`` checks it. Exit codes:
0 ok, 1 refused or failed, 2 bad usage. See docs/security.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, TwinedgeError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("keys", help="create signing keys; sign and verify downlink and bundles")
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    n = ksub.add_parser("new", help="write NAME.key (0600) and NAME.pub")
    n.add_argument("name", type=Path, help="path and name of the key pair, without extension")
    n.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    n.set_defaults(func=cmd_new)

    s = ksub.add_parser("show", help="print the key id of a public or private key file")
    s.add_argument("files", nargs="+", type=Path, help=".pub or .key files")
    s.set_defaults(func=cmd_show)

    g = ksub.add_parser("sign", help="wrap a JSON object in a signed envelope")
    g.add_argument("file", help="JSON file with the payload object, or - for stdin")
    g.add_argument("--key", required=True, type=Path, help="private key file (NAME.key)")
    g.add_argument(
        "--topic", required=True, help="the topic it is for, e.g. twinedge/v1/SITE/GW/desired/A"
    )
    g.add_argument("--exp", default="10m", help="valid for this long (default 10m, at most 7d)")
    g.set_defaults(func=cmd_sign)

    v = ksub.add_parser("verify", help="check an envelope; print its payload")
    v.add_argument("file", help="envelope JSON file, or - for stdin")
    v.add_argument("--trusted", required=True, nargs="+", type=Path, help="public key files")
    v.add_argument("--topic", required=True, help="the topic the envelope must be for")
    v.set_defaults(func=cmd_verify)

    b = ksub.add_parser("sign-bundle", help="sign every file of a model bundle directory")
    b.add_argument("dir", type=Path, help="bundle directory (manifest.json, model.onnx, ...)")
    b.add_argument("--key", required=True, type=Path, help="private key file (NAME.key)")
    b.add_argument("--exp", default="90d", help="signature valid this long (default 90d, max 400d)")
    b.set_defaults(func=cmd_sign_bundle)

    c = ksub.add_parser("verify-bundle", help="check a bundle's signature.json")
    c.add_argument("dir", type=Path, help="bundle directory")
    c.add_argument("--trusted", required=True, nargs="+", type=Path, help="public key files")
    c.set_defaults(func=cmd_verify_bundle)


def cmd_new(args: argparse.Namespace) -> int:
    from gateway.security import key_id, load_public_key, new_key_pair

    key, pub = Path(f"{args.name}.key"), Path(f"{args.name}.pub")
    if not args.force and (key.exists() or pub.exists()):
        raise TwinedgeError(f"{key} or {pub} exists already (use --force to replace it)")
    private, public = new_key_pair()
    if args.force:
        key.unlink(missing_ok=True)
    # created 0600 from the start: the private key is never readable by others, not even briefly
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    pub.write_bytes(public)
    print(
        f"{key} (private, keep it off the gateway) and {pub}: key id {key_id(load_public_key(pub))}"
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization as ser

    from gateway.security import key_id, load_private_key, load_public_key

    for path in args.files:
        if not path.is_file():
            raise TwinedgeError(f"{path}: no such key file")
        try:
            raw = load_public_key(path)
            kind = "public"
        except ValueError:
            key = load_private_key(path)
            raw = key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
            kind = "private"
        print(f"{path}: {kind} Ed25519 key, key id {key_id(raw)}")
    return 0


def _lifetime(text: str, bundle: bool = False) -> float:
    from gateway.security import BUNDLE_MAX_LIFETIME_S, MAX_LIFETIME_S
    from gateway.sources import parse_duration

    limit = BUNDLE_MAX_LIFETIME_S if bundle else MAX_LIFETIME_S
    seconds = parse_duration(text, file="--exp", key="exp")
    if seconds > limit:
        raise ConfigError("--exp", "exp", f"at most {limit // 86400} days", text)
    return seconds


def _read_object(name: str) -> dict[str, Any]:
    from gateway.security import parse_json_object

    data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    try:
        return parse_json_object(data)
    except ValueError as e:
        raise ConfigError(name, "", f"a JSON object ({e})") from None


def cmd_sign(args: argparse.Namespace) -> int:
    from gateway.security import load_private_key, sign

    exp = time.time() + _lifetime(args.exp)
    env = sign(_read_object(args.file), load_private_key(args.key), aud=args.topic, exp=exp)
    print(json.dumps(env, separators=(",", ":"), ensure_ascii=False))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from gateway.security import SignatureError, load_trusted, verify

    trusted = _trusted(args.trusted, load_trusted)
    try:
        payload = verify(_read_object(args.file), trusted, aud=args.topic)
    except SignatureError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    print(json.dumps(payload, indent=2, ensure_ascii=False))
    return 0


def _trusted(paths: list[Path], load: Any) -> dict[str, bytes]:
    try:
        trusted: dict[str, bytes] = load(paths)
    except ValueError as e:
        raise ConfigError("--trusted", "", f"Ed25519 public key files ({e})") from None
    return trusted


def cmd_sign_bundle(args: argparse.Namespace) -> int:
    from gateway.security import load_private_key, sign_bundle

    if not args.dir.is_dir():
        raise ConfigError(str(args.dir), "", "a bundle directory")
    out = sign_bundle(args.dir, load_private_key(args.key), time.time() + _lifetime(args.exp, True))
    print(f"{out}: signed")
    return 0


def cmd_verify_bundle(args: argparse.Namespace) -> int:
    from gateway.security import BundleError, load_trusted, verify_bundle

    try:
        verify_bundle(args.dir, _trusted(args.trusted, load_trusted))
    except BundleError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    print(f"{args.dir}: signature ok")
    return 0
