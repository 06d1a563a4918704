"""Emulated BLE peripherals on a bumble virtual radio, with fault knobs.

``BleRadio`` is one :class:`~bumble.link.LocalLink` (the air) with the gateway's central on it and
any number of peripherals, each a bumble Device on its own emulated controller::

    async with BleRadio() as radio:
        light = await radio.add_streetlight("light-01")
        counter = await radio.add_counter(7)
        ctx.options.update(radio.options)        # bleak backends for the gateway's sources
        light.vanish(); ...; light.reappear()

Streetlights serve the twinedge streetlight GATT service (edge_node/ble_payload.py) and notify
every characteristic each ``period``; dim level and power state are writable. Counters broadcast
counter adverts (non-connectable) with a rolling sequence number. Values come from the physics
generators in :mod:`hil_tests.emulators.physics`, on the same time base as the wall clock.

Fault knobs (attributes of each peripheral, set at any time): ``garbage`` (n bad payloads),
``short`` (n truncated payloads), ``bad_values`` (n out-of-range values), ``stuck`` (values
frozen), ``slow`` (seconds of delay on GATT reads and writes), ``skip`` (n counter adverts not
sent: gaps), ``reboot()`` (counter restarts its counts), ``disconnect()`` (peripheral drops its
connections), ``vanish()`` / ``reappear()`` (out of radio range and back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

from bumble import hci
from bumble.device import AdvertisingType, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.link import LocalLink
from bumble.transport import open_transport

from edge_node import ble_payload as bp
from hil_tests.emulators.bleak_bumble import Central, EmulatedController, make_device
from hil_tests.emulators.physics import CounterSim, StreetlightSim

__all__ = ["BleRadio", "EmulatedCounter", "EmulatedStreetlight"]

log = logging.getLogger("twinedge.emulators.ble")
_TIMEOUT_REASON = hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR
_NOWHERE = LocalLink()  # where a vanished controller's radio goes: nobody listens
_CENTRAL = "C0:00:00:00:00:01"  # the gateway's adapter


def _address(kind: int, n: int) -> str:
    """A static random address (two top bits set), unique per kind and number."""
    octets = ":".join(f"{(n >> shift) & 0xFF:02X}" for shift in (24, 16, 8, 0))
    return f"C{kind:X}:{octets}:5A"


class _Peripheral:
    """A bumble Device on its own emulated controller, with vanish/reappear."""

    def __init__(self, radio: BleRadio, name: str, address: str) -> None:
        self.radio = radio
        self.name = name
        self.address = address
        self.device, self.controller = make_device(name, address, radio.link)
        self.present = True
        self.paused = False  # True: no new values (a benchmark's end of window)
        self.rng = random.Random(int(address.replace(":", ""), 16))  # reproducible faults

    def vanish(self) -> None:
        """Leave radio range: adverts stop reaching anyone and connections drop (as after a
        supervision timeout, which bumble does not emulate)."""
        if not self.present:
            return
        self.present = False
        self.radio.link.remove_controller(self.controller)
        self.controller.link = _NOWHERE  # remove_controller alone leaves it advertising
        self._drop_connections(_TIMEOUT_REASON)

    def reappear(self) -> None:
        if self.present:
            return
        self.present = True
        self.controller.link = self.radio.link
        self.radio.link.add_controller(self.controller)

    def disconnect(self) -> None:
        """The peripheral terminates its connections (remote user terminated)."""
        self._drop_connections(hci.HCI_ErrorCode.REMOTE_USER_TERMINATED_CONNECTION_ERROR)

    def _drop_connections(self, reason: int) -> None:
        central = self.radio.central_controller
        for peer, conn in list(self.controller.le_connections.items()):
            self.controller.on_le_disconnected(conn, reason)
            other = central.le_connections.get(conn.self_address)
            if other is None:
                other = next(
                    (
                        c
                        for a, c in central.le_connections.items()
                        if str(a) == str(conn.self_address)
                    ),
                    None,
                )
            if other is not None:
                central.on_le_disconnected(other, reason)
            log.debug("%s: dropped connection to %s", self.name, peer)


class EmulatedStreetlight(_Peripheral):
    """A streetlight controller serving the twinedge GATT service."""

    def __init__(self, radio: BleRadio, name: str, address: str, period: float, seed: int) -> None:
        super().__init__(radio, name, address)
        self.period = period
        self.interval_ms = radio.adv_interval_ms
        self.sim = StreetlightSim(seed, time.time())
        self.commanded_on: bool | None = None
        self.dim_level: float | None = None
        self.garbage = 0
        self.bad_values = 0
        self.stuck = False
        self.slow = 0.0
        self.notifications = 0  # notifications that reached a subscriber
        self.writes: list[tuple[str, int]] = []
        self._frozen: dict[str, float] | None = None
        self.chars: dict[str, Characteristic] = {}
        self._build_service()

    def _build_service(self) -> None:
        for q, (uuid, _fmt, _scale, writable) in bp.STREETLIGHT_CHARS.items():
            props = Characteristic.Properties.READ | Characteristic.Properties.NOTIFY
            perms = Characteristic.READABLE
            if writable:
                props |= Characteristic.Properties.WRITE
                perms |= Characteristic.WRITEABLE
            value = CharacteristicValue(
                read=lambda conn, q=q: self._read(q),
                write=(lambda conn, v, q=q: self._write(q, v)) if writable else None,
            )
            self.chars[q] = Characteristic(uuid, props, perms, value)
        self.device.add_service(Service(bp.STREETLIGHT_SERVICE, list(self.chars.values())))

    def state(self) -> dict[str, float]:
        if self.stuck and self._frozen is not None:
            return self._frozen
        s = self.sim.sample(time.time(), commanded_on=self.commanded_on, dim_level=self.dim_level)
        self._frozen = s
        return s

    def encode(self, q: str, value: float) -> bytes:
        _, fmt, scale, _ = bp.STREETLIGHT_CHARS[q]
        if self.garbage > 0:
            self.garbage -= 1
            return bytes(self.rng.randrange(256) for _ in range(3))  # wrong length for any format
        raw = round(value / scale)
        if self.bad_values > 0 and q == "voltage":
            self.bad_values -= 1
            raw = 0xFFFF  # 655.35 V: a broken ADC reading
        return bytes(bp.encode_value(fmt, raw))

    async def _read(self, q: str) -> bytes:
        if self.slow:
            await asyncio.sleep(self.slow)
        return self.encode(q, self.state()[q])

    async def _write(self, q: str, value: bytes) -> None:
        if self.slow:
            await asyncio.sleep(self.slow)
        raw = bp.decode_value(bp.STREETLIGHT_CHARS[q][1], value)
        self.writes.append((q, raw))
        if q == "dim_level":
            self.dim_level = float(min(raw, 100))
        else:
            self.commanded_on = bool(raw)
        self._frozen = None
        await self.notify_all()

    async def start(self) -> None:
        await self.device.power_on()
        await self.advertise()
        self.radio.spawn(self._notify_loop(), f"ble-light-{self.name}")

    async def advertise(self) -> None:
        await self.device.start_advertising(
            advertising_type=AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE,
            advertising_data=bp.streetlight_advert(self.name),
            advertising_interval_min=self.interval_ms,
            advertising_interval_max=self.interval_ms,
            auto_restart=True,
        )

    async def notify_all(self) -> None:
        if not self.present or not self.device.connections:
            return
        state = self.state()
        for q, char in self.chars.items():
            await self.device.notify_subscribers(char, self.encode(q, state[q]))
            self.notifications += self._subscribed(char)

    def _subscribed(self, char: Characteristic) -> int:
        """How many connections have notifications on for ``char`` (what a notify reaches)."""
        cccds = self.device.gatt_server.subscribers.values()
        return sum(1 for c in cccds if len(c.get(char.handle, b"")) == 2 and c[char.handle][0] & 1)

    async def _notify_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.rng.uniform(0.0, self.period)  # devices are not in phase
        while True:
            next_at += self.period
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if self.paused:
                continue
            try:
                await self.notify_all()
            except (hci.HCI_Error, ConnectionError) as e:  # peer went away mid-notify
                log.debug("%s: notify failed: %s", self.name, e)


class EmulatedCounter(_Peripheral):
    """A pedestrian counter broadcasting counter adverts."""

    def __init__(
        self, radio: BleRadio, node_id: int, period: float, seed: int, busyness: float = 1.0
    ) -> None:
        super().__init__(radio, bp.device_id(node_id), _address(0xD, node_id))
        self.node_id = node_id
        self.period = period
        self.sim = CounterSim(seed, time.time(), busyness)
        self.boot = 1
        self.seq = 0
        self.count_in = 0
        self.count_out = 0
        self.battery: int | None = 95
        self.garbage = 0
        self.short = 0
        self.bad_values = 0
        self.skip = 0
        self.stuck = False
        self.sent: list[int] = []  # sequence numbers actually broadcast
        self.totals: dict[tuple[int, int], tuple[int, int]] = {}  # (boot, seq) -> (in, out)
        self.adverts = 0
        self.updates = 0
        self._updated = asyncio.Condition()

    async def wait_updates(self, n: int) -> None:
        """Wait until the counter has gone through ``n`` more update periods."""
        target = self.updates + n
        async with self._updated:
            await self._updated.wait_for(lambda: self.updates >= target)

    def reboot(self) -> None:
        self.boot = (self.boot + 1) & 0xFF
        self.seq = self.count_in = self.count_out = 0

    def next_advert(self, now: float) -> bytes | None:
        """Advance one period and build the advert to broadcast (None: skip this one)."""
        if self.stuck:
            return self._payload()
        s = self.sim.sample(now, self.period)
        d_in, d_out = int(s["count_in"]), int(s["count_out"])
        if self.bad_values > 0:
            self.bad_values -= 1
            d_in += 5000  # a burst no street can produce in one second
        self.seq = (self.seq + 1) & 0xFFFF
        self.count_in = (self.count_in + d_in) & 0xFFFF
        self.count_out = (self.count_out + d_out) & 0xFFFF
        if "battery" in s:
            self.battery = bp.battery_percent(s["battery"])
        self.totals[(self.boot, self.seq)] = (self.count_in, self.count_out)
        if self.skip > 0:
            self.skip -= 1
            return None
        self.sent.append(self.seq)
        return self._payload()

    def _payload(self) -> bytes:
        battery = bp.NO_BATTERY if self.battery is None else self.battery
        adv = bp.counter_advert(
            self.node_id, self.boot, self.seq, self.count_in, self.count_out, battery
        )
        if self.garbage > 0:
            self.garbage -= 1
            junk = bytes(self.rng.randrange(256) for _ in range(16))
            return bp.check_legacy(adv[:7] + junk)  # right company id, nonsense payload
        if self.short > 0:
            self.short -= 1
            return adv[:-6]  # cut short: AD length overruns the data
        return adv

    async def start(self) -> None:
        await self.device.power_on()
        adv = self.next_advert(time.time()) or self._payload()
        await self.device.start_advertising(
            advertising_type=AdvertisingType.UNDIRECTED,
            advertising_data=adv,
            advertising_interval_min=self.radio.adv_interval_ms,
            advertising_interval_max=self.radio.adv_interval_ms,
        )
        self.radio.spawn(self._update_loop(), f"ble-counter-{self.node_id}")

    async def _set_data(self, adv: bytes) -> None:
        bp.check_legacy(adv)
        adv_set = self.device.legacy_advertising_set
        if adv_set is not None:
            await adv_set.set_advertising_data(adv)
        else:
            await self.device.start_advertising(
                advertising_type=AdvertisingType.UNDIRECTED,
                advertising_data=adv,
            )
        self.adverts += 1

    async def _update_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.rng.uniform(0.0, self.period)  # devices are not in phase
        while True:
            next_at += self.period
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if self.paused:
                continue
            adv = self.next_advert(time.time())
            if adv is not None and self.present:
                await self._set_data(adv)
            async with self._updated:
                self.updates += 1
                self._updated.notify_all()


class BleRadio:
    """The air: a LocalLink with the gateway's central and emulated peripherals; owns tasks."""

    def __init__(
        self, *, adv_interval_ms: float = 100.0, seed: int = 1, hci_server: str | None = None
    ) -> None:
        """``hci_server`` (e.g. ``127.0.0.1:9001``): instead of an in-process central, serve the
        gateway's controller over HCI on TCP, so a gateway in another process attaches with
        :func:`~hil_tests.emulators.bleak_bumble.central_over_hci` (for honest CPU figures)."""
        self.adv_interval_ms = adv_interval_ms
        self.seed = seed
        self.hci_server = hci_server
        self.link = LocalLink()
        self.streetlights: dict[str, EmulatedStreetlight] = {}
        self.counters: dict[int, EmulatedCounter] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._stack = contextlib.AsyncExitStack()
        self._spawned: list[asyncio.Task[None]] = []
        self.central: Central | None = None
        self.scanner_backend: type[Any] | None = None  # in-process central only
        self.client_backend: type[Any] | None = None
        if hci_server is None:
            device, self.central_controller = make_device("gateway", _CENTRAL, self.link)
            self.central = Central(device)
            self.scanner_backend, self.client_backend = self.central.backends()

    @property
    def options(self) -> dict[str, Any]:
        """What to put in ``SourceContext.options`` so gateway sources use this radio."""
        return {
            "ble_scanner_backend": self.scanner_backend,
            "ble_client_backend": self.client_backend,
        }

    async def __aenter__(self) -> BleRadio:
        self._tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        if self.central is not None:
            await self.central.start()
        else:
            assert self.hci_server is not None
            transport = await open_transport(f"tcp-server:{self.hci_server}")
            self._stack.push_async_callback(transport.close)
            self.central_controller = EmulatedController(
                "gateway", transport.source, transport.sink, self.link, _CENTRAL
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for p in [*self.streetlights.values(), *self.counters.values()]:
            p.vanish()  # stop the advertising timers reaching anyone
            with contextlib.suppress(hci.HCI_Error):
                await p.device.stop_advertising()
        for task in self._spawned:
            task.cancel()
        await self._stack.aclose()
        self._tasks = None

    def spawn(self, coro: Any, name: str) -> None:
        assert self._tasks is not None, "use BleRadio as 'async with'"
        self._spawned.append(self._tasks.create_task(coro, name=name))

    async def add_streetlight(
        self, name: str, *, period: float = 1.0, seed: int | None = None
    ) -> EmulatedStreetlight:
        n = len(self.streetlights) + 1
        light = EmulatedStreetlight(
            self, name, _address(0xE, n), period, self.seed * 1000 + n if seed is None else seed
        )
        self.streetlights[name] = light
        await light.start()
        return light

    async def add_counter(
        self, node_id: int, *, period: float = 1.0, seed: int | None = None, busyness: float = 1.0
    ) -> EmulatedCounter:
        """A counter; ``busyness`` scales the street's flow (1.0: up to ~900 people/hour)."""
        seed = self.seed * 100000 + node_id if seed is None else seed
        counter = EmulatedCounter(self, node_id, period, seed, busyness)
        self.counters[node_id] = counter
        await counter.start()
        return counter

    async def add_phone(self) -> Device:
        """A passer-by's phone: advertises manufacturer data of its own; must be ignored."""
        n = 0xABC000 + len(self.link.controllers)
        device, _controller = make_device("phone", _address(0xF, n), self.link)
        await device.power_on()
        adv = bp.ad_structure(bp.AD_FLAGS, b"\x1a") + bp.ad_structure(
            bp.AD_MANUFACTURER, b"\x4c\x00\x10\x05\x01\x18\x44\x00\x00"
        )
        await device.start_advertising(
            advertising_type=AdvertisingType.UNDIRECTED_SCANNABLE,
            advertising_data=adv,
            advertising_interval_min=self.adv_interval_ms,
            advertising_interval_max=self.adv_interval_ms,
        )
        return device
