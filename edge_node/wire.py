"""The node's half of the wire protocol: framing, and the messages a node sends and receives.

:mod:`edge_node.protocol` is the whole contract (docs/wire-protocol.md) and is built on this
module: framing (CRC-16, COBS, delimiters, :class:`FrameSplitter`) and the codecs of the
messages a node sends (hello, readings, ack, error) and receives (ack, command) live here, the
gateway's half (sending commands, reading hello/readings/error) in ``protocol``. A node imports
only this module: every module costs heap on a board, and the shared vectors
(``edge_node/vectors.json``) run through both. Messages are dicts, as in ``protocol``.
"""

import struct
import sys

from edge_node.compat import const

TYPE_CHECKING = False  # mypy treats this name as True; MicroPython never evaluates annotations
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Msg = dict[str, Any]

_VERSION = const(1)
_MAX_BODY = const(250)
_MAX_FRAME = const(256)  # COBS overhead for MAX_BODY plus the delimiter fits
_MAX_NAME = const(24)
_HELLO = const(1)
_READINGS = const(2)
_ACK = const(3)
_COMMAND = const(4)
_ERROR = const(5)
_CMD_SET_PERIOD = const(1)
_CMD_IDENTIFY = const(2)
_CMD_SET_CONFIG = const(4)
_FLAG_TIME = const(1)

TYPE_NAMES = ("hello", "readings", "ack", "command", "error")  # message type codes 1..5
COMMAND_NAMES = ("set-period", "identify", "reboot", "set-config", "hello")  # command codes 1..5


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


if sys.implementation.name == "micropython":

    def crc16(data: "bytes | bytearray | memoryview") -> int:
        """CRC-16/CCITT-FALSE of ``data``."""
        crc = 0xFFFF
        t = _NIBBLE
        for b in data:
            crc = ((crc << 4) & 0xFFFF) ^ t[(crc >> 12) ^ (b >> 4)]
            crc = ((crc << 4) & 0xFFFF) ^ t[(crc >> 12) ^ (b & 0x0F)]
        return crc

else:  # CPython: binascii's crc_hqx, in C
    from edge_node.cpython import crc16


def cobs_encode(data: "bytes | bytearray", delimit: bool = False) -> bytes:
    """COBS-encode ``data`` (no zero bytes in the result); ``delimit`` adds a 0x00 each side.

    One preallocated buffer and one copy: on a node every frame sent goes through here.
    """
    out = bytearray(len(data) + len(data) // 254 + 3)
    o = 1 if delimit else 0  # out[0] stays the leading delimiter
    head = o  # where the current block's code byte goes
    o += 1
    code = 1
    for b in data:
        if b:
            out[o] = b
            o += 1
            code += 1
        if not b or code == 0xFF:
            out[head] = code
            head = o
            o += 1
            code = 1
    out[head] = code
    if delimit:
        o += 1  # the trailing delimiter, already 0
    return bytes(memoryview(out)[:o])


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


def put(buf: bytearray, fmt: str, *values: "Any") -> None:
    """Append ``values`` packed with struct format ``fmt`` to a frame body."""
    buf.extend(struct.pack(fmt, *values))


def put_text(buf: bytearray, s: str, limit: int = 255) -> None:
    """Append a text (u8 length + UTF-8) of at most ``limit`` bytes to a frame body."""
    b = s.encode() if isinstance(s, str) else bytes(s)
    if len(b) > limit:
        raise ProtocolError("text longer than %d bytes: %r" % (limit, s))
    buf.append(len(b))
    buf.extend(b)


class Reader:
    """Reads a frame body from ``pos`` on; running short raises ProtocolError."""

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


def checked_int(msg: "Msg", key: str, lo: int, hi: int) -> int:
    """``msg[key]`` (0 if missing) if it is an integer in [lo, hi]; else ProtocolError."""
    v = msg.get(key, 0)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtocolError("%s must be an integer in [%d, %d], got %r" % (key, lo, hi, v))
    return v


def _enc_hello(buf: bytearray, msg: "Msg") -> None:
    put(buf, "<I", checked_int(msg, "boot", 0, 0xFFFFFFFF))
    put_text(buf, msg.get("firmware", ""), 32)
    put(buf, "<I", checked_int(msg, "period_ms", 0, 0xFFFFFFFF))
    sensors = msg.get("sensors", [])
    put(buf, "<B", len(sensors))
    for name, unit, period_ms in sensors:
        put_text(buf, name, _MAX_NAME)
        put_text(buf, unit, 8)
        put(buf, "<I", period_ms)


def _enc_readings(buf: bytearray, msg: "Msg") -> None:
    t = msg.get("time")
    if t is None:
        buf.append(0)
    else:
        ms = round(t * 1000)
        put(buf, "<BIH", _FLAG_TIME, ms // 1000, ms % 1000)
    values = msg.get("values", [])
    if len(values) > 255:
        raise ProtocolError("too many values in one frame")
    buf.append(len(values))
    for name, value in values:
        put_text(buf, name, _MAX_NAME)
        put(buf, "<f", value)


def _enc_ack(buf: bytearray, msg: "Msg") -> None:
    put(buf, "<II", checked_int(msg, "upto", 0, 0xFFFFFFFF), checked_int(msg, "got", 0, 0xFFFFFFFF))


def _enc_error(buf: bytearray, msg: "Msg") -> None:
    put(buf, "<BI", checked_int(msg, "code", 0, 255), checked_int(msg, "ref", 0, 0xFFFFFFFF))
    put_text(buf, msg.get("text", ""), 160)


def _dec_ack(r: Reader, msg: "Msg") -> None:
    msg["upto"], msg["got"] = r.unpack("<II", 8)


def _dec_command(r: Reader, msg: "Msg") -> None:
    code = r.byte()
    if not 1 <= code <= len(COMMAND_NAMES):
        raise ProtocolError("unknown command code %d" % code)
    msg["command"] = COMMAND_NAMES[code - 1]
    if code == _CMD_SET_PERIOD:
        msg["sensor"] = r.text()
        msg["period_ms"] = r.unpack("<I", 4)[0]
    elif code == _CMD_IDENTIFY:
        msg["seconds"] = r.unpack("<H", 2)[0]
    elif code == _CMD_SET_CONFIG:
        msg["key"] = r.text()
        msg["value"] = r.text()


#: type code -> payload codec, for the messages a node sends and receives
ENCODERS = {_HELLO: _enc_hello, _READINGS: _enc_readings, _ACK: _enc_ack, _ERROR: _enc_error}
DECODERS = {_ACK: _dec_ack, _COMMAND: _dec_command}

if TYPE_CHECKING:
    Encoders = dict[int, Callable[[bytearray, Msg], None]]
    Decoders = dict[int, Callable[[Reader, Msg], None]]


def encode_body(msg: "Msg", encoders: "Encoders | None" = None) -> bytes:
    """Message dict -> frame body with CRC (not yet COBS-encoded)."""
    name = msg.get("type")
    code = TYPE_NAMES.index(name) + 1 if name in TYPE_NAMES else 0
    enc = (encoders or ENCODERS).get(code)
    if enc is None:
        raise ProtocolError("unknown message type %r" % (name,))
    buf = bytearray((_VERSION, code))
    put_text(buf, msg.get("node", ""), _MAX_NAME)
    put(buf, "<I", checked_int(msg, "seq", 0, 0xFFFFFFFF))
    enc(buf, msg)
    put(buf, "<H", crc16(buf))
    if len(buf) > _MAX_BODY:
        raise ProtocolError("frame body of %d bytes exceeds %d" % (len(buf), _MAX_BODY))
    return bytes(buf)


def encode(msg: "Msg", encoders: "Encoders | None" = None) -> bytes:
    """Message dict -> bytes for the wire: ``00 COBS(body) 00``.

    The leading delimiter ends any garbage the line picked up before the frame, so one burst
    of noise costs at most the frame it hit; empty frames between delimiters are ignored.
    """
    return cobs_encode(encode_body(msg, encoders), True)


def decode_body(body: bytes, decoders: "Decoders | None" = None) -> "Msg":
    """Frame body (COBS already undone) -> message dict; raises ProtocolError.

    A type with no payload decoder in ``decoders`` (a node's table has ack and command only)
    comes back with its header fields alone: ``type``, ``node``, ``seq``.
    """
    n = len(body)
    if n < 9:
        raise ProtocolError("frame too short (%d bytes)" % n)
    if n > _MAX_BODY:
        raise ProtocolError("frame too long (%d bytes)" % n)
    crc = body[n - 2] | (body[n - 1] << 8)
    if crc16(memoryview(body)[: n - 2]) != crc:
        raise ProtocolError("bad CRC")
    if body[0] != _VERSION:
        raise ProtocolError("unsupported protocol version %d" % body[0])
    code = body[1]
    if not 1 <= code <= len(TYPE_NAMES):
        raise ProtocolError("unknown message type %d" % code)
    r = Reader(memoryview(body)[: n - 2], 2)
    node = r.text()
    msg = {"type": TYPE_NAMES[code - 1], "node": node, "seq": r.unpack("<I", 4)[0]}
    dec = (decoders or DECODERS).get(code)
    if dec is None:
        return msg
    dec(r, msg)
    if r.pos != n - 2:
        raise ProtocolError("%d unexpected bytes after the payload" % (n - 2 - r.pos))
    return msg


def decode(frame: "bytes | bytearray", decoders: "Decoders | None" = None) -> "Msg":
    """One COBS frame (without its 0x00 delimiter) -> message dict; raises ProtocolError."""
    if len(frame) > _MAX_FRAME:
        raise ProtocolError("frame too long (%d bytes)" % len(frame))
    return decode_body(cobs_decode(frame), decoders)


class FrameSplitter:
    """Cuts a byte stream into COBS frames at 0x00 delimiters; resynchronises after garbage.

    ``feed(data)`` returns the complete frames found (delimiters removed). A run longer than
    ``limit`` (MAX_FRAME) bytes without a delimiter is dropped and counted in ``overflows``.
    """

    def __init__(self, limit: int = _MAX_FRAME) -> None:
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
