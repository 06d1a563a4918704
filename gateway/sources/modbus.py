"""Modbus RTU sondes on a serial line / RS-485: poll registers, decode, scale, flag out-of-range.

Spec: ``modbus:/dev/ttyUSB1?unit=1&baud=9600`` (all query keys optional)::

    unit      device id on the bus (1..247)                     default: profile ``device_id`` or 1
    baud      bits per second                                   default: profile ``baud`` or 9600
    parity    N, E or O; bytesize 7 or 8; stopbits 1 or 2       default: profile, else 8N1
    period    poll period ("1s", "500ms")                       default: profile ``period``
    timeout   reply timeout per request ("300ms")               default: profile ``timeout`` or 1s
    retries   extra attempts per request after a timeout        default: profile ``retries`` or 1
    backoff_max  longest wait between polls of a silent device  default: profile or 30s
    profile   profile name or path when the site gives none     default: sonde-modbus

Each quantity of the profile names its ``register`` (0-based protocol address), its ``type``
(int16, uint16, int32, uint32, float32) and its byte ``order`` (``ABCD`` big-endian, ``CDAB``
word-swapped, ``BADC`` byte-swapped, ``DCBA`` little-endian; ``AB``/``BA`` for 16-bit types).
Registers are grouped into as few read requests as possible (neighbours closer than the profile's
``max_gap`` share a request, at most 125 registers each; holding and input registers apart).

Failure handling: a request that times out or gets an exception response counts in
``frames_bad`` and the next poll waits longer (doubling, up to ``backoff_max``) so a dead sonde
does not keep the line busy; a request that succeeds counts in ``frames_ok``. A port that is gone
(adapter unplugged) raises :class:`~gateway.errors.SourceError` so the supervisor reopens it.
Out-of-range values are yielded with quality ``suspect`` and counted in ``out_of_range``; a
float32 register holding NaN or infinity becomes a NaN reading of quality ``invalid``.
The downlink's ``set_period`` command changes the poll period of an open source.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import struct
import termios
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Self

from gateway.errors import ConfigError, SourceError
from gateway.profiles import Profile, QuantitySpec, load_profile
from gateway.readings import Quality, Reading
from gateway.sources import SourceContext, SourceSpec, parse_duration

__all__ = [
    "MAX_REGISTERS",
    "TYPES",
    "Block",
    "LineSettings",
    "ModbusSource",
    "RegisterSpec",
    "decode",
    "encode",
    "open",
    "plan_reads",
    "register_map",
]

log = logging.getLogger("twinedge.sources.modbus")
# pymodbus logs every timeout at error level with a dump of the last frames; this driver logs
# each failure itself with the device id, so keep pymodbus quiet unless someone configured it.
if logging.getLogger("pymodbus").level == logging.NOTSET:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

#: type name -> (struct code of the big-endian value, registers it spans)
TYPES: dict[str, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "float32": ("f", 2),
}
_ORDERS = {1: ("AB", "BA"), 2: ("ABCD", "CDAB", "BADC", "DCBA")}
#: the most registers one Modbus read request may ask for (function codes 3 and 4)
MAX_REGISTERS = 125
_FUNCTIONS = ("holding", "input")


def _wire_to_value(order: str) -> list[int]:
    """For each wire byte position, the index of the value byte (A=0, most significant) it holds."""
    return [ord(c) - ord("A") for c in order]


def decode(words: Sequence[int], type_: str, order: str) -> float:
    """Registers as read from the wire -> the number they encode.

    ``order`` lists the value's bytes (A = most significant) in the order they appear on the
    wire, register by register, high byte first (the Modbus convention within a register).
    """
    code, width = TYPES[type_]
    wire = struct.pack(f">{width}H", *words[:width])
    value = bytearray(2 * width)
    for pos, idx in enumerate(_wire_to_value(order)):
        value[idx] = wire[pos]
    result: float = struct.unpack(f">{code}", bytes(value))[0]
    return result


def encode(value: float, type_: str, order: str) -> list[int]:
    """The inverse of :func:`decode`: a number -> the registers a device puts on the wire."""
    code, width = TYPES[type_]
    raw = struct.pack(f">{code}", int(value) if code != "f" else value)
    wire = bytes(raw[idx] for idx in _wire_to_value(order))
    return list(struct.unpack(f">{width}H", wire))


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """Where one quantity lives in the sonde's register map and how it is encoded."""

    quantity: QuantitySpec
    address: int
    type: str
    order: str
    function: str = "holding"

    @property
    def count(self) -> int:
        return TYPES[self.type][1]


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers from ``start`` covering ``registers``."""

    function: str
    start: int
    count: int
    registers: tuple[RegisterSpec, ...]


def register_map(profile: Profile) -> list[RegisterSpec]:
    """Read and check the Modbus keys of every quantity; errors name the file and the key."""
    default_fn = profile.settings.get("function", "holding")
    if default_fn not in _FUNCTIONS:
        raise ConfigError(profile.file, "function", f"one of {list(_FUNCTIONS)}", default_fn)
    return [_register(q, profile.file, default_fn) for q in profile.quantities.values()]


def _register(q: QuantitySpec, file: str, default_fn: str) -> RegisterSpec:
    key = f"quantities.{q.name}"
    addr = q.fields.get("register")
    if isinstance(addr, bool) or not isinstance(addr, int) or not 0 <= addr <= 65535:
        raise ConfigError(file, f"{key}.register", "a register address 0..65535", addr)
    type_ = q.fields.get("type", "uint16")
    if type_ not in TYPES:
        raise ConfigError(file, f"{key}.type", f"one of {list(TYPES)}", type_)
    width = TYPES[type_][1]
    order = q.fields.get("order", _ORDERS[width][0])
    if order not in _ORDERS[width]:
        raise ConfigError(file, f"{key}.order", f"for {type_} one of {list(_ORDERS[width])}", order)
    if addr + width - 1 > 65535:
        raise ConfigError(file, f"{key}.register", f"room for {width} registers", addr)
    function = q.fields.get("function", default_fn)
    if function not in _FUNCTIONS:
        raise ConfigError(file, f"{key}.function", f"one of {list(_FUNCTIONS)}", function)
    return RegisterSpec(q, addr, type_, order, function)


def plan_reads(registers: Iterable[RegisterSpec], max_gap: int = 0) -> list[Block]:
    """Group registers into the fewest read requests.

    Registers of the same function whose addresses are at most ``max_gap`` unused registers
    apart share one request, as long as it stays within :data:`MAX_REGISTERS`.
    """
    blocks: list[Block] = []
    for function in _FUNCTIONS:
        regs = sorted((r for r in registers if r.function == function), key=lambda r: r.address)
        group: list[RegisterSpec] = []
        start = end = 0  # end: one past the last register of the group
        for reg in regs:
            reg_end = reg.address + reg.count
            if (
                group
                and reg.address <= end + max_gap
                and max(end, reg_end) - start <= MAX_REGISTERS
            ):
                group.append(reg)
                end = max(end, reg_end)
                continue
            if group:
                blocks.append(Block(function, start, end - start, tuple(group)))
            group, start, end = [reg], reg.address, reg_end
        if group:
            blocks.append(Block(function, start, end - start, tuple(group)))
    return blocks


@dataclass(frozen=True, slots=True)
class LineSettings:
    """Serial line and polling settings from the spec, falling back to the profile."""

    port: str
    device_id: int
    baud: int
    parity: str
    bytesize: int
    stopbits: int
    period: float
    timeout: float
    retries: int
    backoff_max: float

    @classmethod
    def resolve(cls, spec: SourceSpec, profile: Profile) -> Self:
        where = spec.raw

        def pick(key: str, profile_key: str, default: Any) -> Any:
            value = spec.params.get(key)
            return value if value is not None else profile.settings.get(profile_key, default)

        def integer(key: str, profile_key: str, default: int, allowed: Iterable[int]) -> int:
            raw = pick(key, profile_key, default)
            try:
                value = int(raw)
            except (TypeError, ValueError):
                value = -1
            if value not in allowed or isinstance(raw, bool):
                raise ConfigError(where, key, f"an integer in {_describe(allowed)}", raw)
            return value

        parity = str(pick("parity", "parity", "N")).upper()
        if parity not in ("N", "E", "O"):
            raise ConfigError(where, "parity", "N, E or O", parity)
        if not spec.target:
            raise ConfigError(where, "target", "a serial port path such as /dev/ttyUSB1")
        return cls(
            port=spec.target,
            device_id=integer("unit", "device_id", 1, range(1, 248)),
            baud=integer("baud", "baud", 9600, range(300, 4_000_001)),
            parity=parity,
            bytesize=integer("bytesize", "bytesize", 8, (7, 8)),
            stopbits=integer("stopbits", "stopbits", 1, (1, 2)),
            period=parse_duration(pick("period", "period", profile.period), file=where),
            timeout=parse_duration(pick("timeout", "timeout", "1s"), file=where, key="timeout"),
            retries=integer("retries", "retries", 1, range(0, 11)),
            backoff_max=parse_duration(
                pick("backoff_max", "backoff_max", "30s"), file=where, key="backoff_max"
            ),
        )


def _describe(allowed: Iterable[int]) -> str:
    if isinstance(allowed, range):
        return f"{allowed.start}..{allowed.stop - 1}"
    return str(list(allowed))


def _max_gap(profile: Profile) -> int:
    gap = profile.settings.get("max_gap", 0)
    if isinstance(gap, bool) or not isinstance(gap, int) or not 0 <= gap < MAX_REGISTERS:
        raise ConfigError(profile.file, "max_gap", f"an integer 0..{MAX_REGISTERS - 1}", gap)
    return gap


class ModbusSource:
    """One sonde on one serial line, polled at the profile's period."""

    def __init__(self, spec: SourceSpec, ctx: SourceContext, profile: Profile) -> None:
        profile.require_transport("modbus", "modbus")
        self.ctx = ctx
        self.profile = profile
        self.line = LineSettings.resolve(spec, profile)
        self.blocks = plan_reads(register_map(profile), _max_gap(profile))
        self.device = f"modbus:{self.line.port}#{self.line.device_id}"
        self.failures = 0  # consecutive polls with a failed request
        self._seq = 0
        self._streak = 0  # consecutive failed requests, for logging
        self._client: Any = None

    async def __aenter__(self) -> Self:
        from pymodbus.client import AsyncModbusSerialClient

        self._check_port()
        client = AsyncModbusSerialClient(
            self.line.port,
            baudrate=self.line.baud,
            bytesize=self.line.bytesize,
            parity=self.line.parity,
            stopbits=self.line.stopbits,
            timeout=self.line.timeout,
            retries=self.line.retries,
            reconnect_delay=0,  # the supervisor reopens the source; no hidden reconnect loop
            name=self.device,
        )
        try:
            connected = await client.connect()
        except (OSError, ValueError, termios.error) as e:  # the port refused the line settings
            client.close()
            raise SourceError(self.device, f"cannot open serial port: {e}") from None
        if not connected:
            client.close()
            raise SourceError(self.device, "cannot open serial port")
        self._client = client
        self.ctx.device_info.update(
            {"transport": "modbus", "port": self.line.port, "device_id": self.line.device_id}
        )
        return self

    def _check_port(self) -> None:
        if not os.path.exists(self.line.port):  # one stat; clearer than pymodbus's failure
            raise SourceError(self.device, "serial port not found")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __aiter__(self) -> AsyncIterator[Reading]:
        return self._poll_forever()

    async def command(self, name: str, args: Mapping[str, Any]) -> None:
        """Downlink commands: ``set_period`` {"period": seconds or "5s"} changes the poll period
        (the sonde itself is not told: polling is the gateway's)."""
        if name != "set_period":
            raise ValueError(f"{self.device}: unknown command {name!r} (a sonde takes set_period)")
        period = parse_duration(args.get("period", ""), file=self.device, key="period")
        self.line = replace(self.line, period=period)
        log.info("%s: poll period now %.3g s", self.device, period, extra={"device": self.device})

    async def _poll_forever(self) -> AsyncIterator[Reading]:
        next_at = time.monotonic()
        while True:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            started = time.monotonic()
            readings, ok = await self.poll()
            for reading in readings:
                yield reading
            self.failures = 0 if ok else self.failures + 1
            next_at = max(next_at + self.line.period, started + self.wait_after_failure())
            now = time.monotonic()
            if next_at < now - self.line.period:  # fell behind (busy consumer): no burst
                next_at = now

    def wait_after_failure(self) -> float:
        """How long after a poll the next may start: the period, doubled per failed poll."""
        if not self.failures:
            return 0.0
        wait = self.line.period * 2.0 ** min(self.failures, 30)
        return min(wait, max(self.line.backoff_max, self.line.period))

    async def poll(self) -> tuple[list[Reading], bool]:
        """Read every block once; returns the readings and whether every request succeeded."""
        if self._client is None:
            raise SourceError(self.device, "source is not open")
        self._seq += 1
        readings: list[Reading] = []
        all_ok = True
        for block in self.blocks:
            words = await self._read(block)
            if words is None:
                all_ok = False
                continue
            readings.extend(self._decode_block(block, words, time.time()))
        return readings, all_ok

    async def _read(self, block: Block) -> list[int] | None:
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        fn = self._client.read_holding_registers
        if block.function == "input":
            fn = self._client.read_input_registers
        try:
            response = await fn(block.start, count=block.count, device_id=self.line.device_id)
        except ConnectionException as e:
            raise SourceError(self.device, f"serial line lost ({e})") from None
        except ModbusIOException as e:
            return self._bad(block, f"no valid reply ({e})")
        if not self._client.connected:
            raise SourceError(self.device, "serial line lost")
        if response.isError():
            return self._bad(block, f"exception response {response}")
        registers: list[int] = list(response.registers)
        if len(registers) != block.count:
            return self._bad(block, f"{len(registers)} registers in reply, asked {block.count}")
        self.ctx.counters.frames_ok += 1
        if self._streak:
            log.info(
                "%s: answering again after %d failed requests",
                self.device,
                self._streak,
                extra={"device": self.device, "asset": self.ctx.asset},
            )
            self._streak = 0
        return registers

    def _bad(self, block: Block, reason: str) -> list[int] | None:
        self.ctx.counters.frames_bad += 1
        self._streak += 1
        # the first failure of a streak is a warning; the rest would only repeat it
        level = logging.WARNING if self._streak == 1 else logging.DEBUG
        log.log(
            level,
            "%s: read of %d %s registers at %d failed: %s",
            self.device,
            block.count,
            block.function,
            block.start,
            reason,
            extra={"device": self.device, "asset": self.ctx.asset},
        )
        return None  # nothing to decode: the caller yields no reading for this block

    def _decode_block(self, block: Block, words: list[int], received_at: float) -> list[Reading]:
        out = []
        for reg in block.registers:
            offset = reg.address - block.start
            raw = decode(words[offset : offset + reg.count], reg.type, reg.order)
            q = reg.quantity
            value = q.convert(raw)
            if not math.isfinite(value):  # a float32 +/-inf or NaN: no number to report or store
                value = math.nan
            quality = q.quality(value)
            if quality is Quality.SUSPECT:
                self.ctx.counters.out_of_range += 1
            out.append(
                Reading(
                    asset=self.ctx.asset,
                    quantity=q.name,
                    value=value,
                    unit=q.unit,
                    received_at=received_at,
                    quality=quality,
                    device=self.device,
                    seq=self._seq,
                )
            )
        return out


def open(spec: SourceSpec, ctx: SourceContext) -> ModbusSource:
    """The :func:`gateway.sources.open_source` entry point for the ``modbus`` scheme."""
    profile = ctx.profile
    if profile is None:
        profile = load_profile(spec.params.get("profile", "sonde-modbus"))
    return ModbusSource(spec, ctx, profile)
