"""BLE uplinks for nodes that talk to the gateway over Bluetooth LE (MicroPython ``bluetooth``).

Both take the ``bluetooth.BLE()`` object from the board, never create it. Encodings come from
:mod:`edge_node.ble_payload`, shared with the gateway and the emulators.

- :class:`CounterAdvertiser`: connectionless. Each report adds the counts to cumulative
  totals and re-advertises them with a rolling sequence number (legacy 31-byte adverts), so a
  gateway hears hundreds of counters without a connection each and a missed advert loses nobody.
- :class:`GattPeripheral`: the streetlight service (read + notify per quantity; power state and
  dim level writable). Writes from a central call ``on_write(quantity, value)``.
"""

import asyncio

from edge_node import ble_payload as B

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_FLAG_READ = 0x0002
_FLAG_WRITE = 0x0008
_FLAG_NOTIFY = 0x0010


class CounterAdvertiser:
    def __init__(self, ble, node_id, boot, interval_ms=1000, company_id=B.COMPANY_ID):
        self.ble = ble
        self.node_id = node_id
        self.boot = boot
        self.interval_us = interval_ms * 1000
        self.company_id = company_id
        self.seq = 0
        self.count_in = 0
        self.count_out = 0
        self.battery = B.NO_BATTERY
        self.flags = 0
        self.errors = 0
        self.advert = b""

    def submit(self, values, time):
        for name, value in values:
            if name == "count_in":
                self.count_in = (self.count_in + int(value)) & 0xFFFF
            elif name == "count_out":
                self.count_out = (self.count_out + int(value)) & 0xFFFF
            elif name == "battery":
                self.battery = max(0, min(100, int(value)))
                low = self.battery < 15
                self.flags = (self.flags | B.FLAG_LOW_BATTERY) if low else (self.flags & ~1)
        self.seq = (self.seq + 1) & 0xFFFF
        self.advertise()

    def advertise(self):
        self.advert = B.counter_advert(
            self.node_id, self.boot, self.seq, self.count_in, self.count_out,
            self.battery, self.flags, self.company_id,
        )  # fmt: skip
        self.ble.gap_advertise(self.interval_us, adv_data=self.advert)

    def error(self, code, ref, text):
        self.errors += 1
        if code == 3:  # a sensor error: tell the gateway the beam is blocked
            self.flags |= B.FLAG_TAMPER

    async def run(self, node):
        self.ble.active(True)
        self.advertise()
        await asyncio.Event().wait()  # adverts go out from the radio; nothing to receive


class GattPeripheral:
    def __init__(self, ble, name, on_write, interval_ms=250):
        self.ble = ble
        self.name = name
        self.on_write = on_write
        self.interval_us = interval_ms * 1000
        self.handles = {}  # quantity -> value handle
        self.quantities = {}  # value handle -> quantity
        self.connections = set()
        self.writes = asyncio.Event()
        self._pending = []
        self.errors = 0

    def register(self):
        import bluetooth  # only here: the unix port and CPython tests pass a BLE-like object

        chars = []
        names = list(B.STREETLIGHT_CHARS)
        for q in names:
            uuid, _, _, writable = B.STREETLIGHT_CHARS[q]
            flags = _FLAG_READ | _FLAG_NOTIFY | (_FLAG_WRITE if writable else 0)
            chars.append((bluetooth.UUID(uuid), flags))
        service = (bluetooth.UUID(B.STREETLIGHT_SERVICE), tuple(chars))
        ((handles),) = self.ble.gatts_register_services((service,))
        for i in range(len(names)):
            self.handles[names[i]] = handles[i]
            self.quantities[handles[i]] = names[i]

    def _irq(self, event, data):
        if event == _IRQ_CENTRAL_CONNECT:
            self.connections.add(data[0])
        elif event == _IRQ_CENTRAL_DISCONNECT:
            self.connections.discard(data[0])
            self._advertise()
        elif event == _IRQ_GATTS_WRITE:
            self._pending.append(data[1])
            self.writes.set()

    def _advertise(self):
        self.ble.gap_advertise(self.interval_us, adv_data=B.streetlight_advert(self.name))

    def submit(self, values, time):
        for name, value in values:
            spec = B.STREETLIGHT_CHARS.get(name)
            handle = self.handles.get(name)
            if spec is None or handle is None:
                continue
            try:
                data = B.encode_value(spec[1], round(value / spec[2]))
            except B.PayloadError:
                self.errors += 1
                continue
            self.ble.gatts_write(handle, data)
            for conn in self.connections:
                self.ble.gatts_notify(conn, handle)

    def error(self, code, ref, text):
        self.errors += 1

    async def run(self, node):
        self.ble.active(True)
        self.ble.irq(self._irq)
        self.register()
        self._advertise()
        while True:
            await self.writes.wait()
            self.writes.clear()
            while self._pending:
                handle = self._pending.pop(0)
                self._apply(handle)

    def _apply(self, handle):
        q = self.quantities.get(handle)
        if q is None:
            return
        fmt, scale = B.STREETLIGHT_CHARS[q][1], B.STREETLIGHT_CHARS[q][2]
        try:
            value = B.decode_value(fmt, self.ble.gatts_read(handle)) * scale
        except B.PayloadError:
            self.errors += 1
            return
        self.on_write(q, value)
