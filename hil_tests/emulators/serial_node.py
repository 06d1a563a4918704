"""An emulated twinedge node on a pseudo-terminal: the edge_node framework itself, under CPython.

``SerialNode`` opens a pty pair, links a stable path (``node.path``) to the gateway's end and
runs :class:`edge_node.node.Node` with :class:`edge_node.uplink.SerialUplink` on the other end:
the very code the firmware runs, with sensor values from :mod:`hil_tests.emulators.physics`.

Fault knobs (all take effect at once)::

    node.garbage(n)          write n random bytes onto the line
    node.bad_crc(n)          corrupt the CRC of the next n frames
    node.truncate(n)         cut the next n frames short
    node.stuck = True        sensors repeat their last value
    node.slow = 0.5          every write leaves 0.5 s late
    node.disconnect()        the line goes dead both ways (cable cut); reconnect() heals it
    await node.vanish()      the tty path disappears (adapter unplugged); reappear() brings a
                             new pty at the same path. The node keeps running and buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
import time
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from edge_node.config import Config
from edge_node.node import Node, Sensor
from edge_node.uart_link import UartLink
from edge_node.uplink import SerialUplink
from hil_tests.emulators.physics import CounterSim, WaterQualitySim

__all__ = ["KINDS", "PtyUart", "SerialNode"]

FIRMWARE = "emulator-0.1.0"
WATER_UNITS = {
    "temperature": "CEL",
    "ph": "C62",
    "conductivity": "G42",
    "dissolved_oxygen": "M1",
    "turbidity": "NTU",
    "orp": "2Z",
}
KINDS = ("water-quality", "pedestrian-counter")


class PtyUart:
    """The node's end of a pty, shaped like a MicroPython UART plus an async reader."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master = -1
        self.slave = -1
        self.online = asyncio.Event()
        self.corrupt_next = 0
        self.truncate_next = 0
        self.slow = 0.0
        self.cut = False
        self.dropped_writes = 0
        self.frames_written = 0
        self._waiting: asyncio.Future[None] | None = None  # read() waiting on the master fd

    def open(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line editing: a clean 8-bit line
        os.set_blocking(self.master, False)
        tmp = self.path.with_name(self.path.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.path)
        self.online.set()

    def close(self) -> None:
        self.online.clear()
        self.path.unlink(missing_ok=True)
        # unregister before closing: a new pty often gets the same fd number, and a reader left
        # registered on the old one would never fire again (the node would go deaf)
        if self._waiting is not None:
            if self.master >= 0:
                asyncio.get_running_loop().remove_reader(self.master)
            if not self._waiting.done():
                self._waiting.set_result(None)
        for fd in (self.master, self.slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self.slave = -1

    # the UART interface the node's UartLink uses
    def write(self, data: bytes) -> int:
        data = self._fault(bytes(data))
        if self.slow:
            asyncio.get_running_loop().call_later(self.slow, self._write_now, data)
        else:
            self._write_now(data)
        return len(data)

    def _fault(self, data: bytes) -> bytes:
        if not data.endswith(b"\x00"):
            return data
        self.frames_written += 1
        if self.corrupt_next > 0:
            self.corrupt_next -= 1
            b = bytearray(data)
            i = len(b) - 3  # inside the CRC; keep it non-zero so framing survives
            b[i] = (b[i] % 255) + 1 if b[i] != 255 else 1
            return bytes(b)
        if self.truncate_next > 0:
            self.truncate_next -= 1
            return data[: len(data) // 2] + b"\x00"
        return data

    def _write_now(self, data: bytes) -> None:
        if self.master < 0 or self.cut:
            self.dropped_writes += 1
            return
        try:
            os.write(self.master, data)
        except (BlockingIOError, OSError):
            self.dropped_writes += 1  # nobody drains the line: bytes are lost, as on a UART

    async def read(self, n: int) -> bytes:
        """Wait for bytes from the gateway (while unplugged, wait for the port to return)."""
        loop = asyncio.get_running_loop()
        while True:
            await self.online.wait()
            fd = self.master
            ready = self._waiting = loop.create_future()
            loop.add_reader(fd, ready.set_result, None)
            try:
                await ready
            finally:
                self._waiting = None
                if self.master == fd:
                    loop.remove_reader(fd)
            if self.master != fd:
                continue  # unplugged while waiting
            try:
                data = os.read(fd, n)
            except (BlockingIOError, OSError):
                continue  # EIO while the gateway has not opened its end
            if data and not self.cut:
                return data


class SerialNode:
    """A running emulated node; ``async with SerialNode(...) as node: node.path``."""

    def __init__(
        self,
        kind: str = "water-quality",
        node_id: str = "wq-0001",
        *,
        seed: int = 1,
        period: float = 1.0,
        directory: str | os.PathLike[str] | None = None,
        clock: bool = True,
        **config: Any,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="twinedge-node-")
            directory = self._tmp.name
        self.path = Path(directory) / f"tty-{node_id}"
        self.uart = PtyUart(self.path)
        self.stuck = False
        self._last: dict[str, float] = {}
        settings = {"node_id": node_id, "period_s": period, "hello_s": 1.0, "resend_s": 1.0}
        settings.update(config)
        self.config = Config(None, settings)
        self.uplink = SerialUplink(UartLink(self.uart, reader=self.uart), self.config)
        self.node = Node(
            self.config,
            self._sensors(kind, seed),
            self.uplink,
            FIRMWARE,
            clock=time.time if clock else None,
            identify=self._identify,
            reset=self._reset,
        )
        self.identified: list[int] = []
        self.resets = 0
        self._task: asyncio.Task[None] | None = None

    def _sensors(self, kind: str, seed: int) -> list[Sensor]:
        t0 = time.time()
        if kind == "water-quality":
            water = WaterQualitySim(seed, t0)
            return [
                Sensor(q, u, self._reader(q, lambda q=q: water.sample(time.time())[q]))
                for q, u in WATER_UNITS.items()
            ]
        counter = CounterSim(seed, t0)
        since = {"count_in": t0, "count_out": t0}

        def count(q: str) -> float:
            now = time.time()
            dt, since[q] = max(now - since[q], 0.001), now
            return float(counter.sample(now, dt)[q])

        return [
            Sensor("count_in", "IE", self._reader("count_in", lambda: count("count_in"))),
            Sensor("count_out", "IE", self._reader("count_out", lambda: count("count_out"))),
        ]

    def _reader(self, name: str, read: Callable[[], float]) -> Callable[[], float]:
        def sample() -> float:
            if self.stuck and name in self._last:
                return self._last[name]
            value = self._last[name] = read()
            return value

        return sample

    async def _identify(self, seconds: int) -> None:
        self.identified.append(seconds)

    def _reset(self) -> None:
        self.resets += 1

    async def __aenter__(self) -> Self:
        self.uart.open()
        self._task = asyncio.create_task(self.node.run(), name=f"node {self.config.get('node_id')}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.uart.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    # fault knobs
    def garbage(self, n: int = 64, rng: random.Random | None = None) -> None:
        rng = rng or random.Random(n)
        self.uart._write_now(bytes(rng.randrange(256) for _ in range(n)))

    def bad_crc(self, n: int = 1) -> None:
        self.uart.corrupt_next += n

    def truncate(self, n: int = 1) -> None:
        self.uart.truncate_next += n

    @property
    def slow(self) -> float:
        return self.uart.slow

    @slow.setter
    def slow(self, seconds: float) -> None:
        self.uart.slow = seconds

    def disconnect(self) -> None:
        self.uart.cut = True

    def reconnect(self) -> None:
        self.uart.cut = False

    async def vanish(self) -> None:
        self.uart.close()

    async def reappear(self) -> None:
        self.uart.open()
