"""``twinedge keys``: key files and their permissions, sign/verify round trips, refusals with exit
code 1, and the site file's ``[security]`` table and broker pins."""

from __future__ import annotations

import io
import json
import shutil
import stat
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_site
from gateway.errors import ConfigError

MODELS = Path(__file__).resolve().parents[2] / "models"
TOPIC = "twinedge/v1/lab/gw-1/command/light-1"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_new_writes_a_private_key_only_its_owner_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "keys", "new", str(tmp_path / "ops"))
    assert code == 0
    key, pub = tmp_path / "ops.key", tmp_path / "ops.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    kid = out.rsplit("key id ", 1)[1].strip()
    assert main(["keys", "new", str(tmp_path / "ops")]) == 1  # never overwritten silently
    capsys.readouterr()
    code, out, _ = run(capsys, "keys", "show", str(pub), str(key))
    assert code == 0 and out.count(kid) == 2 and "public" in out and "private" in out


def test_sign_and_verify_round_trip_through_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    main(["keys", "new", str(tmp_path / "ops")])
    main(["keys", "new", str(tmp_path / "old")])
    capsys.readouterr()
    command = {"v": 1, "id": "c-1", "command": "dim", "args": {"level": 40}}
    payload = tmp_path / "cmd.json"
    payload.write_text(json.dumps(command), encoding="utf-8")
    code, out, _ = run(
        capsys, "keys", "sign", "--key", str(tmp_path / "ops.key"), "--topic", TOPIC,
        "--exp", "5m", str(payload),
    )  # fmt: skip
    assert code == 0
    env = json.loads(out)
    assert env["payload"] == command and env["aud"] == TOPIC
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(out.encode())))
    trusted = [str(tmp_path / "old.pub"), str(tmp_path / "ops.pub")]  # rotation: both trusted
    code, out, _ = run(capsys, "keys", "verify", "--trusted", *trusted, "--topic", TOPIC, "-")
    assert code == 0 and json.loads(out) == command
    (tmp_path / "env.json").write_text(json.dumps(env | {"exp": env["exp"] + 1}))
    code, _, err = run(
        capsys, "keys", "verify", "--trusted", *trusted, "--topic", TOPIC,
        str(tmp_path / "env.json"),
    )  # fmt: skip
    assert code == 1 and "bad-signature" in err
    (tmp_path / "env.json").write_text(json.dumps(env))
    code, _, err = run(
        capsys, "keys", "verify", "--trusted", trusted[0], "--topic", TOPIC,
        str(tmp_path / "env.json"),
    )  # fmt: skip
    assert code == 1 and "unknown-key" in err


def test_sign_refuses_long_lifetimes_and_non_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["keys", "new", str(tmp_path / "ops")])
    (tmp_path / "list.json").write_text("[1, 2]")
    key = str(tmp_path / "ops.key")
    code, _, err = run(capsys, "keys", "sign", "--key", key, "--topic", TOPIC, "--exp", "30d",
                       str(tmp_path / "list.json"))  # fmt: skip
    assert code == 2 and "at most 7 days" in err
    code, _, err = run(capsys, "keys", "sign", "--key", key, "--topic", TOPIC,
                       str(tmp_path / "list.json"))  # fmt: skip
    assert code == 2 and "a JSON object" in err


def test_sign_bundle_then_verify_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["keys", "new", str(tmp_path / "ops")])
    bundle = tmp_path / "wq"
    shutil.copytree(MODELS / "water-quality", bundle, ignore=shutil.ignore_patterns("*.py"))
    code, out, _ = run(
        capsys, "keys", "sign-bundle", str(bundle), "--key", str(tmp_path / "ops.key")
    )
    assert code == 0 and "signed" in out
    pub = str(tmp_path / "ops.pub")
    code, out, _ = run(capsys, "keys", "verify-bundle", str(bundle), "--trusted", pub)
    assert code == 0 and "signature ok" in out
    (bundle / "manifest.json").write_text("{}")
    code, _, err = run(capsys, "keys", "verify-bundle", str(bundle), "--trusted", pub)
    assert code == 1 and "files changed: manifest.json" in err


# -- the site file ---------------------------------------------------------------------------

SITE = """
[gateway]
id = "gw-1"
site = "lab"
[broker]
url = "mqtts://broker.example:8883"
{broker}
[[assets]]
id = "a1"
category = "water-quality"
location = [4.9, 52.3]
source = "demo:water-quality"
{security}
"""


def site_file(tmp_path: Path, security: str = "", broker: str = "") -> Path:
    p = tmp_path / "site.toml"
    p.write_text(SITE.format(security=security, broker=broker), encoding="utf-8")
    return p


def test_security_defaults_and_trusted_keys(tmp_path: Path) -> None:
    site = load_site(site_file(tmp_path))
    assert site.security.trusted == {} and not site.security.require_signed_downlink
    (tmp_path / "keys").mkdir()
    main(["keys", "new", str(tmp_path / "keys" / "ops")])
    main(["keys", "new", str(tmp_path / "keys" / "next")])
    sec = '[security]\ntrusted_keys = ["keys/ops.pub", "keys/next.pub"]'
    site = load_site(site_file(tmp_path, sec))
    assert len(site.security.trusted) == 2
    assert site.security.require_signed_downlink  # trusted keys: required by default
    assert site.security.nonce_file == tmp_path / "var" / "gw-1.db.nonces.json"
    site = load_site(site_file(tmp_path, sec + "\nrequire_signed_downlink = false"))
    assert not site.security.require_signed_downlink


@pytest.mark.parametrize(
    ("security", "key", "expected"),
    [
        ('[security]\ntrusted_keys = ["nope.pub"]', "security.trusted_keys[0]", "Ed25519 public"),
        ("[security]\ntrusted_keys = 'ops.pub'", "security.trusted_keys", "a list of public key"),
        ('[security]\ntrusted_keys = ["site.toml"]', "security.trusted_keys[0]", "Ed25519"),
        ("[security]\nrequire_signed_downlink = true", "security.trusted_keys", "at least one"),
        ("[security]\nrequire_signed_downlink = 1", "security.require_signed_downlink", "true"),
        ("[security]\ntrusted_key = []", "security.trusted_key", "a known key"),
    ],
)
def test_security_errors_name_file_and_key(
    tmp_path: Path, security: str, key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_site(site_file(tmp_path, security))
    assert info.value.key == key and expected in info.value.expected
    assert info.value.file.endswith("site.toml")


def test_broker_pins(tmp_path: Path) -> None:
    pin = "AB:" * 31 + "CD"
    site = load_site(site_file(tmp_path, broker=f'pin_sha256 = "{pin}"'))
    assert site.broker is not None and site.broker.pin_sha256 == ("ab" * 31 + "cd",)
    two = f'pin_sha256 = ["{"0" * 64}", "{"1" * 64}"]'
    site = load_site(site_file(tmp_path, broker=two))
    assert site.broker is not None and len(site.broker.pin_sha256) == 2
    for bad in ('pin_sha256 = "abc"', "pin_sha256 = 5", 'pin_sha256 = ["' + "g" * 64 + '"]'):
        with pytest.raises(ConfigError) as info:
            load_site(site_file(tmp_path, broker=bad))
        assert info.value.key == "broker.pin_sha256"
    plain = site_file(tmp_path, broker=f'pin_sha256 = "{"0" * 64}"')
    plain.write_text(plain.read_text().replace("mqtts://", "mqtt://"))
    with pytest.raises(ConfigError, match="mqtts"):
        load_site(plain)
