"""A ``bluetooth`` module for the MicroPython unix port: the node app's radio is a bridge.

``BLE()`` connects to the test harness (``TWINEDGE_BLE`` = "host:port") and sends what the app
asks the radio to do as JSON lines; the harness plays it on a bumble device on the emulated air,
so the gateway hears exactly what the firmware broadcasts:

    {"op": "adv", "interval_us": 1000000, "data": "<hex>", "connectable": true}
    {"op": "adv", "interval_us": null}                      (advertising stopped)

    {"op": "services", "services": [[uuid, [[uuid, flags], ...]], ...]}  (value handles 1, 2, ..)
    {"op": "value", "handle": 1, "data": "<hex>"}             (gatts_write: the local value)
    {"op": "notify", "conn": 0, "handle": 1}                  (gatts_notify of the local value)

Like a real controller, ``gap_advertise`` refuses advertising data over the 31-byte legacy
limit with OSError(EINVAL). The harness sends lines back: a central connecting, disconnecting
or writing a characteristic (``connect``/``disconnect``/``write``) become the app's IRQ events
as on a board; anything else (pin edges for the test's Pin fakes) goes to the ``handler`` given
to ``serve(handler)``, which reads the lines in an asyncio task.
"""

import json
import os
import socket
from asyncio import StreamReader  # loaded at boot, before the app fragments the heap
from binascii import hexlify, unhexlify

_EINVAL = 22
_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_LEGACY_ADV_MAX = 31
_ble = None


class UUID:
    def __init__(self, value):
        self.value = value

    def __str__(self):
        return str(self.value)


def BLE():
    """One radio per process, as on a board: ``BLE()`` returns the same object every time."""
    global _ble
    if _ble is None:
        _ble = _Radio()
    return _ble


class _Radio:
    def __init__(self):
        host, port = os.getenv("TWINEDGE_BLE").split(":")
        self.sock = socket.socket()
        self.sock.connect(socket.getaddrinfo(host, int(port))[0][-1])
        self._active = False
        self._irq = None
        self.values = {}  # value handle -> bytes, the local GATT database

    def _send(self, msg):
        data = json.dumps(msg).encode() + b"\n"
        while data:  # blocking socket: a short line always goes out whole
            n = self.sock.write(data)
            data = data[n:]

    def active(self, state=None):
        if state is not None:
            self._active = bool(state)
        return self._active

    def irq(self, handler):
        self._irq = handler

    def config(self, *args, **kw):
        if args == ("mac",):
            return (0, b"\x00\x00\x00\x00\x12\x34")
        return None

    def gap_advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True):
        if not self._active:
            raise OSError(_EINVAL)  # the radio must be active first, as on ESP32
        if interval_us is None:
            self._send({"op": "adv", "interval_us": None})
            return
        data = bytes(adv_data or b"")
        if len(data) > _LEGACY_ADV_MAX or len(resp_data or b"") > _LEGACY_ADV_MAX:
            raise OSError(_EINVAL)  # the controller rejects oversized legacy adverts
        self._send(
            {
                "op": "adv",
                "interval_us": interval_us,
                "data": hexlify(data).decode(),
                "connectable": bool(connectable),
            }
        )

    def gatts_register_services(self, services):
        handles = []
        table = []
        n = len(self.values)
        for uuid, chars in services:
            ids = []
            for _ in chars:
                n += 1
                self.values[n] = b""
                ids.append(n)
            handles.append(tuple(ids))
            table.append([str(uuid), [[str(c[0]), c[1]] for c in chars]])
        self._send({"op": "services", "services": table})
        return tuple(handles)

    def gatts_read(self, handle):
        return self.values[handle]

    def gatts_write(self, handle, data, send_update=False):
        self.values[handle] = bytes(data)
        self._send({"op": "value", "handle": handle, "data": hexlify(data).decode()})

    def gatts_notify(self, conn_handle, value_handle, data=None):
        if data is not None:
            self.gatts_write(value_handle, data)
        self._send({"op": "notify", "conn": conn_handle, "handle": value_handle})

    def _event(self, msg):
        """A central's action relayed by the harness -> the app's IRQ, as the stack would."""
        op = msg["op"]
        if op == "write":
            self.values[msg["handle"]] = unhexlify(msg["data"])
            event, data = _IRQ_GATTS_WRITE, (msg["conn"], msg["handle"])
        elif op == "connect":
            event, data = _IRQ_CENTRAL_CONNECT, (msg["conn"], 1, bytes(6))
        else:
            event, data = _IRQ_CENTRAL_DISCONNECT, (msg["conn"], 1, bytes(6))
        if self._irq is not None:
            self._irq(event, data)


async def serve(handler):
    """Read the harness's lines and call ``handler(message)`` for each (runs until EOF)."""
    ble = BLE()
    stream = StreamReader(ble.sock)
    while True:
        line = await stream.readline()
        if not line:
            raise OSError(5)  # EIO: the harness went away
        msg = json.loads(line)
        if msg["op"] in ("write", "connect", "disconnect"):
            ble._event(msg)
        else:
            handler(msg)
