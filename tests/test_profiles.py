"""Every shipped profile loads and uses the canonical names; bad profiles name file and key;
the worked example of docs/profiles.md loads and works with no code."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.profiles import PROFILE_DIR, list_profiles, load_profile
from gateway.readings import UNITS, Quality, Reading
from gateway.sources import SourceContext, open_source
from gateway.sources.modbus import plan_reads, register_map

DOCS = Path(__file__).resolve().parents[1] / "docs" / "profiles.md"

#: the team's canonical quantity names and units per asset category
CANONICAL: dict[str, dict[str, str]] = {
    "water-quality": {
        "temperature": "CEL",
        "ph": "C62",
        "conductivity": "G42",
        "dissolved_oxygen": "M1",
        "turbidity": "NTU",
        "orp": "2Z",
    },
    "streetlight": {
        "power_state": "C62",
        "dim_level": "P1",
        "power": "WTT",
        "voltage": "VLT",
        "current": "AMP",
        "lamp_fault": "C62",
    },
    "pedestrian-counter": {"count_in": "IE", "count_out": "IE", "battery": "P1", "rssi": "2N"},
}


def test_profiles_are_shipped() -> None:
    assert "sonde-modbus" in list_profiles()
    assert list_profiles() == sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


@pytest.mark.parametrize("name", list_profiles())
def test_every_shipped_profile_loads_with_canonical_names(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name, "a profile's name is its file name"
    assert profile.category in CANONICAL
    assert profile.description
    canonical = CANONICAL[profile.category]
    for q in profile.quantities.values():
        assert q.name in canonical, f"{name}: {q.name} is not a canonical {profile.category} name"
        assert q.unit == canonical[q.name] and q.unit in UNITS
        assert q.low < q.high, f"{name}: {q.name} needs a physical range"
    if profile.transport == "modbus":
        assert plan_reads(register_map(profile))


HEAD = "name = 'x'\ntransport = 'modbus'\ncategory = 'water-quality'\n"
BAD = [
    ("name = = 'x'\n", "", "valid TOML"),
    (HEAD, "quantities", "at least one"),
    (HEAD + "quantities = 3\n", "quantities", "at least one"),
    ("transport = 'modbus'\ncategory = 'c'\n", "name", "a profile name"),
    ("name = 'x'\ntransport = 'rs232'\ncategory = 'c'\n", "transport", "one of"),
    ("name = 'x'\ntransport = 'modbus'\n", "category", "an asset category"),
    (HEAD + "period = 'soon'\n", "period", "a duration"),
    (HEAD + "[quantities.ph]\nunit = 'pH'\n", "quantities.ph.unit", "a UN/CEFACT code"),
    (HEAD + "[quantities.ph]\nunit = 'C62'\nrange = [14, 0]\n", "quantities.ph.range", "low <="),
    (HEAD + "[quantities.ph]\nunit = 'C62'\nrange = [0]\n", "quantities.ph.range", "[low, high]"),
    (HEAD + "[quantities.ph]\nunit = 'C62'\nscale = '0.01'\n", "quantities.ph.scale", "a number"),
    (HEAD + "[quantities.ph]\nunit = 'C62'\noffset = true\n", "quantities.ph.offset", "a number"),
]


@pytest.mark.parametrize(("text", "key", "expected"), BAD)
def test_bad_profiles_name_file_and_key(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_profile(str(path))
    assert e.value.file == str(path)
    assert e.value.key == key
    assert expected in e.value.expected
    assert str(e.value).startswith(f"{path}: {key + ': ' if key else ''}expected")


def test_unknown_profile_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError) as e:
        load_profile("no-such-sonde")
    assert e.value.file == "no-such-sonde"
    assert "sonde-modbus" in str(e.value)


def test_missing_profile_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_profile(str(tmp_path / "missing.toml"))


def worked_example() -> str:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(r"<!-- worked-example:[^>]*-->\s*```toml\n(.*?)```", text, re.S)
    assert match, "docs/profiles.md lost its worked example"
    return match.group(1)


@pytest.fixture
def example_profile(tmp_path: Path) -> Path:
    path = tmp_path / "acme-do200.toml"
    path.write_text(worked_example(), encoding="utf-8")
    return path


def test_worked_example_of_the_docs_loads(example_profile: Path) -> None:
    profile = load_profile(str(example_profile))
    assert (profile.name, profile.transport, profile.category) == (
        "acme-do200",
        "modbus",
        "water-quality",
    )
    plan = plan_reads(register_map(profile), profile.settings["max_gap"])
    assert [(b.function, b.start, b.count) for b in plan] == [("input", 0, 10)]


@pytest.mark.hil
async def test_worked_example_reads_a_device_with_no_code(example_profile: Path) -> None:
    from hil_tests.emulators.modbus_sonde import ModbusSonde

    profile = load_profile(str(example_profile))
    ctx = SourceContext("pond-3-oxygen", profile)
    async with ModbusSonde(seed=2, device_id=3, profile=profile) as sonde:
        # a pty cannot carry parity: the spec overrides the profile's even parity
        spec = f"modbus:{sonde.port_path}?period=50ms&parity=N"
        async with open_source(spec, ctx) as src:
            batch: list[Reading] = []
            async with asyncio.timeout(10):
                async for reading in src:
                    batch.append(reading)
                    if len(batch) == 3:
                        break
        served = sonde.values
    got = {r.quantity: r for r in batch}
    assert set(got) == {"dissolved_oxygen", "temperature", "orp"}
    assert got["dissolved_oxygen"].value == pytest.approx(served["dissolved_oxygen"], rel=1e-6)
    assert got["temperature"].value == pytest.approx(served["temperature"], abs=0.051)
    assert got["orp"].value == pytest.approx(served["orp"], abs=0.51)
    assert all(r.quality is Quality.GOOD and r.unit == CANONICAL["water-quality"][r.quantity]
               for r in batch)  # fmt: skip
    assert ctx.counters.frames_ok == 1
