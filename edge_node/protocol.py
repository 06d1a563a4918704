"""twinedge wire protocol, version 1: the one contract between nodes and the gateway.

Runs unchanged on MicroPython and CPython (only ``struct`` and bytes; no typing at run time).

A frame on the wire is ``00 COBS(body) 00``: zero bytes delimit frames, so a receiver
that joins in the middle, or reads garbage, resynchronises at the next zero. The body is::

    version u8 | type u8 | node_len u8 | node (utf-8) | seq u32 | payload | crc16 u16

little-endian, with CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over everything before it.
A body is at most :data:`MAX_BODY` bytes, an encoded frame at most :data:`MAX_FRAME` bytes.

Messages are plain dicts (``"type"``, ``"node"``, ``"seq"`` plus the fields of their type):

- ``hello``    node -> gw: ``boot`` (u32 random per start), ``firmware``, ``period_ms``,
  ``sensors`` [[name, unit, period_ms], ...]. ``seq`` is the last readings seq sent.
- ``readings`` node -> gw: ``seq`` numbers readings frames 1, 2, ... per boot; ``values``
  [[name, value], ...] as float32; ``time`` (epoch seconds, ms precision) or None.
- ``ack``      gw -> node: ``upto`` (every seq <= upto arrived) and ``got`` (this seq arrived);
  node -> gw: ``got`` is the seq of the command that was carried out (``upto`` 0).
- ``command``  gw -> node, ``seq`` is the command id: ``command`` is ``set-period``
  (``sensor``, "" for all, ``period_ms``), ``identify`` (``seconds``), ``reboot`` or
  ``set-config`` (``key``, ``value`` as JSON text) or ``hello`` (announce yourself again: a
  gateway that (re)started hears readings from a node whose hello it missed).
- ``error``    either way: ``code``, ``ref`` (seq it refers to, 0 if none), ``text``.
"""

import binascii
import struct

TYPE_CHECKING = False  # mypy treats this name as True; MicroPython never evaluates annotations
if TYPE_CHECKING:
    from typing import Any

    Msg = dict[str, Any]

VERSION = 1
MAX_BODY = 250
MAX_FRAME = 256  # COBS overhead for MAX_BODY plus the delimiter fits
MAX_NAME = 24

HELLO = 1
READINGS = 2
ACK = 3
COMMAND = 4
ERROR = 5
TYPES = {HELLO: "hello", READINGS: "readings", ACK: "ack", COMMAND: "command", ERROR: "error"}
TYPE_CODES = {v: k for k, v in TYPES.items()}

CMD_SET_PERIOD = 1
CMD_IDENTIFY = 2
CMD_REBOOT = 3
CMD_SET_CONFIG = 4
CMD_HELLO = 5
COMMANDS = {
    CMD_SET_PERIOD: "set-period",
    CMD_IDENTIFY: "identify",
    CMD_REBOOT: "reboot",
    CMD_SET_CONFIG: "set-config",
    CMD_HELLO: "hello",
}
COMMAND_CODES = {v: k for k, v in COMMANDS.items()}

# error codes
E_BAD_COMMAND = 1
E_BAD_VALUE = 2
E_SENSOR = 3
E_BUFFER_OVERFLOW = 4

_FLAG_TIME = 1


class ProtocolError(ValueError):
    """A frame or message that cannot be decoded or encoded; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# CRC-16/CCITT-FALSE a nibble at a time: a 16-entry table keeps RAM small on the node
_NIBBLE = (
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
    0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF,
)  # fmt: skip


_crc_hqx = getattr(binascii, "crc_hqx", None)  # CPython has it in C; MicroPython does not
if _crc_hqx is not None:
    _hqx = _crc_hqx  # narrowed for the type checker

    def crc16(data: "bytes | bytearray | memoryview") -> int:
        """CRC-16/CCITT-FALSE of ``data``."""
        return int(_hqx(data, 0xFFFF))

else:  # MicroPython

    def crc16(data: "bytes | bytearray | memoryview") -> int:
        """CRC-16/CCITT-FALSE of ``data``."""
        crc = 0xFFFF
        t = _NIBBLE
        for b in data:
            crc = ((crc << 4) & 0xFFFF) ^ t[(crc >> 12) ^ (b >> 4)]
            crc = ((crc << 4) & 0xFFFF) ^ t[(crc >> 12) ^ (b & 0x0F)]
        return crc


def cobs_encode(data: "bytes | bytearray") -> bytes:
    """COBS-encode ``data`` (no zero bytes in the result, no delimiter added)."""
    out = bytearray()
    for part in bytes(data).split(b"\x00"):
        while len(part) >= 254:
            out.append(0xFF)
            out.extend(part[:254])
            part = part[254:]
        out.append(len(part) + 1)
        out.extend(part)
    return bytes(out)


def cobs_decode(data: "bytes | bytearray | memoryview") -> bytes:
    """Undo :func:`cobs_encode`; raises ProtocolError on a malformed block."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ProtocolError("zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise ProtocolError("COBS block runs past the end of the frame")
        out.extend(data[i + 1 : end])
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def pack(self, fmt: str, *values: "Any") -> None:
        self.buf.extend(struct.pack(fmt, *values))

    def text(self, s: str, limit: int = 255) -> None:
        b = s.encode() if isinstance(s, str) else bytes(s)
        if len(b) > limit:
            raise ProtocolError(f"text longer than {limit} bytes: {s!r}")
        self.buf.append(len(b))
        self.buf.extend(b)


class _Reader:
    def __init__(self, data: memoryview, pos: int) -> None:
        self.data = data
        self.pos = pos

    def unpack(self, fmt: str, size: int) -> "tuple[Any, ...]":
        end = self.pos + size
        if end > len(self.data):
            raise ProtocolError("payload truncated")
        values = struct.unpack(fmt, self.data[self.pos : end])
        self.pos = end
        return values

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ProtocolError("payload truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def text(self) -> str:
        n = self.byte()
        end = self.pos + n
        if end > len(self.data):
            raise ProtocolError("payload truncated")
        try:
            s = bytes(self.data[self.pos : end]).decode()
        except UnicodeError:
            raise ProtocolError("text is not UTF-8") from None
        self.pos = end
        return s


def _int(msg: "Msg", key: str, lo: int, hi: int) -> int:
    v = msg.get(key, 0)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtocolError(f"{key} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _enc_hello(w: _Writer, msg: "Msg") -> None:
    w.pack("<I", _int(msg, "boot", 0, 0xFFFFFFFF))
    w.text(msg.get("firmware", ""), 32)
    w.pack("<I", _int(msg, "period_ms", 0, 0xFFFFFFFF))
    sensors = msg.get("sensors", [])
    w.pack("<B", len(sensors))
    for name, unit, period_ms in sensors:
        w.text(name, MAX_NAME)
        w.text(unit, 8)
        w.pack("<I", period_ms)


def _enc_readings(w: _Writer, msg: "Msg") -> None:
    t = msg.get("time")
    if t is None:
        w.pack("<B", 0)
    else:
        ms = round(t * 1000)
        w.pack("<BIH", _FLAG_TIME, ms // 1000, ms % 1000)
    values = msg.get("values", [])
    if len(values) > 255:
        raise ProtocolError("too many values in one frame")
    w.pack("<B", len(values))
    for name, value in values:
        w.text(name, MAX_NAME)
        w.pack("<f", value)


def _enc_ack(w: _Writer, msg: "Msg") -> None:
    w.pack("<II", _int(msg, "upto", 0, 0xFFFFFFFF), _int(msg, "got", 0, 0xFFFFFFFF))


def _enc_command(w: _Writer, msg: "Msg") -> None:
    name = msg.get("command")
    code = COMMAND_CODES.get(str(name))
    if code is None:
        raise ProtocolError(f"unknown command {name!r}")
    w.pack("<B", code)
    if code == CMD_SET_PERIOD:
        w.text(msg.get("sensor", ""), MAX_NAME)
        w.pack("<I", _int(msg, "period_ms", 1, 0xFFFFFFFF))
    elif code == CMD_IDENTIFY:
        w.pack("<H", _int(msg, "seconds", 0, 0xFFFF))
    elif code == CMD_SET_CONFIG:
        w.text(msg.get("key", ""), MAX_NAME)
        w.text(msg.get("value", ""), 160)


def _enc_error(w: _Writer, msg: "Msg") -> None:
    w.pack("<BI", _int(msg, "code", 0, 255), _int(msg, "ref", 0, 0xFFFFFFFF))
    w.text(msg.get("text", ""), 160)


_ENCODERS = {
    HELLO: _enc_hello,
    READINGS: _enc_readings,
    ACK: _enc_ack,
    COMMAND: _enc_command,
    ERROR: _enc_error,
}


def encode_body(msg: "Msg") -> bytes:
    """Message dict -> frame body with CRC (not yet COBS-encoded)."""
    code = TYPE_CODES.get(str(msg.get("type")))
    if code is None:
        raise ProtocolError(f"unknown message type {msg.get('type')!r}")
    w = _Writer()
    w.pack("<BB", VERSION, code)
    w.text(msg.get("node", ""), MAX_NAME)
    w.pack("<I", _int(msg, "seq", 0, 0xFFFFFFFF))
    _ENCODERS[code](w, msg)
    w.pack("<H", crc16(w.buf))
    if len(w.buf) > MAX_BODY:
        raise ProtocolError(f"frame body of {len(w.buf)} bytes exceeds {MAX_BODY}")
    return bytes(w.buf)


def encode(msg: "Msg") -> bytes:
    """Message dict -> bytes for the wire: ``00 COBS(body) 00``.

    The leading delimiter ends any garbage the line picked up before the frame, so one burst
    of noise costs at most the frame it hit; empty frames between delimiters are ignored.
    """
    return b"\x00" + cobs_encode(encode_body(msg)) + b"\x00"


def _dec_hello(r: _Reader, msg: "Msg") -> None:
    msg["boot"] = r.unpack("<I", 4)[0]
    msg["firmware"] = r.text()
    msg["period_ms"] = r.unpack("<I", 4)[0]
    sensors = []
    for _ in range(r.byte()):
        name = r.text()
        unit = r.text()
        sensors.append([name, unit, r.unpack("<I", 4)[0]])
    msg["sensors"] = sensors


def _dec_readings(r: _Reader, msg: "Msg") -> None:
    flags = r.byte()
    if flags & _FLAG_TIME:
        s, ms = r.unpack("<IH", 6)
        if ms > 999:
            raise ProtocolError("time milliseconds out of range")
        msg["time"] = s + ms / 1000
    else:
        msg["time"] = None
    values = []
    for _ in range(r.byte()):
        name = r.text()
        values.append([name, r.unpack("<f", 4)[0]])
    msg["values"] = values


def _dec_ack(r: _Reader, msg: "Msg") -> None:
    msg["upto"], msg["got"] = r.unpack("<II", 8)


def _dec_command(r: _Reader, msg: "Msg") -> None:
    code = r.byte()
    name = COMMANDS.get(code)
    if name is None:
        raise ProtocolError(f"unknown command code {code}")
    msg["command"] = name
    if code == CMD_SET_PERIOD:
        msg["sensor"] = r.text()
        msg["period_ms"] = r.unpack("<I", 4)[0]
    elif code == CMD_IDENTIFY:
        msg["seconds"] = r.unpack("<H", 2)[0]
    elif code == CMD_SET_CONFIG:
        msg["key"] = r.text()
        msg["value"] = r.text()


def _dec_error(r: _Reader, msg: "Msg") -> None:
    msg["code"], msg["ref"] = r.unpack("<BI", 5)
    msg["text"] = r.text()


_DECODERS = {
    HELLO: _dec_hello,
    READINGS: _dec_readings,
    ACK: _dec_ack,
    COMMAND: _dec_command,
    ERROR: _dec_error,
}


def decode_body(body: bytes) -> "Msg":
    """Frame body (COBS already undone) -> message dict; raises ProtocolError."""
    n = len(body)
    if n < 9:
        raise ProtocolError(f"frame too short ({n} bytes)")
    if n > MAX_BODY:
        raise ProtocolError(f"frame too long ({n} bytes)")
    crc = body[n - 2] | (body[n - 1] << 8)
    if crc16(memoryview(body)[: n - 2]) != crc:
        raise ProtocolError("bad CRC")
    if body[0] != VERSION:
        raise ProtocolError(f"unsupported protocol version {body[0]}")
    code = body[1]
    name = TYPES.get(code)
    if name is None:
        raise ProtocolError(f"unknown message type {code}")
    r = _Reader(memoryview(body)[: n - 2], 2)
    node = r.text()
    msg = {"type": name, "node": node, "seq": r.unpack("<I", 4)[0]}
    _DECODERS[code](r, msg)
    if r.pos != n - 2:
        raise ProtocolError(f"{n - 2 - r.pos} unexpected bytes after the payload")
    return msg


def decode(frame: "bytes | bytearray") -> "Msg":
    """One COBS frame (without its 0x00 delimiter) -> message dict; raises ProtocolError."""
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"frame too long ({len(frame)} bytes)")
    return decode_body(cobs_decode(frame))


class FrameSplitter:
    """Cuts a byte stream into COBS frames at 0x00 delimiters; resynchronises after garbage.

    ``feed(data)`` returns the complete frames found (delimiters removed). A run longer than
    :data:`MAX_FRAME` without a delimiter is dropped and counted in ``overflows``.
    """

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.overflows = 0
        self._skipping = False

    def feed(self, data: bytes) -> "list[bytes]":
        frames: list[bytes] = []
        start = 0
        while True:
            z = data.find(b"\x00", start)
            if z < 0:
                self._keep(data[start:])
                return frames
            chunk = data[start:z]
            if self._skipping:
                self._skipping = False
            elif self.buf:
                self.buf.extend(chunk)
                if len(self.buf) <= self.limit:
                    frames.append(bytes(self.buf))
                else:
                    self.overflows += 1
                self.buf = bytearray()
            elif 0 < len(chunk) <= self.limit:
                frames.append(bytes(chunk))
            elif len(chunk) > self.limit:
                self.overflows += 1
            start = z + 1

    def _keep(self, rest: bytes) -> None:
        if self._skipping or not rest:
            return
        self.buf.extend(rest)
        if len(self.buf) > self.limit:
            self.overflows += 1
            self.buf = bytearray()
            self._skipping = True
