"""Fuzzing the southbound parsers: serial frames and the frame splitter, BLE adverts through the
shared scanner hub into a counter source, and Modbus register decoding."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from hypothesis import given
from hypothesis import strategies as st

from edge_node import ble_payload as bp
from edge_node import protocol
from fuzz.checks import FUZZ, check_advert, check_frame, check_registers, check_stream
from gateway.profiles import load_profile
from gateway.readings import Quality
from gateway.sources import SourceContext, parse_spec
from gateway.sources.ble_adv import BleAdvSource, ScannerHub
from gateway.sources.modbus import TYPES, decode, encode
from gateway.sources.modbus import open as open_modbus

# -- serial frames -----------------------------------------------------------------------------


def valid_frames() -> st.SearchStrategy[bytes]:
    """Well-formed readings frames, so mutations start from something the decoder accepts."""
    names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
    values = st.lists(st.tuples(names, st.floats(width=32, allow_nan=False)), max_size=6)
    msgs = st.builds(
        lambda node, seq, vals: {
            "type": "readings",
            "node": node,
            "seq": seq,
            "values": [list(v) for v in vals],
            "time": None,
        },
        st.text(st.characters(codec="utf-8"), max_size=12),
        st.integers(0, 2**32 - 1),
        values,
    )

    def encoded(msg: dict[str, Any]) -> bytes | None:
        try:
            return protocol.encode(msg)[1:-1]
        except protocol.ProtocolError:
            return None

    return msgs.map(encoded).filter(lambda b: b is not None)  # type: ignore[return-value]


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(max_size=8))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=600), mutated(valid_frames())))
def test_frame_decoder_raises_only_protocol_error(data: bytes) -> None:
    check_frame(data)


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=300), valid_frames().map(lambda f: f + b"\x00"))))
def test_frame_splitter_respects_the_size_limit(chunks: list[bytes]) -> None:
    check_stream(chunks)


def test_body_longer_than_the_limit_is_refused() -> None:
    with pytest.raises(protocol.ProtocolError, match="too long"):
        protocol.decode(b"\x01" * (protocol.MAX_FRAME + 1))


# -- BLE adverts -------------------------------------------------------------------------------


def counter_payloads() -> st.SearchStrategy[bytes]:
    return st.builds(
        bp.encode_counter,
        st.integers(0, 2**32 - 1),
        st.integers(0, 255),
        st.integers(0, 65535),
        st.integers(0, 65535),
        st.integers(0, 65535),
        st.one_of(st.integers(0, 100), st.just(bp.NO_BATTERY)),
        st.integers(0, 255),
    )


ADVERTS = st.builds(
    lambda p: bp.ad_structure(bp.AD_MANUFACTURER, b"\xff\xff" + p), counter_payloads()
)


@FUZZ
@given(st.one_of(st.binary(max_size=62), mutated(ADVERTS)))
def test_advert_parsers_raise_only_payload_error(adv: bytes) -> None:
    check_advert(adv)


ADDRESSES = st.sampled_from(["C0:FF:EE:00:00:07", "4E:11:22:33:44:55", "6A:BB:CC:DD:EE:FF"])
OURS = "C0:FF:EE:00:00:07"


@FUZZ
@given(
    st.lists(
        st.tuples(
            ADDRESSES,
            st.dictionaries(
                st.sampled_from([0xFFFF, 0x004C, 0x0006]),
                st.one_of(st.binary(max_size=24), mutated(counter_payloads()), counter_payloads()),
                max_size=2,
            ),
            st.integers(-127, 20),
        ),
        max_size=25,
    )
)
def test_any_advert_reaches_the_counter_source_as_counts_or_a_count_of_bad_ones(
    adverts: list[tuple[str, dict[int, bytes], int]],
) -> None:
    hub = ScannerHub(None, 0xFFFF)
    ctx = SourceContext("ped-1", load_profile("counter-ble-adv"))
    source = BleAdvSource(parse_spec("ble-adv:counter-0007"), ctx)
    hub.subscribe(7, source._on_payload)
    for address, mfr, rssi in adverts:
        adv = AdvertisementData(None, mfr, {}, [], None, rssi, ())
        hub._on_advert(BLEDevice(address, None, None), adv)
    readings = []
    while not source.queue.empty():
        readings.append(source.queue.get_nowait())
    for r in readings:
        assert r.asset == "ped-1" and r.device == "counter-0007"
        assert r.quantity in ("count_in", "count_out", "battery", "rssi")
        assert math.isfinite(r.value)
        if r.quantity in ("count_in", "count_out"):
            assert 0 <= r.value < 65536
    assert hub.adverts == len(adverts)
    # only an address that sent this gateway's counter a valid payload is remembered
    valid7 = set()
    for address, mfr, _ in adverts:
        try:
            if 0xFFFF in mfr and bp.decode_counter(mfr[0xFFFF])[0] == 7:
                valid7.add(address)
        except bp.PayloadError:
            pass
    assert set(hub.known) == valid7


# -- Modbus ------------------------------------------------------------------------------------

WORDS = st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2)


@FUZZ
@given(WORDS, st.sampled_from(sorted(TYPES)), st.data())
def test_register_decoding_round_trips(words: list[int], type_: str, data: st.DataObject) -> None:
    width = TYPES[type_][1]
    order = data.draw(
        st.sampled_from(["AB", "BA"] if width == 1 else ["ABCD", "CDAB", "BADC", "DCBA"])
    )
    value = decode(words, type_, order)
    assert isinstance(value, int | float)
    if type_ != "float32":
        assert encode(value, type_, order) == words[:width]
    elif math.isfinite(value):
        assert struct.pack(">f", value) == struct.pack(
            ">f", decode(encode(value, type_, order), type_, order)
        )


SONDE = open_modbus(
    parse_spec("modbus:/dev/ttyFUZZ?unit=1"), SourceContext("wq-1", load_profile("sonde-modbus"))
)


@FUZZ
@given(st.lists(st.integers(0, 0xFFFF), max_size=130))
def test_any_register_values_become_readings_with_a_quality(words: list[int]) -> None:
    for r in check_registers(SONDE, words):
        assert r.asset == "wq-1" and isinstance(r.value, float)
        assert r.quality in (Quality.GOOD, Quality.SUSPECT, Quality.INVALID)


@pytest.mark.parametrize("special", [math.inf, -math.inf, math.nan])
def test_non_finite_register_values_are_invalid(special: float) -> None:
    readings = []
    for block in SONDE.blocks:
        words = [0] * block.count
        for reg in block.registers:
            if reg.type == "float32":
                at = reg.address - block.start
                words[at : at + 2] = encode(special, reg.type, reg.order)
        readings += SONDE._decode_block(block, words, 1_700_000_000.0)
    floats = [r for r in readings if not math.isfinite(r.value) or r.quality is Quality.INVALID]
    assert floats  # the profile has float32 registers, and they were hit
    assert all(math.isfinite(r.value) or r.quality is Quality.INVALID for r in readings)
