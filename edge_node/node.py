"""The node runtime: per-sensor sampling tasks, batching, commands, watchdog feeding.

A :class:`Node` owns its tasks (``run()`` gathers them and cancels the rest when one fails).
Readings go to an *uplink* (``uplink.submit(values, time)`` and ``await uplink.run(node)``):
:class:`edge_node.uplink.SerialUplink` speaks the wire protocol over a UART; the BLE apps use
the uplinks in :mod:`edge_node.ble_link`. Hardware (sensor read functions, watchdog, LED,
reset) is passed in, so the same code runs on a board, on the unix port and under CPython.
"""

import asyncio
import json

from edge_node import protocol as P
from edge_node.compat import ticks_add, ticks_diff, ticks_ms

COLLECT_MS = 10  # readings sampled within this window share one frame


class Sensor:
    """A named quantity with its unit and a ``read()`` returning a number.

    ``read`` may raise OSError or ValueError (sensor missing, bus error): the node reports a
    sensor error to the gateway once per failure streak and keeps sampling the others.
    """

    def __init__(self, name, unit, read):
        if not name or len(name) > P.MAX_NAME:
            raise ValueError("sensor name must be 1 to %d characters" % P.MAX_NAME)
        self.name = name
        self.unit = unit
        self.read = read
        self.failing = False
        self.samples = 0
        self.errors = 0
        self.wake = asyncio.Event()


class Node:
    def __init__(self, config, sensors, uplink, firmware, clock=None, wdt=None, **hooks):
        self.config = config
        self.sensors = {}
        for s in sensors:
            self.sensors[s.name] = s
        self.uplink = uplink
        self.firmware = firmware
        self.clock = clock  # None: the node has no trusted wall clock
        self.wdt = wdt
        self.identify_hook = hooks.get("identify")  # async fn(seconds)
        self.reset_hook = hooks.get("reset")  # fn()
        self._batch = []
        self._batch_ready = asyncio.Event()
        self._tasks = []

    @property
    def node_id(self):
        return self.config.get("node_id")

    def announcement(self):
        sensors = []
        for s in self.sensors.values():
            sensors.append([s.name, s.unit, int(self.config.period(s.name) * 1000)])
        return {
            "type": "hello",
            "node": self.node_id,
            "firmware": self.firmware,
            "period_ms": int(self.config.get("period_s") * 1000),
            "sensors": sensors,
        }

    async def run(self):
        """Run every task of the node until one fails or the caller cancels."""
        coros = [self._sample_loop(s) for s in self.sensors.values()]
        coros.append(self._report_loop())
        coros.append(self.uplink.run(self))
        if self.wdt is not None and self.config.get("wdt_ms"):
            coros.append(self._feed_loop())
        self._tasks = [asyncio.create_task(c) for c in coros]
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for t in self._tasks:
                t.cancel()

    def sample(self, sensor):
        """Read one sensor now and queue the value; errors become one error report."""
        try:
            value = float(sensor.read())
        except (OSError, ValueError, TypeError) as e:
            sensor.errors += 1
            if not sensor.failing:
                sensor.failing = True
                self.uplink.error(P.E_SENSOR, 0, "%s: %s" % (sensor.name, e))
            return
        sensor.failing = False
        sensor.samples += 1
        self._batch.append([sensor.name, value])
        self._batch_ready.set()

    async def _sample_loop(self, sensor):
        due = ticks_ms()
        while True:
            self.sample(sensor)
            period_ms = int(self.config.period(sensor.name) * 1000)
            due = ticks_add(due, period_ms)
            wait = ticks_diff(due, ticks_ms())
            if wait < 0:  # fell behind (slow sensor or period shortened): restart the grid
                due = ticks_ms()
                wait = 0
            if await self._sleep_or_wake(sensor.wake, wait):
                due = ticks_ms()  # period changed: sample now on the new grid

    async def _sleep_or_wake(self, event, ms):
        event.clear()
        try:
            await asyncio.wait_for(event.wait(), ms / 1000)
        except asyncio.TimeoutError:
            return False
        return True

    async def _report_loop(self):
        while True:
            await self._batch_ready.wait()
            await asyncio.sleep(COLLECT_MS / 1000)
            self._batch_ready.clear()
            batch = self._batch
            self._batch = []
            t = self.clock() if self.clock is not None else None
            for chunk in _chunks(batch):
                self.uplink.submit(chunk, t)

    async def _feed_loop(self):
        interval = self.config.get("wdt_ms") / 4000
        while True:
            self.wdt.feed()
            await asyncio.sleep(interval)

    async def command(self, msg):
        """Carry out a command message; returns None or (error code, text)."""
        name = msg["command"]
        if name == "set-period":
            return self._set_period(msg["sensor"], msg["period_ms"] / 1000)
        if name == "identify":
            if self.identify_hook is None:
                return (P.E_BAD_COMMAND, "this node has no identify light")
            self._tasks.append(asyncio.create_task(self.identify_hook(msg["seconds"])))
            return None
        if name == "reboot":
            if self.reset_hook is None:
                return (P.E_BAD_COMMAND, "this node cannot reboot itself")
            self._tasks.append(asyncio.create_task(self._reboot()))
            return None
        if name == "set-config":
            return self._set_config(msg["key"], msg["value"])
        return (P.E_BAD_COMMAND, "unknown command %r" % name)

    def _set_period(self, sensor, seconds):
        if sensor and sensor not in self.sensors:
            return (P.E_BAD_VALUE, "no sensor %r" % sensor)
        key = "period." + sensor if sensor else "period_s"
        err = self._store(key, seconds)
        if err is None:
            for s in self.sensors.values():
                if not sensor or s.name == sensor:
                    s.wake.set()
        return err

    def _set_config(self, key, text):
        try:
            value = json.loads(text)
        except ValueError:
            return (P.E_BAD_VALUE, "%s: value is not JSON: %r" % (key, text))
        if key == "node_id":
            return (P.E_BAD_VALUE, "node_id changes only on the next boot; write it to flash")
        err = self._store(key, value)
        if err is None and (key == "period_s" or key.startswith("period.")):
            for s in self.sensors.values():
                s.wake.set()
        return err

    def _store(self, key, value):
        try:
            self.config.set(key, value)
        except ValueError as e:
            return (P.E_BAD_VALUE, str(e))
        except OSError as e:
            return (P.E_BAD_VALUE, "%s: could not save config (%s)" % (key, e))
        return None

    async def _reboot(self):
        await asyncio.sleep(0.2)  # let the acknowledgement leave the UART first
        if self.reset_hook is not None:
            self.reset_hook()


def _chunks(values):
    """Split ``values`` so that each readings frame stays under the maximum body size."""
    chunk: list = []
    size = 40  # header, node id, time, CRC
    for item in values:
        need = 6 + len(item[0])
        if chunk and size + need > P.MAX_BODY:
            yield chunk
            chunk = []
            size = 40
        chunk.append(item)
        size += need
    if chunk:
        yield chunk
