"""Site file validation: a valid file loads; every error names the file, the key and what was
expected; `twinedge config check` exits 0 or 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_site
from gateway.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "site.toml"
MINIMAL = """
[gateway]
id = "gw-1"
site = "s"
[[assets]]
id = "a1"
category = "water-quality"
location = [4.9, 52.3]
source = "demo:water-quality"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "site.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_example_site_loads() -> None:
    site = load_site(EXAMPLE)
    assert site.gateway_id == "gw-harbour-01"
    assert [a.id for a in site.assets] == ["wq-harbour", "light-quay-1", "ped-bridge"]
    assert site.assets[0].location == {"type": "Point", "coordinates": [4.8952, 52.3791]}
    assert site.assets[0].stale_after == 10.0
    assert site.assets[1].stale_after == 30.0
    assert site.broker is not None and site.broker.port == 1883 and not site.broker.tls
    assert site.store_path == EXAMPLE.parent / "var" / "gw-harbour-01.db"


def test_minimal_site_defaults(tmp_path: Path) -> None:
    site = load_site(write(tmp_path, MINIMAL))
    assert site.broker is None
    assert site.buffer.synchronous == "normal"
    assert site.api.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        (('id = "gw-1"', 'id = ""'), "gateway.id", "an id"),
        (('category = "water-quality"', 'category = "river"'), "assets[0].category", "one of"),
        (("location = [4.9, 52.3]", "location = [200, 52.3]"), "assets[0].location", "GeoJSON"),
        (('source = "demo:water-quality"', 'source = "usb0"'), "assets[0].source", "a spec"),
        (('source = "demo:water-quality"', 'source = "zig:x"'), "assets[0].source", "scheme"),
        (('site = "s"', 'site = "s"\nstale_after = "-1s"'), "gateway.stale_after", "greater"),
        (('site = "s"', 'site = "s"\ncolour = 1'), "gateway.colour", "a known key"),
    ],
)
def test_errors_name_file_key_and_expectation(
    tmp_path: Path, change: tuple[str, str], key: str, expected: str
) -> None:
    path = write(tmp_path, MINIMAL.replace(*change))
    with pytest.raises(ConfigError) as err:
        load_site(path)
    assert err.value.file == str(path)
    assert err.value.key == key
    assert expected in err.value.expected
    assert str(path) in str(err.value) and key in str(err.value)


def test_broker_errors(tmp_path: Path) -> None:
    bad_url = MINIMAL + '[broker]\nurl = "http://x"\n'
    with pytest.raises(ConfigError, match=r"broker\.url: expected a URL"):
        load_site(write(tmp_path, bad_url))
    creds = MINIMAL + '[broker]\nurl = "mqtt://u:secret@host:1883"\n'
    with pytest.raises(ConfigError) as err:
        load_site(write(tmp_path, creds))
    assert "secret" not in str(err.value)
    missing = MINIMAL + '[broker]\nurl = "mqtts://h"\nca_file = "nope.pem"\n'
    with pytest.raises(ConfigError, match=r"broker\.ca_file: expected a readable file"):
        load_site(write(tmp_path, missing))


def test_api_beyond_localhost_needs_token(tmp_path: Path) -> None:
    text = MINIMAL + '[api]\nlisten = "0.0.0.0:8080"\n'
    with pytest.raises(ConfigError, match=r"api\.token_file"):
        load_site(write(tmp_path, text))


def test_duplicate_asset_ids(tmp_path: Path) -> None:
    asset = MINIMAL[MINIMAL.index("[[assets]]") :]
    with pytest.raises(ConfigError, match=r"assets\[1\]\.id: expected an id not used"):
        load_site(write(tmp_path, MINIMAL + asset))


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid TOML"):
        load_site(write(tmp_path, "[gateway\n"))


def test_config_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(EXAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = write(tmp_path, MINIMAL.replace("[4.9, 52.3]", '"here"'))
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: assets[0].location: expected a GeoJSON point" in err
