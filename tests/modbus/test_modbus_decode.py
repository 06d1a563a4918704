"""Register decoding, the read plan and the Modbus keys of profiles: pure code, no line."""

from __future__ import annotations

import itertools
import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from gateway.errors import ConfigError
from gateway.profiles import QuantitySpec, load_profile, parse_profile
from gateway.readings import Quality
from gateway.sources import SourceContext, parse_spec
from gateway.sources.modbus import (
    MAX_REGISTERS,
    TYPES,
    LineSettings,
    ModbusSource,
    RegisterSpec,
    decode,
    encode,
    plan_reads,
    register_map,
)

# --- known vectors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "type_", "order", "expected"),
    [
        ([0x3F80, 0x0000], "float32", "ABCD", 1.0),
        ([0x0000, 0x3F80], "float32", "CDAB", 1.0),
        ([0x803F, 0x0000], "float32", "BADC", 1.0),
        ([0x0000, 0x803F], "float32", "DCBA", 1.0),
        ([0xC148, 0x0000], "float32", "ABCD", -12.5),
        ([0x1234, 0x5678], "uint32", "ABCD", 0x12345678),
        ([0x5678, 0x1234], "uint32", "CDAB", 0x12345678),
        ([0x3412, 0x7856], "uint32", "BADC", 0x12345678),
        ([0x7856, 0x3412], "uint32", "DCBA", 0x12345678),
        ([0xFFFE, 0xFFFF], "int32", "CDAB", -2),
        ([0xFFFF, 0xFFFE], "int32", "ABCD", -2),
        ([0xFFFF], "int16", "AB", -1),
        ([0x8000], "int16", "AB", -32768),
        ([0xFFFF], "uint16", "AB", 65535),
        ([0x0201], "uint16", "BA", 0x0102),
        ([0x02FF], "int16", "BA", -254),  # 0xFF02
    ],
)
def test_decode_known_vectors(words: list[int], type_: str, order: str, expected: float) -> None:
    assert decode(words, type_, order) == expected
    assert encode(expected, type_, order) == words


def test_decode_nan_float_is_nan_not_an_error() -> None:
    assert math.isnan(decode([0x7FC0, 0x0000], "float32", "ABCD"))


def test_scaled_value_from_the_shipped_sonde_map() -> None:
    regs = {r.quantity.name: r for r in register_map(load_profile("sonde-modbus"))}
    temp = regs["temperature"]
    assert temp.quantity.convert(decode([0xFB70], temp.type, temp.order)) == pytest.approx(-11.68)
    cond = regs["conductivity"]
    # 123456 hundredths of µS/cm, word-swapped: low word 0xE240 first, then 0x0001
    raw = decode([0xE240, 0x0001], cond.type, cond.order)
    assert cond.quantity.convert(raw) == pytest.approx(1234.56)


# --- properties -----------------------------------------------------------------------------

_INT_RANGES = {"int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1)}
_INT_RANGES |= {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1)}
_ORDERS = {1: ["AB", "BA"], 2: ["ABCD", "CDAB", "BADC", "DCBA"]}


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[str, str, float]:
    type_ = draw(st.sampled_from(sorted(TYPES)))
    order = draw(st.sampled_from(_ORDERS[TYPES[type_][1]]))
    if type_ == "float32":
        value = draw(st.floats(width=32, allow_nan=False))
    else:
        low, high = _INT_RANGES[type_]
        value = draw(st.integers(low, high))
    return type_, order, value


@given(typed_values())
def test_encode_then_decode_is_identity(case: tuple[str, str, float]) -> None:
    type_, order, value = case
    words = encode(value, type_, order)
    assert len(words) == TYPES[type_][1]
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode(words, type_, order) == value


@given(
    st.sampled_from(sorted(TYPES)),
    st.sampled_from(["ABCD", "CDAB"]),
    st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
)
def test_decode_agrees_with_pymodbus(type_: str, order: str, words: list[int]) -> None:
    """pymodbus's converter is an independent oracle for the orders it knows (word order)."""
    width = TYPES[type_][1]
    words = words[:width]
    dtype = getattr(ModbusClientMixin.DATATYPE, type_.upper())
    word_order = "little" if order == "CDAB" and width == 2 else "big"
    theirs = ModbusClientMixin.convert_from_registers(words, dtype, word_order=word_order)
    ours = decode(words, type_, order if width == 2 else "AB")
    assert isinstance(theirs, int | float)
    if isinstance(theirs, float) and math.isnan(theirs):
        assert math.isnan(ours)
    else:
        assert ours == theirs


@given(st.binary(min_size=4, max_size=4), st.sampled_from(_ORDERS[2]))
def test_every_order_is_a_byte_permutation(raw: bytes, order: str) -> None:
    """Any four bytes decode as the same multiset of bytes, only placed differently."""
    words = list(struct.unpack(">2H", raw))
    value = decode(words, "uint32", order)
    assert sorted(value.to_bytes(4, "big")) == sorted(raw)


# --- the read plan --------------------------------------------------------------------------


def _reg(name: str, address: int, type_: str = "uint16", function: str = "holding") -> RegisterSpec:
    order = "ABCD" if TYPES[type_][1] == 2 else "AB"
    return RegisterSpec(QuantitySpec(name, "C62"), address, type_, order, function)


def test_contiguous_registers_are_one_request() -> None:
    plan = plan_reads(register_map(load_profile("sonde-modbus")))
    assert [(b.function, b.start, b.count) for b in plan] == [("holding", 0, 10)]
    assert len(plan[0].registers) == 6


def test_gaps_split_requests_unless_max_gap_allows() -> None:
    regs = [_reg("a", 0), _reg("b", 1, "float32"), _reg("c", 5), _reg("d", 40)]
    assert [(b.start, b.count) for b in plan_reads(regs)] == [(0, 3), (5, 1), (40, 1)]
    assert [(b.start, b.count) for b in plan_reads(regs, max_gap=2)] == [(0, 6), (40, 1)]


def test_holding_and_input_registers_never_share_a_request() -> None:
    plan = plan_reads([_reg("a", 0), _reg("b", 1, function="input"), _reg("c", 1)])
    assert [(b.function, b.start, b.count) for b in plan] == [("holding", 0, 2), ("input", 1, 1)]


def test_a_request_never_exceeds_the_modbus_limit() -> None:
    regs = [_reg(f"q{i}", i) for i in range(300)]
    plan = plan_reads(regs)
    assert [b.count for b in plan] == [125, 125, 50]


@given(
    st.lists(
        st.tuples(st.integers(0, 400), st.sampled_from(sorted(TYPES)), st.booleans()),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 10),
)
def test_plan_covers_every_register_within_limits(
    specs: list[tuple[int, str, bool]], max_gap: int
) -> None:
    regs = [
        _reg(f"q{i}", a, t, "input" if inp else "holding") for i, (a, t, inp) in enumerate(specs)
    ]
    plan = plan_reads(regs, max_gap)
    placed = [r for b in plan for r in b.registers]
    assert sorted(r.quantity.name for r in placed) == sorted(r.quantity.name for r in regs)
    for block in plan:
        assert 1 <= block.count <= MAX_REGISTERS
        for r in block.registers:
            assert r.function == block.function
            assert block.start <= r.address and r.address + r.count <= block.start + block.count
    for fn in ("holding", "input"):
        spans = sorted((b.start, b.start + b.count) for b in plan if b.function == fn)
        for (start1, end1), (start2, end2) in itertools.pairwise(spans):
            # two neighbouring requests exist only if one request could not cover both
            assert start2 > end1 + max_gap or max(end1, end2) - start1 > MAX_REGISTERS


# --- profile and spec errors name the file and the key --------------------------------------


def _profile(**quantity: Any) -> dict[str, Any]:
    q = {"unit": "CEL", "register": 0, **quantity}
    return {
        "name": "t",
        "transport": "modbus",
        "category": "water-quality",
        "quantities": {"temperature": q},
    }


@pytest.mark.parametrize(
    ("quantity", "key"),
    [
        ({"register": -1}, "quantities.temperature.register"),
        ({"register": "40001"}, "quantities.temperature.register"),
        ({"register": 65535, "type": "float32"}, "quantities.temperature.register"),
        ({"type": "int64"}, "quantities.temperature.type"),
        ({"type": "int16", "order": "ABCD"}, "quantities.temperature.order"),
        ({"type": "float32", "order": "BA"}, "quantities.temperature.order"),
        ({"function": "coil"}, "quantities.temperature.function"),
    ],
)
def test_bad_register_keys_name_file_and_key(quantity: dict[str, Any], key: str) -> None:
    profile = parse_profile(_profile(**quantity), "probe.toml")
    with pytest.raises(ConfigError) as e:
        register_map(profile)
    assert e.value.file == "probe.toml"
    assert e.value.key == key
    assert str(e.value).startswith(f"probe.toml: {key}: expected")


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("unit=0", "unit"),
        ("unit=248", "unit"),
        ("baud=fast", "baud"),
        ("parity=X", "parity"),
        ("stopbits=3", "stopbits"),
        ("period=0s", "period"),
        ("timeout=soon", "timeout"),
        ("retries=-1", "retries"),
    ],
)
def test_bad_spec_params_name_the_spec_and_key(query: str, key: str) -> None:
    spec = parse_spec(f"modbus:/dev/ttyUSB1?{query}")
    with pytest.raises(ConfigError) as e:
        LineSettings.resolve(spec, load_profile("sonde-modbus"))
    assert e.value.key == key
    assert e.value.file == spec.raw


def test_spec_overrides_profile_defaults() -> None:
    spec = parse_spec("modbus:/dev/ttyUSB1?unit=7&baud=19200&parity=e&period=250ms&retries=0")
    line = LineSettings.resolve(spec, load_profile("sonde-modbus"))
    assert (line.device_id, line.baud, line.parity, line.period, line.retries) == (
        7,
        19200,
        "E",
        0.25,
        0,
    )
    assert (line.timeout, line.bytesize, line.stopbits) == (0.5, 8, 1)  # from the profile


def test_a_profile_of_another_transport_is_refused() -> None:
    data = _profile() | {"transport": "serial"}
    profile = parse_profile(data, "node.toml")
    with pytest.raises(ConfigError, match=r"node.toml: transport: expected 'modbus'"):
        ModbusSource(parse_spec("modbus:/dev/ttyUSB1"), SourceContext("a", profile), profile)


def test_backoff_doubles_per_failed_poll_up_to_the_cap() -> None:
    spec = parse_spec("modbus:/dev/ttyUSB1?period=1s&backoff_max=10s")
    profile = load_profile("sonde-modbus")
    src = ModbusSource(spec, SourceContext("a", profile), profile)
    waits = []
    for failures in range(6):
        src.failures = failures
        waits.append(src.wait_after_failure())
    assert waits == [0.0, 2.0, 4.0, 8.0, 10.0, 10.0]


@pytest.mark.parametrize("special", [math.inf, -math.inf, math.nan])
def test_non_finite_float_registers_become_invalid_nan_readings(special: float) -> None:
    """JSON has no infinity: a sonde's +/-inf (sensor fault) is kept as invalid, never suspect."""
    profile = load_profile("sonde-modbus")
    ctx = SourceContext("wq-1", profile)
    src = ModbusSource(parse_spec("modbus:/dev/ttyUSB1"), ctx, profile)
    (block,) = src.blocks
    words = [0] * block.count
    for reg in block.registers:
        if reg.type == "float32":
            words[reg.address : reg.address + 2] = encode(special, reg.type, reg.order)
    readings = {r.quantity: r for r in src._decode_block(block, words, 1_700_000_000.0)}
    for name in ("dissolved_oxygen", "turbidity"):
        assert math.isnan(readings[name].value)
        assert readings[name].quality is Quality.INVALID
    assert readings["temperature"].quality is Quality.GOOD
    assert ctx.counters.out_of_range == 0
