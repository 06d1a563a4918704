"""The node runtime: a sampling scheduler, batching, commands, watchdog feeding.

A :class:`Node` owns its tasks (``run()`` gathers them and cancels the rest when one fails).
Readings go to an *uplink* (``uplink.submit(values, time)`` and ``await uplink.run(node)``):
:class:`edge_node.uplink.SerialUplink` speaks the wire protocol over a UART; the BLE apps use
:class:`edge_node.ble_counter.CounterAdvertiser` or :class:`edge_node.ble_gatt.GattPeripheral`.
Hardware (sensor read functions, watchdog, LED, reset) is passed in, so the same code runs on a
board, on the unix port and under CPython.
"""

import asyncio
import json

from edge_node.compat import const, ticks_add, ticks_diff, ticks_ms

# error codes and the name limit of the wire protocol (edge_node.protocol.E_*, MAX_NAME), here so
# that a BLE node need not load the serial protocol; tests check that the two agree
E_BAD_COMMAND = const(1)
E_BAD_VALUE = const(2)
E_SENSOR = const(3)
MAX_NAME = const(24)


class Sensor:
    """A named quantity with its unit and a ``read()`` returning a number.

    ``read`` may raise OSError or ValueError (sensor missing, bus error): the node reports a
    sensor error to the gateway once per failure streak and keeps sampling the others.
    """

    def __init__(self, name, unit, read):
        if not name or len(name) > MAX_NAME:
            raise ValueError("sensor name must be 1 to %d characters" % MAX_NAME)
        self.name = name
        self.unit = unit
        self.read = read
        self.failing = False
        self.samples = 0
        self.errors = 0


class Node:
    def __init__(self, config, sensors, uplink, firmware, clock=None, wdt=None, **hooks):
        self.config = config
        self.node_id = config.get("node_id")  # changes only on the next boot
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
        self._wake = asyncio.Event()
        self._tasks = []

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
        """Run the node until a task fails or the caller cancels: one scheduler task samples
        every sensor on its own period (one task, not one per sensor: RAM is scarce)."""
        coros = [self.uplink.run(self), self._schedule()]  # the link first: it says hello
        if self.wdt is not None and self.config.get("wdt_ms"):
            coros.append(self._feed_loop())
        self._tasks = [asyncio.create_task(c) for c in coros]
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for t in self._tasks:
                t.cancel()

    def sample(self, sensor, flush=True):
        """Read one sensor now and report the value (``flush``) or queue it for the next report;
        an error becomes one error report per failure streak."""
        try:
            value = float(sensor.read())
        except (OSError, ValueError, TypeError) as e:
            sensor.errors += 1
            if not sensor.failing:
                sensor.failing = True
                self.uplink.error(E_SENSOR, 0, "%s: %s" % (sensor.name, e))
            return
        sensor.failing = False
        sensor.samples += 1
        self._batch.append([sensor.name, value])
        if flush:
            self.flush()

    def flush(self):
        """Send what was sampled since the last report to the uplink."""
        if not self._batch:
            return
        batch = self._batch
        self._batch = []
        self.uplink.submit(batch, self.clock() if self.clock is not None else None)

    async def _schedule(self):
        due = {}
        now = ticks_ms()
        for name in self.sensors:
            due[name] = now
        while True:
            now = ticks_ms()
            wait = 86_400_000  # ms until the next sensor is due
            for name, sensor in self.sensors.items():
                if ticks_diff(due[name], now) <= 0:
                    self.sample(sensor, False)
                    nxt = ticks_add(due[name], int(self.config.period(name) * 1000))
                    if ticks_diff(nxt, now) <= 0:  # fell behind: restart this sensor's grid
                        nxt = ticks_add(now, int(self.config.period(name) * 1000))
                    due[name] = nxt
                wait = min(wait, ticks_diff(due[name], now))
            self.flush()  # sensors due together share one frame
            self._wake.clear()
            try:  # sleep until then, or until a period changes
                wait -= ticks_diff(ticks_ms(), now)
                await asyncio.wait_for(self._wake.wait(), max(wait, 0) / 1000)
            except asyncio.TimeoutError:
                continue
            now = ticks_ms()  # a period changed: sample everything now on the new grid
            for name in due:
                due[name] = now

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
                return (E_BAD_COMMAND, "this node has no identify light")
            self._tasks.append(asyncio.create_task(self.identify_hook(msg["seconds"])))
            return None
        if name == "reboot":
            if self.reset_hook is None:
                return (E_BAD_COMMAND, "this node cannot reboot itself")
            self._tasks.append(asyncio.create_task(self._reboot()))
            return None
        if name == "set-config":
            return self._set_config(msg["key"], msg["value"])
        if name == "hello":
            return None  # the uplink announces the node after acknowledging
        return (E_BAD_COMMAND, "unknown command %r" % name)

    def _set_period(self, sensor, seconds):
        if sensor and sensor not in self.sensors:
            return (E_BAD_VALUE, "no sensor %r" % sensor)
        key = "period." + sensor if sensor else "period_s"
        err = self._store(key, seconds)
        if err is None:
            self._wake.set()
        return err

    def _set_config(self, key, text):
        try:
            value = json.loads(text)
        except ValueError:
            return (E_BAD_VALUE, "%s: value is not JSON: %r" % (key, text))
        if key == "node_id":
            return (E_BAD_VALUE, "node_id changes only on the next boot; write it to flash")
        err = self._store(key, value)
        if err is None and (key == "period_s" or key.startswith("period.")):
            self._wake.set()
        return err

    def _store(self, key, value):
        try:
            self.config.set(key, value)
        except ValueError as e:
            return (E_BAD_VALUE, str(e))
        except OSError as e:
            return (E_BAD_VALUE, "%s: could not save config (%s)" % (key, e))
        return None

    async def _reboot(self):
        await asyncio.sleep(0.2)  # let the acknowledgement leave the UART first
        if self.reset_hook is not None:
            self.reset_hook()
