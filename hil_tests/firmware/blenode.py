"""Run a BLE firmware app on the real MicroPython unix port, its radio bridged to bumble.

The app's ``bluetooth.BLE()`` (shim/bluetooth.py) is a TCP connection to this harness. Each
``gap_advertise`` the firmware makes arrives here as a JSON line and is played on a bumble
device on the test's :class:`~hil_tests.emulators.ble.BleRadio`, byte for byte, at the
firmware's interval: the gateway's scanner hears exactly what the firmware broadcasts. The
same connection carries pin edges the other way (``await node.pulse(pin)``), so the test
drives the app's beam/PIR interrupts. ``adverts`` keeps every advert the firmware asked for.

A GATT app's ``gatts_register_services`` becomes a bumble GATT server with the same services;
reads are answered from the values the firmware last set with ``gatts_write``, its
``gatts_notify`` notifies the connection it names, and a central's connect, disconnect and
writes go back to the firmware as IRQ events. ``duty`` holds the PWM duty the app last set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from types import TracebackType
from typing import Any, Self

from bumble.device import AdvertisingType, Connection
from bumble.gatt import Characteristic, CharacteristicValue, Service

from edge_node import ble_payload as bp
from hil_tests.emulators.ble import BleRadio
from hil_tests.emulators.bleak_bumble import make_device
from hil_tests.firmware.mpnode import MICROPYTHON, MicroPythonNode

ADDRESS = "CB:00:00:12:34:5A"  # static random address of the bridged node's radio


class Advert:
    """One ``gap_advertise`` call as the firmware made it."""

    def __init__(self, msg: dict[str, Any]) -> None:
        self.interval_us: int | None = msg["interval_us"]
        self.data = bytes.fromhex(msg.get("data", ""))
        self.connectable = bool(msg.get("connectable", True))


class MicroPythonBleNode(MicroPythonNode):
    RUNNER = "run_ble_app"
    SHIMS = ("bluetooth", "blehw", "machine", RUNNER)  # on a board: firmware (C) and board file

    def __init__(
        self,
        radio: BleRadio,
        app: str = "pedestrian_counter",
        *,
        address: str = ADDRESS,
        heap: str = "64k",
        **kw: Any,
    ) -> None:
        """``heap``: what the app must run in, shims included (docs/firmware.md, Figures)."""
        super().__init__(app, heap=heap, **kw)
        self.radio = radio
        self.address = address
        self.device, self.controller = make_device(app, address, radio.link)
        self.adverts: list[Advert] = []
        self.advertised = asyncio.Event()  # set each time an advert is on the air
        self.bridge_error: BaseException | None = None
        self._ble_server: asyncio.Server | None = None
        self._ble_writer: asyncio.StreamWriter | None = None
        self._radio_task: asyncio.Task[Any] | None = None
        self._advertising: tuple[int, bool] | None = None  # (interval, connectable) on the air
        self.values: dict[int, bytes] = {}  # firmware value handle -> its value
        self.chars: dict[int, Characteristic[Any]] = {}  # firmware value handle -> bumble's
        self.writes: list[tuple[int, bytes]] = []  # what centrals wrote, in order
        self.notified = 0  # notifications the firmware sent to a connected central
        self.connections = 0  # centrals that connected
        self.duty: dict[int, int] = {}  # PWM pin -> duty_u16 the app set
        self.changed_hw = asyncio.Event()  # set on each PWM change
        self.device.on("connection", self._on_connection)

    def __str__(self) -> str:
        return f"ble-adv:{self.stored_config().get('node_id')}"

    async def pulse(self, pin: int) -> None:
        """Break and restore a beam: a falling then a rising edge on ``pin``."""
        await self.drive(pin, 0)
        await self.drive(pin, 1)

    async def drive(self, pin: int, value: int) -> None:
        assert self._ble_writer is not None, "the node has not opened its radio"
        self._ble_writer.write(json.dumps({"op": "pin", "pin": pin, "value": value}).encode())
        self._ble_writer.write(b"\n")
        await self._ble_writer.drain()

    async def wait_heap(self, n: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Until the node has reported its heap ``n`` times."""
        async with asyncio.timeout(timeout):
            while len(self.heap_live) < n:
                self.changed.clear()
                await self.changed.wait()

    async def wait_adverts(self, n: int, timeout: float = 10.0) -> Advert:  # noqa: ASYNC109
        """Until the firmware has made ``n`` adverts; the ``n``-th."""
        return await self.wait_advert(lambda a: len(self.adverts) >= n, timeout)

    async def wait_advert(self, pred: Any, timeout: float = 10.0) -> Advert:  # noqa: ASYNC109
        """The first advert (old or new) for which ``pred(advert)`` holds."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self.advertised.clear()
                    for adv in self.adverts:
                        if pred(adv):
                            return adv
                    if self.bridge_error is not None:
                        raise self.bridge_error
                    await self.advertised.wait()
        except TimeoutError:
            tail = "\n".join(self.output[-15:])
            raise AssertionError(
                f"no such advert in {len(self.adverts)}; node said:\n{tail}"
            ) from None

    async def __aenter__(self) -> Self:
        await self.device.power_on()
        connected = asyncio.Event()
        self._ble_server = await asyncio.start_server(
            lambda r, w: self._on_radio(r, w, connected), "127.0.0.1", 0
        )
        port = self._ble_server.sockets[0].getsockname()[1]
        paths = [".frozen", str(self._stage())]
        env = dict(os.environ, MICROPYPATH=":".join(paths), TWINEDGE_BLE=f"127.0.0.1:{port}")
        env.update(TWINEDGE_HW=str(self.hw_file), TWINEDGE_EVENTS=str(self.events_file))
        self.proc = await asyncio.create_subprocess_exec(
            str(MICROPYTHON), "-X", f"heapsize={self.heap}", "-m", self.RUNNER,
            cwd=self.tmp, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._tasks.append(asyncio.create_task(self._read_output()))
        try:
            async with asyncio.timeout(10):
                await connected.wait()
        except TimeoutError:
            await self.__aexit__(None, None, None)
            raise AssertionError(
                "node never opened its radio:\n" + "\n".join(self.output)
            ) from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._radio_task is not None:  # plays what the node said last, then sees EOF
            async with asyncio.timeout(10):
                await self._radio_task
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._ble_writer is not None:
            self._ble_writer.close()
        if self._ble_server is not None:
            self._ble_server.close()
            await self._ble_server.wait_closed()
        if self.device.legacy_advertising_set is not None:
            await self.device.stop_advertising()
        self.radio.link.remove_controller(self.controller)
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def _on_radio(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connected: asyncio.Event
    ) -> None:
        self._ble_writer = writer
        self._radio_task = asyncio.current_task()
        connected.set()
        try:
            while line := await reader.readline():
                msg = json.loads(line)
                await self._handle(msg)
        except Exception as e:  # recorded: a test waiting for adverts raises it
            self.bridge_error = e
            self.advertised.set()

    async def _handle(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "adv":
            await self._advertise(Advert(msg))
        elif op == "services":
            self._register(msg["services"])
        elif op == "value":
            self.values[msg["handle"]] = bytes.fromhex(msg["data"])
        elif op == "notify":
            conn = self.device.connections.get(msg["conn"])
            if conn is not None:  # gone already: a real stack fails the notify too
                value = self.values[msg["handle"]]
                await self.device.notify_subscriber(conn, self.chars[msg["handle"]], value)
                self.notified += 1
        elif op == "pwm":
            self.duty[msg["pin"]] = msg["duty"]
            self.changed_hw.set()

    def _register(self, services: list[Any]) -> None:
        """The firmware's services, handles numbered in order as the shim numbers them."""
        handle = len(self.chars)
        for uuid, chars in services:
            built = []
            for c_uuid, flags in chars:
                handle += 1
                self.values[handle] = b""
                char = Characteristic(
                    c_uuid,
                    Characteristic.Properties(flags & 0xFF),
                    Characteristic.READABLE | Characteristic.WRITEABLE,
                    CharacteristicValue(
                        read=lambda conn, h=handle: self.values[h],
                        write=lambda conn, v, h=handle: self._written(conn, h, v),
                    ),
                )
                self.chars[handle] = char
                built.append(char)
            self.device.add_service(Service(uuid, built))

    def _written(self, conn: Connection, handle: int, value: bytes) -> None:
        self.values[handle] = bytes(value)
        self.writes.append((handle, bytes(value)))
        self._tell({"op": "write", "conn": conn.handle, "handle": handle, "data": value.hex()})

    def _on_connection(self, conn: Connection) -> None:
        self._advertising = None  # a controller stops advertising when a central connects
        self.connections += 1
        self._tell({"op": "connect", "conn": conn.handle})
        conn.on(
            "disconnection", lambda reason: self._tell({"op": "disconnect", "conn": conn.handle})
        )

    def _tell(self, msg: dict[str, Any]) -> None:
        if self._ble_writer is not None:
            self._ble_writer.write(json.dumps(msg).encode() + b"\n")

    async def wait_duty(self, pin: int, duty: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Until the app has set PWM ``pin`` to ``duty``."""
        async with asyncio.timeout(timeout):
            while self.duty.get(pin) != duty:
                self.changed_hw.clear()
                await self.changed_hw.wait()

    async def _advertise(self, adv: Advert) -> None:
        """Put the firmware's advert on the air, as its controller would."""
        if adv.interval_us is None:
            if self._advertising is not None:
                await self.device.stop_advertising()
                self._advertising = None
        else:
            bp.check_legacy(adv.data)  # the shim refuses more; a real controller would too
            mode = (adv.interval_us, adv.connectable)
            adv_set = self.device.legacy_advertising_set
            if self._advertising == mode and adv_set is not None and adv_set.enabled:
                await adv_set.set_advertising_data(adv.data)
            else:
                if adv_set is not None:
                    await self.device.stop_advertising()
                kind = AdvertisingType.UNDIRECTED
                if adv.connectable:
                    kind = AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE
                await self.device.start_advertising(
                    advertising_type=kind,
                    advertising_data=adv.data,
                    advertising_interval_min=adv.interval_us / 1000,
                    advertising_interval_max=adv.interval_us / 1000,
                )
                self._advertising = mode
        self.adverts.append(adv)
        self.advertised.set()
