"""A ``machine`` module for the MicroPython unix port, so node apps run unchanged in HIL tests.

- ``UART``: a TCP connection to the test harness (``TWINEDGE_UART`` = "host:port"), which relays
  it to a pseudo-terminal the gateway opens. It is an ``io.IOBase`` stream that answers ioctl
  request 10 (MP_STREAM_GET_FILENO) with the socket's fd, so ``asyncio.StreamReader`` waits in
  poll(2) instead of spinning (``TWINEDGE_NO_FILENO=1`` turns that off to measure the spin).
- ``ADC`` / ``I2C``: values from the JSON file ``TWINEDGE_HW`` that the test writes:
  ``{"adc": {"34": 49995}, "i2c": {"72:0": 2560}, "fail": ["34"]}``.
- ``Pin``, ``PWM``, ``WDT``: record what the app does (``TWINEDGE_EVENTS`` gets one line each).

On a board ``machine`` is part of the firmware (C, in flash); here it takes the app's heap, so
it is kept small: the figures in docs/firmware.md count it.
"""

import io
import json
import os
import socket
import sys


def _hw(kind):
    try:
        with open(os.getenv("TWINEDGE_HW")) as f:
            return json.load(f).get(kind, {})
    except (OSError, ValueError, TypeError):
        return {}


def _event(text):
    path = os.getenv("TWINEDGE_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


def unique_id():
    return b"\x00\x00\x00\x00\x12\x34"


def reset():
    _event("reset")
    sys.exit(99)


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, pin, mode=-1, pull=-1, value=None):
        self.id = pin
        self._value = value or 0

    def value(self, v=None):
        if v is None:
            return self._value
        if v != self._value:
            _event(f"pin {self.id} {v}")
        self._value = v
        return None


class ADC:
    def __init__(self, pin):
        self.key = str(pin.id)

    def read_u16(self):
        if self.key in _hw("fail"):
            return 0  # probe disconnected: the input sits at the rail
        return int(_hw("adc").get(self.key, 32768))


class I2C:
    def __init__(self, id, scl=None, sda=None, freq=100000):
        pass

    def readfrom_mem(self, addr, reg, n):
        value = _hw("i2c").get(f"{addr}:{reg}")
        if value is None:
            raise OSError(19)  # ENODEV: nothing answers at that address
        return bytes([(value >> 8) & 0xFF, value & 0xFF])


class PWM:
    def __init__(self, pin, freq=1000, duty_u16=0):
        self.pin = pin
        self._duty = duty_u16

    def duty_u16(self, v=None):
        if v is None:
            return self._duty
        self._duty = v
        return None


class WDT:
    def __init__(self, id=0, timeout=5000):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class UART(io.IOBase):
    def __init__(self, id, baudrate=115200, tx=None, rx=None, timeout=0):
        host, port = os.getenv("TWINEDGE_UART").split(":")
        self.sock = socket.socket()
        self.sock.connect(socket.getaddrinfo(host, int(port))[0][-1])
        self.sock.setblocking(False)
        self.fileno = os.getenv("TWINEDGE_NO_FILENO") != "1"

    def read(self, n=-1):
        try:
            data = self.sock.recv(n if n > 0 else 256)
        except OSError:
            return None  # nothing waiting, like a real UART
        if not data:
            raise OSError(5)  # EIO: the harness went away
        return data

    def write(self, data):
        try:
            return self.sock.send(data)
        except OSError:
            return 0  # line full or gone: dropped, like bytes on a UART with no listener

    def ioctl(self, req, arg):
        if req == 10 and self.fileno:  # MP_STREAM_GET_FILENO
            return self.sock.fileno()
        if req == 3:  # MP_STREAM_POLL: readable when a poll of the socket says so
            import select

            p = select.poll()
            p.register(self.sock, select.POLLIN)
            return arg & 1 if p.poll(0) else 0
        return -1
