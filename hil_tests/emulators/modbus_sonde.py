"""An emulated Modbus RTU water-quality sonde: pymodbus's own server behind a pseudo-terminal.

::

    async with ModbusSonde(seed=1) as sonde:
        source = open_source(f"modbus:{sonde.port_path}?unit=1", ctx)

The sonde serves the register map of a profile (``sonde-modbus`` by default) with values from the
water physics generator (``hil_tests.emulators.physics.WaterQualitySim`` when present, otherwise a
built-in diurnal model). Values are encoded with pymodbus's own converters, independent of the
gateway's decoder, so a test that reads them back checks the decoder for real.

The wire is two pseudo-terminal pairs joined by a relay in this process: the server holds one
pair, ``port_path`` is a symlink to the other pair's tty. The relay is what lets the line vanish
(the tty and its link disappear, as when a USB adapter is unplugged) and reappear.

Fault knobs (plain attributes, change them at any time):

- ``garbage``: number of random bytes sent in front of every reply (line noise)
- ``bad_crc``: replies go out with a corrupted CRC
- ``delay``: seconds the sonde waits before answering (slow responses, timeouts)
- ``stuck``: the measurements freeze at their current values
- ``overrides``: quantity -> value to serve instead of the generator's (e.g. out of range)
- ``vanish()`` / ``reappear()``: the tty path goes away and comes back

Run ``python -m hil_tests.emulators.modbus_sonde --count 20`` to serve several sondes until
interrupted (the benchmark and manual tests use this); it prints one JSON line with the paths.
With ``--control`` it also obeys ``vanish N`` / ``reappear N`` lines on stdin and stops at EOF.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import signal
import sys
import time
import tty
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from gateway.commands.scan import pty_link_dir
from gateway.profiles import Profile, load_profile
from gateway.sources.modbus import RegisterSpec, register_map

__all__ = ["ModbusSonde", "WaterModel"]

_names = itertools.count(1)


class WaterModel:
    """Fallback physics: a river reach with a daily temperature and oxygen cycle, rain-driven
    turbidity pulses and slowly wandering pH/conductivity. Deterministic for a seed."""

    def __init__(self, seed: int, t0: float) -> None:
        rng = random.Random(seed)
        self.t0 = t0
        self.base_temp = rng.uniform(9.0, 16.0)
        self.phase = rng.uniform(0, 2 * math.pi)
        self.base_cond = rng.uniform(350.0, 650.0)
        self.base_ph = rng.uniform(7.1, 7.9)
        self.storm_at = rng.uniform(0, 86400)
        self.rng = rng

    def sample(self, t: float) -> dict[str, float]:
        day = 2 * math.pi * ((t - self.t0) / 86400.0) + self.phase
        temp = self.base_temp + 3.0 * math.sin(day)
        # oxygen saturation falls with temperature (approx. Benson-Krause at sea level)
        sat = 14.62 - 0.3898 * temp + 0.006969 * temp**2 - 0.00005897 * temp**3
        oxygen = sat * (0.92 + 0.06 * math.sin(day - 0.8))
        since_storm = ((t - self.t0 - self.storm_at) % 86400.0) / 3600.0
        turbidity = 3.0 + 80.0 * math.exp(-since_storm / 4.0) * (since_storm >= 0)
        noise = self.rng.gauss
        return {
            "temperature": temp + noise(0, 0.02),
            "ph": self.base_ph + 0.15 * math.sin(day - 1.2) + noise(0, 0.005),
            "conductivity": self.base_cond * (1 + 0.02 * (temp - 25)) + noise(0, 1.0),
            "dissolved_oxygen": oxygen + noise(0, 0.02),
            "turbidity": max(0.0, turbidity + noise(0, 0.2)),
            "orp": 180.0 + 40.0 * math.sin(day - 2.0) + noise(0, 0.5),
        }


def _physics(seed: int, t0: float, names: set[str]) -> Any:
    """The shared physics generator if it is there and knows every quantity, else our own."""
    try:
        from hil_tests.emulators.physics import WaterQualitySim
    except ImportError:
        return WaterModel(seed, t0)
    sim = WaterQualitySim(seed, t0)
    return sim if names <= set(sim.sample(t0)) else WaterModel(seed, t0)


def _to_registers(reg: RegisterSpec, value: float) -> list[int]:
    """Engineering value -> registers on the wire, with pymodbus's converters (not ours)."""
    from pymodbus.client.mixin import ModbusClientMixin as M

    q = reg.quantity
    raw = (value - q.offset) / q.scale
    dtype = getattr(M.DATATYPE, reg.type.upper())
    if reg.type != "float32":
        bits = 16 * reg.count
        low, high = (
            (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if reg.type[0] == "i" else (0, 2**bits - 1)
        )
        raw = min(max(round(raw), low), high) if math.isfinite(raw) else 0
    word_order: Literal["big", "little"] = "little" if reg.order in ("CDAB", "DCBA") else "big"
    words = M.convert_to_registers(raw, dtype, word_order=word_order)
    if reg.order in ("BA", "BADC", "DCBA"):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words


class _Wire:
    """Two pty pairs and a relay between their masters: the server's end and the client's end."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.server_master, self.server_slave = os.openpty()
        tty.setraw(self.server_slave)
        self.server_path = os.ttyname(self.server_slave)
        self.client: tuple[int, int] | None = None
        self.bytes_relayed = 0
        self._loop = asyncio.get_running_loop()
        os.set_blocking(self.server_master, False)
        self._loop.add_reader(self.server_master, self._relay, self.server_master)

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.client = (master, slave)
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)
        self._loop.add_reader(master, self._relay, master)

    def unplug(self) -> None:
        self.link.unlink(missing_ok=True)
        if self.client is not None:
            master, slave = self.client
            self.client = None
            self._loop.remove_reader(master)
            os.close(master)
            os.close(slave)

    def _relay(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: the other side of this pty is closed for now
            return
        if fd == self.server_master:
            target = self.client[0] if self.client else None
        else:
            target = self.server_master
        if target is not None and data:
            self._write(target, data)

    def _write(self, fd: int, data: bytes) -> None:
        # replies are tens of bytes and the pty buffer holds kilobytes; a full buffer means
        # nobody is reading, and a real line would lose the bytes too
        with contextlib.suppress(BlockingIOError, OSError):
            self.bytes_relayed += os.write(fd, data)

    def close(self) -> None:
        self.unplug()
        self._loop.remove_reader(self.server_master)
        os.close(self.server_master)
        os.close(self.server_slave)


class ModbusSonde:
    """One emulated sonde on its own line. See the module docstring for the knobs."""

    def __init__(
        self,
        seed: int = 1,
        *,
        device_id: int = 1,
        profile: str | Profile = "sonde-modbus",
        link_dir: Path | None = None,
        t0: float | None = None,
    ) -> None:
        self.seed = seed
        self.device_id = device_id
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self.registers = register_map(self.profile)
        link_dir = link_dir or pty_link_dir()
        self.port_path = str(link_dir / f"modbus-sonde-{os.getpid()}-{next(_names)}")
        self.physics = _physics(
            seed, time.time() if t0 is None else t0, {r.quantity.name for r in self.registers}
        )
        self.garbage = 0
        self.bad_crc = False
        self.delay = 0.0
        self.stuck = False
        self.overrides: dict[str, float] = {}
        self.requests = 0
        self.request_times: list[float] = []  # monotonic arrival time of the last 1000 requests
        self.values: dict[str, float] = {}  # what the sonde served last, in engineering units
        self._rng = random.Random(seed ^ 0x5EED)
        self._stack = AsyncExitStack()
        self._wire: _Wire | None = None

    @property
    def present(self) -> bool:
        return self._wire is not None and self._wire.client is not None

    async def __aenter__(self) -> Self:
        from pymodbus.server import ModbusSerialServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        Path(self.port_path).parent.mkdir(parents=True, exist_ok=True)
        async with AsyncExitStack() as stack:
            self._wire = wire = _Wire(Path(self.port_path))
            stack.callback(self._close_wire)
            wire.plug()
            top = max(r.address + r.count for r in self.registers)
            device = SimDevice(
                id=self.device_id,
                simdata=[SimData(0, count=top, values=0, datatype=DataType.REGISTERS)],
                action=self._on_request,
            )
            server = ModbusSerialServer(
                device, port=wire.server_path, baudrate=9600, trace_packet=self._on_packet
            )
            await server.serve_forever(background=True)
            stack.push_async_callback(server.shutdown)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def _close_wire(self) -> None:
        if self._wire is not None:
            self._wire.close()
            self._wire = None

    def vanish(self) -> None:
        """The adapter is unplugged: the tty closes and its path disappears."""
        if self._wire is not None:
            self._wire.unplug()

    def reappear(self) -> None:
        """The adapter is plugged back in: a new tty at the same path."""
        if self._wire is not None and self._wire.client is None:
            self._wire.plug()

    def current(self, t: float | None = None) -> dict[str, float]:
        """The values the sonde would serve now (generator, then stuck and overrides)."""
        if not (self.stuck and self.values):
            sample = self.physics.sample(time.time() if t is None else t)
            self.values = {r.quantity.name: float(sample[r.quantity.name]) for r in self.registers}
        return {**self.values, **self.overrides}

    async def _on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        self.requests += 1
        self.request_times.append(time.monotonic())
        del self.request_times[:-1000]
        if self.delay:
            await asyncio.sleep(self.delay)
        values = self.current()
        for reg in self.registers:
            words = _to_registers(reg, values[reg.quantity.name])
            at = reg.address - start_address
            registers[at : at + len(words)] = words
        return None

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            return data
        if self.bad_crc and len(data) >= 2:
            data = data[:-1] + bytes([data[-1] ^ 0xA5])
        if self.garbage:
            data = self._rng.randbytes(self.garbage) + data
        return data


async def _serve(count: int, seed: int, link_dir: Path | None, control: bool) -> None:
    async with AsyncExitStack() as stack:
        sondes = [
            await stack.enter_async_context(ModbusSonde(seed + i, link_dir=link_dir))
            for i in range(count)
        ]
        print(json.dumps({"ports": [s.port_path for s in sondes]}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with asyncio.TaskGroup() as tg:
            commands = tg.create_task(_commands(sondes, stop)) if control else None
            await stop.wait()
            if commands is not None:
                commands.cancel()


async def _commands(sondes: list[ModbusSonde], stop: asyncio.Event) -> None:
    """``--control``: lines ``vanish N`` / ``reappear N`` on stdin; EOF stops the emulator."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        verb, _, index = line.decode().strip().partition(" ")
        try:
            sonde = sondes[int(index)]
            if verb not in ("vanish", "reappear"):
                raise ValueError(verb)
        except (ValueError, IndexError):
            print(json.dumps({"error": f"bad command {line.decode().strip()!r}"}), flush=True)
            continue
        getattr(sonde, verb)()
        print(json.dumps({"done": verb, "sonde": int(index)}), flush=True)
    stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve emulated Modbus RTU sondes on ptys.")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--link-dir", type=Path, default=None)
    parser.add_argument(
        "--control", action="store_true", help="read 'vanish N' / 'reappear N' lines on stdin"
    )
    args = parser.parse_args()
    asyncio.run(_serve(args.count, args.seed, args.link_dir, args.control))


if __name__ == "__main__":
    main()
