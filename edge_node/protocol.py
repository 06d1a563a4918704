"""twinedge wire protocol, version 1: the one contract between nodes and the gateway.

Runs unchanged on MicroPython and CPython (only ``struct`` and bytes; no typing at run time).
Framing and the codecs of the messages a node sends and receives are in :mod:`edge_node.wire`,
which a node imports alone; this module adds the gateway's half and the public names.

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

from edge_node import wire
from edge_node.wire import (
    FrameSplitter,
    ProtocolError,
    Reader,
    checked_int,
    cobs_decode,
    cobs_encode,
    crc16,
    put,
    put_text,
)

TYPE_CHECKING = False  # mypy treats this name as True; MicroPython never evaluates annotations
if TYPE_CHECKING:
    from typing import Any

    Msg = dict[str, Any]

__all__ = [
    "FrameSplitter",
    "ProtocolError",
    "cobs_decode",
    "cobs_encode",
    "crc16",
    "decode",
    "decode_body",
    "encode",
    "encode_body",
]

VERSION = 1
MAX_BODY = 250
MAX_FRAME = 256  # COBS overhead for MAX_BODY plus the delimiter fits
MAX_NAME = 24

HELLO = 1
READINGS = 2
ACK = 3
COMMAND = 4
ERROR = 5
TYPES = {i + 1: name for i, name in enumerate(wire.TYPE_NAMES)}
TYPE_CODES = {v: k for k, v in TYPES.items()}

CMD_SET_PERIOD = 1
CMD_IDENTIFY = 2
CMD_REBOOT = 3
CMD_SET_CONFIG = 4
CMD_HELLO = 5
COMMANDS = {i + 1: name for i, name in enumerate(wire.COMMAND_NAMES)}
COMMAND_CODES = {v: k for k, v in COMMANDS.items()}

# error codes
E_BAD_COMMAND = 1
E_BAD_VALUE = 2
E_SENSOR = 3
E_BUFFER_OVERFLOW = 4

_FLAG_TIME = 1


def _enc_command(buf: bytearray, msg: "Msg") -> None:
    name = msg.get("command")
    code = COMMAND_CODES.get(str(name))
    if code is None:
        raise ProtocolError(f"unknown command {name!r}")
    buf.append(code)
    if code == CMD_SET_PERIOD:
        put_text(buf, msg.get("sensor", ""), MAX_NAME)
        put(buf, "<I", checked_int(msg, "period_ms", 1, 0xFFFFFFFF))
    elif code == CMD_IDENTIFY:
        put(buf, "<H", checked_int(msg, "seconds", 0, 0xFFFF))
    elif code == CMD_SET_CONFIG:
        put_text(buf, msg.get("key", ""), MAX_NAME)
        put_text(buf, msg.get("value", ""), 160)


def _dec_hello(r: Reader, msg: "Msg") -> None:
    msg["boot"] = r.unpack("<I", 4)[0]
    msg["firmware"] = r.text()
    msg["period_ms"] = r.unpack("<I", 4)[0]
    sensors = []
    for _ in range(r.byte()):
        name = r.text()
        unit = r.text()
        sensors.append([name, unit, r.unpack("<I", 4)[0]])
    msg["sensors"] = sensors


def _dec_readings(r: Reader, msg: "Msg") -> None:
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


def _dec_error(r: Reader, msg: "Msg") -> None:
    msg["code"], msg["ref"] = r.unpack("<BI", 5)
    msg["text"] = r.text()


_ENCODERS: "wire.Encoders" = dict(wire.ENCODERS)
_ENCODERS[COMMAND] = _enc_command
_DECODERS: "wire.Decoders" = dict(wire.DECODERS)
_DECODERS.update({HELLO: _dec_hello, READINGS: _dec_readings, ERROR: _dec_error})


def encode_body(msg: "Msg") -> bytes:
    """Message dict -> frame body with CRC (not yet COBS-encoded)."""
    return wire.encode_body(msg, _ENCODERS)


def encode(msg: "Msg") -> bytes:
    """Message dict -> bytes for the wire: ``00 COBS(body) 00``.

    The leading delimiter ends any garbage the line picked up before the frame, so one burst
    of noise costs at most the frame it hit; empty frames between delimiters are ignored.
    """
    return wire.encode(msg, _ENCODERS)


def decode_body(body: bytes) -> "Msg":
    """Frame body (COBS already undone) -> message dict; raises ProtocolError."""
    return wire.decode_body(body, _DECODERS)


def decode(frame: "bytes | bytearray") -> "Msg":
    """One COBS frame (without its 0x00 delimiter) -> message dict; raises ProtocolError."""
    return wire.decode(frame, _DECODERS)
