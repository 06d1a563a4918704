"""A ``machine`` module for the MicroPython unix port, so node apps run unchanged in HIL tests.

- ``UART``: a TCP connection to the test harness (``TWINEDGE_UART`` = "host:port"), which relays
  it to a pseudo-terminal the gateway opens. It is the non-blocking socket itself, so
  ``asyncio.StreamReader`` waits in poll(2) on its fd; ``TWINEDGE_NO_FILENO=1`` wraps it in a
  stream without an fd (``spinuart.py``) to measure the busy loop asyncio falls back to.
- ``ADC`` / ``I2C``: values from the JSON file ``TWINEDGE_HW`` that the test writes:
  ``{"adc": {"34": 49995}, "i2c": {"72:0": 2560}, "fail": ["34"]}``.
- ``Pin``, ``WDT``: record what the app does (``TWINEDGE_EVENTS`` gets one line each); the
  BLE apps' ``PWM`` is in ``blehw``.

On a board ``machine`` is part of the firmware (C, in flash); here it takes the app's heap, so
it is kept small: the figures in docs/firmware.md count it.
"""

import json
import os
import socket
import sys

_cache = [None, {}]  # (inode, mtime) of the hw file, its contents


def _hw(kind):
    """The test's hardware values, read again only when the file changed: a board's ADC read
    allocates nothing, so the shim should not fill the heap with garbage either."""
    path = os.getenv("TWINEDGE_HW")
    try:
        st = os.stat(path)
        if (st[1], st[8]) != _cache[0]:  # set_hw replaces the file: a new inode
            with open(path) as f:
                _cache[1] = json.load(f)
            _cache[0] = (st[1], st[8])
    except (OSError, ValueError, TypeError):
        _cache[0], _cache[1] = None, {}
    return _cache[1].get(kind, {})


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


class WDT:
    def __init__(self, id=0, timeout=5000):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


def UART(id, baudrate=115200, tx=None, rx=None, timeout=0):  # a class on a board
    """The UART: a non-blocking socket, whose own fd ``asyncio.StreamReader`` polls."""
    host, port = os.getenv("TWINEDGE_UART").split(":")
    sock = socket.socket()
    sock.connect(socket.getaddrinfo(host, int(port))[0][-1])
    sock.setblocking(False)
    if os.getenv("TWINEDGE_NO_FILENO") == "1":
        from spinuart import SpinUart  # only to measure what a stream without an fd costs

        return SpinUart(sock)
    return sock
