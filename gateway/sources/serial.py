"""twinedge nodes on a serial line: framed readings in, acks and commands out.

Spec: ``serial:/dev/ttyUSB0?baud=115200`` (query keys optional)::

    baud       bits per second                                   default: profile ``baud`` or 115200
    node       accept only this node id (others count as bad)    default: any node on the line
    gap_after  how long a missing sequence number may take to     default: profile or 30s
               arrive (resent by the node) before it is a gap
    timeout    how long a command waits for the node's answer    default: 3s
    profile    profile name or path when the site gives none     default: twinedge-water-node

The wire protocol is :mod:`edge_node.protocol`, the very module the firmware runs. Every frame
is untrusted: one that fails to decode counts in ``frames_bad`` and is logged with the device,
never ending the iteration. A readings frame is acknowledged (``got``) only once the gateway
has committed its readings to the outbox (``SourceContext.on_commit``), so the node frees a frame
only when it can no longer be lost; the cumulative ``upto`` is never used, because after a
gateway restart nothing tells which older frames the node still holds. A resent frame that
already arrived counts in ``duplicates``, is not yielded again, and is acknowledged again if it
was committed (the first ack was lost); so is a frame the store committed before a gateway
crash whose ack the crash swallowed (``SourceContext.committed``, asked by node, boot and seq:
readings carry the node's ``boot``, so the store marks the frame committed). A
sequence number still missing ``gap_after`` later counts in ``gaps``. A node's hello fills
``device_info`` (node id, firmware, sensors with units and periods); a node heard without one
(the gateway restarted while the node was online) is asked for a hello. Until it tells its boot,
a frame whose seq the store has committed under some boot of that node may be a resend: it is
left with the node (neither taken nor acknowledged; the node resends it) for up to
``HELLO_WAIT``, then taken. Other frames are taken at once, without a boot (so without a mark).
A port that goes away raises :class:`~gateway.errors.SourceError`; the supervisor reopens it
(hot-plug).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

from edge_node import protocol as P
from gateway.errors import ConfigError, SourceError
from gateway.profiles import Profile, QuantitySpec, load_profile
from gateway.readings import Quality, Reading
from gateway.sources import SourceContext, SourceSpec, parse_duration

__all__ = ["NodeState", "SerialSource", "open"]

log = logging.getLogger("twinedge.sources.serial")

MAX_PENDING = 4096  # missing sequence numbers remembered per node
MAX_RX = 1 << 16  # bytes read but not yet decoded; beyond this the oldest are dropped
LOG_EVERY = 5.0  # seconds between warnings about bad frames from one port
HELLO_RETRY = 5.0  # seconds between requests for a hello from a node that has not sent one
HELLO_WAIT = 15.0  # seconds a possible resend waits for its node's hello before it is taken


class NodeState:
    """Sequence bookkeeping for one node boot: what arrived, what is missing, what awaits commit."""

    def __init__(self, boot: int | None, now: float = 0.0) -> None:
        self.boot = boot
        self.heard = now  # when the node was first heard (while its boot is unknown)
        self.base: int | None = None  # first seq heard since the gateway started
        self.high = 0
        self.pending: dict[int, float] = {}  # missing seq -> when it went missing
        self.early: set[int] = set()  # seqs below base that arrived (resends after a restart)
        self.inflight: dict[int, float] = {}  # accepted, readings not yet committed -> since
        self.asked = -math.inf  # when we last asked this node to announce itself

    def accept(self, seq: int, now: float) -> tuple[bool, int]:
        """Record ``seq``; returns (new?, how many seqs were dropped from memory as gaps)."""
        if self.base is None:
            self.base = self.high = seq
            return True, 0
        if seq > self.high:
            lost = 0
            for s in range(self.high + 1, seq):
                if len(self.pending) >= MAX_PENDING:
                    lost += 1
                    continue
                self.pending[s] = now
            self.high = seq
            return True, lost
        if seq in self.pending:
            del self.pending[seq]
            return True, 0
        if seq < self.base and seq not in self.early and len(self.early) < MAX_PENDING:
            self.early.add(seq)
            return True, 0
        return False, 0

    def expire(self, now: float, gap_after: float) -> int:
        """Give up on sequence numbers missing for longer than ``gap_after``; returns how many."""
        expired = 0
        for seq, since in list(self.pending.items()):
            if now - since < gap_after:
                break  # insertion order is time order
            del self.pending[seq]
            expired += 1
        return expired


class SerialSource:
    """One serial port with one (or several, addressed by node id) twinedge nodes."""

    def __init__(self, spec: SourceSpec, ctx: SourceContext, profile: Profile) -> None:
        profile.require_transport("serial", "serial")
        self.ctx = ctx
        self.profile = profile
        self.port = spec.target
        self.device = f"serial:{self.port}"
        self.baud = _int_param(spec, profile, "baud", 115200)
        self.only_node = spec.param("node")
        self.gap_after = parse_duration(
            spec.params.get("gap_after", str(profile.settings.get("gap_after", "30s"))),
            key="gap_after",
        )
        self.timeout = parse_duration(spec.params.get("timeout", "3s"), key="timeout")
        self.fields = _field_map(profile)
        self.nodes: dict[str, NodeState] = {}
        self.node: str | None = None  # the node last heard; commands go to it
        self._serial: Any = None
        self._fd = -1
        self._rx = bytearray()
        self._rx_event = asyncio.Event()
        self._gone: str | None = None
        self._splitter = P.FrameSplitter()
        self._cmd_seq = 0
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._unknown_fields: set[str] = set()
        ctx.on_commit = self._committed  # acks go out once the readings are in the store
        self._bad_since_log = 0
        self._last_log = 0.0
        self.write_drops = 0

    async def __aenter__(self) -> Self:
        import serial  # pyserial

        if not os.path.exists(self.port):
            raise SourceError(self.device, "serial port not found")
        try:
            self._serial = serial.Serial(self.port, self.baud, timeout=0, exclusive=True)
        except (OSError, ValueError, serial.SerialException) as e:
            raise SourceError(self.device, f"cannot open serial port: {e}") from None
        self._fd = self._serial.fileno()
        os.set_blocking(self._fd, False)
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)
        self.ctx.device_info.update({"transport": "serial", "port": self.port, "baud": self.baud})
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = -1
        if self._serial is not None:
            with contextlib.suppress(OSError):  # the adapter may already be gone
                self._serial.close()
            self._serial = None
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(SourceError(self.device, "port closed"))

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as e:
            data = b""
            self._gone = f"serial port gone: {e.strerror or e}"
        if not data:
            self._gone = self._gone or "serial port gone: end of file"
            asyncio.get_running_loop().remove_reader(self._fd)
        else:
            self._rx += data
            if len(self._rx) > MAX_RX:  # the consumer is stalled: keep the newest bytes
                del self._rx[: len(self._rx) - MAX_RX]
        self._rx_event.set()

    def __aiter__(self) -> AsyncIterator[Reading]:
        return self._read_forever()

    async def _read_forever(self) -> AsyncIterator[Reading]:
        while True:
            await self._rx_event.wait()
            self._rx_event.clear()
            data, self._rx = bytes(self._rx), bytearray()
            overflows = self._splitter.overflows
            frames = self._splitter.feed(data)
            if self._splitter.overflows != overflows:
                self._bad(f"{self._splitter.overflows - overflows} over-long frame(s) dropped")
            now = time.time()
            for frame in frames:
                for reading in self._handle_frame(frame, now):
                    yield reading
            if self._gone is not None:
                raise SourceError(self.device, self._gone)

    def _handle_frame(self, frame: bytes, now: float) -> Iterator[Reading]:
        try:
            msg = P.decode(frame)
        except P.ProtocolError as e:
            self._bad(e.reason, frame)
            return
        node = msg["node"]
        if self.only_node is not None and node != self.only_node:
            self._bad(f"frame from unexpected node {node!r}", frame)
            return
        self.ctx.counters.frames_ok += 1
        kind = msg["type"]
        if kind == "readings":
            yield from self._on_readings(msg, now)
        elif kind == "hello":
            self._on_hello(msg)
        elif kind == "ack":
            self._settle(msg["got"], None)
        elif kind == "error":
            self._on_error(msg)
        else:
            self._bad(f"unexpected {kind} frame from a node", frame)

    def _bad(self, reason: str, frame: bytes = b"") -> None:
        self.ctx.counters.frames_bad += 1
        self._bad_since_log += 1
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY:
            who = f"{self.node}@{self.port}" if self.node else self.device
            log.warning(
                "%s: bad frame (%s); %d bad since last report; first bytes %s",
                who,
                reason,
                self._bad_since_log,
                frame[:16].hex(),
            )
            self._last_log = now
            self._bad_since_log = 0

    def _on_hello(self, msg: dict[str, Any]) -> None:
        node = msg["node"]
        self.node = node
        state = self.nodes.get(node)
        if state is not None and state.boot is None and msg["seq"] >= state.high:
            # heard before its hello: the same boot (it has sent what we heard), keep the books
            # so the frames taken meanwhile are still acknowledged when committed
            state.boot = msg["boot"]
        if state is None or state.boot != msg["boot"]:
            if state is not None:
                gaps = len(state.pending)
                self.ctx.counters.gaps += gaps
                log.info("%s@%s restarted (%d readings frames lost)", node, self.port, gaps)
            state = self.nodes[node] = NodeState(msg["boot"])
        sensors = {n: {"unit": u, "period_s": p / 1000} for n, u, p in msg["sensors"]}
        self.ctx.device_info.update(
            {
                "node": node,
                "firmware": msg["firmware"],
                "period_s": msg["period_ms"] / 1000,
                "sensors": sensors,
                "boot": msg["boot"],
            }
        )
        self._check_units(node, sensors)
        self._send({"type": "ack", "node": node, "seq": 0, "upto": 0, "got": 0})  # "I'm here"

    def _check_units(self, node: str, sensors: Mapping[str, Mapping[str, Any]]) -> None:
        for name, info in sensors.items():
            q = self.fields.get(name)
            if q is not None and info["unit"] != q.unit:
                log.warning(
                    "%s@%s: sensor %s reports unit %s but profile %s expects %s",
                    node, self.port, name, info["unit"], self.profile.name, q.unit,
                )  # fmt: skip

    def _on_readings(self, msg: dict[str, Any], now: float) -> Iterator[Reading]:
        node, seq = msg["node"], msg["seq"]
        self.node = node
        state = self.nodes.get(node)
        if state is None:
            state = self.nodes[node] = NodeState(None, now)
        if state.boot is None:
            if now - state.asked >= HELLO_RETRY:
                state.asked = now  # readings from a node whose hello we missed: ask for one
                self._cmd_seq += 1
                self._send({"type": "command", "node": node, "seq": self._cmd_seq,
                            "command": "hello"})  # fmt: skip
            if now - state.heard < HELLO_WAIT and self._stored_before(node, None, seq):
                # maybe a resend of a frame committed before a crash; its boot will tell:
                # leave it with the node (no ack), which resends it after its hello
                return
        new, lost = state.accept(seq, now)
        self.ctx.counters.gaps += lost + state.expire(now, self.gap_after)
        if new and state.boot is not None and self._stored_before(node, state.boot, seq):
            self.ctx.counters.duplicates += 1
            self._ack(node, seq)  # a resend of what the store committed before a crash
            return
        if not new:
            self.ctx.counters.duplicates += 1
            since = state.inflight.get(seq)
            if since is None:
                self._ack(node, seq)  # committed before: our first ack was lost
                return
            if now - since < self.gap_after:
                return  # its readings are on their way to the store: that commit acks it
            log.warning("%s@%s: frame %d never reached the store; taking it again",
                        node, self.port, seq)  # fmt: skip
        made = (
            self._reading(node, state.boot, seq, name, raw, msg["time"], now)
            for name, raw in msg["values"]
        )
        readings = [r for r in made if r is not None]
        if not readings:
            self._ack(node, seq)  # nothing to store, nothing to lose
            return
        state.inflight[seq] = now
        yield from readings

    def _stored_before(self, node: str, boot: int | None, seq: int) -> bool:
        """Whether the store committed frame ``seq`` of ``node`` in its boot ``boot`` (any boot it
        remembers if None) before this gateway process heard it."""
        if self.ctx.committed is None or not self.ctx.committed(node, boot, seq):
            return False
        if boot is None:
            log.debug("%s@%s: frame %d may be a resend; left with the node until its hello",
                      node, self.port, seq)  # fmt: skip
        else:
            log.debug("%s@%s: frame %d (boot %d) was committed before; acknowledged again, "
                      "not stored again", node, self.port, seq, boot)  # fmt: skip
        return True

    def _ack(self, node: str, seq: int) -> None:
        self._send({"type": "ack", "node": node, "seq": 0, "upto": 0, "got": seq})

    def _committed(self, node: str, seq: int) -> None:
        """The gateway stored this frame's readings: now the node may free it."""
        state = self.nodes.get(node)
        if state is not None and state.inflight.pop(seq, None) is not None:
            self._ack(node, seq)

    def _reading(
        self,
        node: str,
        boot: int | None,
        seq: int,
        name: str,
        raw: float,
        t: float | None,
        now: float,
    ) -> Reading | None:
        q = self.fields.get(name)
        if q is None:
            if name not in self._unknown_fields:
                self._unknown_fields.add(name)
                self.ctx.device_info["unknown_fields"] = sorted(self._unknown_fields)
                log.warning(
                    "%s@%s: sensor %r is not in profile %s; ignored",
                    node, self.port, name, self.profile.name,
                )  # fmt: skip
            return None
        value = q.convert(raw)
        quality = q.quality(value)
        if quality is Quality.SUSPECT:
            self.ctx.counters.out_of_range += 1
        return Reading(
            asset=self.ctx.asset,
            quantity=q.name,
            value=value,
            unit=q.unit,
            received_at=now,
            observed_at=t,
            quality=quality,
            device=node,
            seq=seq,
            boot=boot,
        )

    def _on_error(self, msg: dict[str, Any]) -> None:
        text = f"node error {msg['code']}: {msg['text']}"
        if msg["ref"] in self._waiting:
            self._settle(msg["ref"], text)
            return
        self.ctx.device_info["last_error"] = msg["text"]
        log.warning("%s@%s: %s", msg["node"], self.port, text)

    def _settle(self, cmd_seq: int, error: str | None) -> None:
        fut = self._waiting.get(cmd_seq)
        if fut is None or fut.done():
            return
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(ConfigError(f"command to {self.node}", "args", "accepted", error))

    def _send(self, msg: dict[str, Any]) -> None:
        if self._fd < 0:
            return
        data = P.encode(msg)
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        except OSError as e:
            self._gone = f"serial port gone: {e.strerror or e}"
            self._rx_event.set()
            return
        if n < len(data):  # the output queue is full: the node resends what an ack misses
            self.write_drops += 1

    async def command(self, name: str, args: Mapping[str, Any]) -> None:
        """Send ``set-period`` (``period``, ``sensor``), ``identify`` (``seconds``), ``reboot``
        ``set-config`` (``key``, ``value``) or ``hello`` to the node and wait for it to confirm."""
        if self.node is None or self._fd < 0:
            raise SourceError(self.device, "no node has announced itself on this port yet")
        name = name.replace("_", "-")  # the app says set_period, the wire says set-period
        self._cmd_seq += 1
        cmd_seq = self._cmd_seq
        msg: dict[str, Any] = {"type": "command", "node": self.node, "seq": cmd_seq}
        msg["command"] = name
        msg.update(_command_args(name, args, self.device))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[cmd_seq] = fut
        try:
            self._send(msg)
            async with asyncio.timeout(self.timeout):
                await fut
        except TimeoutError:
            raise SourceError(self.device, f"node {self.node} did not confirm {name}") from None
        finally:
            del self._waiting[cmd_seq]


def _command_args(name: str, args: Mapping[str, Any], device: str) -> dict[str, Any]:
    where = f"command {name} to {device}"
    if name == "set-period":
        seconds = parse_duration(args.get("period", ""), file=where, key="period")
        return {"sensor": str(args.get("sensor", "")), "period_ms": max(1, round(seconds * 1000))}
    if name == "identify":
        seconds = args.get("seconds", 10)
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 < seconds < 65536:
            raise ConfigError(where, "seconds", "a whole number of seconds (1-65535)", seconds)
        return {"seconds": seconds}
    if name == "reboot":
        return {}
    if name == "set-config":
        key = args.get("key")
        if not isinstance(key, str) or not key:
            raise ConfigError(where, "key", "a config key such as 'buffer_frames'", key)
        return {"key": key, "value": json.dumps(args.get("value"))}
    raise ConfigError(where, "name", f"one of {sorted(P.COMMAND_CODES)}", name)


def _field_map(profile: Profile) -> dict[str, QuantitySpec]:
    """Sensor name in the node's frames -> quantity (``field`` key, else the quantity name)."""
    out = {}
    for q in profile.quantities.values():
        field = q.fields.get("field", q.name)
        if not isinstance(field, str):
            raise ConfigError(profile.file, f"quantities.{q.name}.field", "a sensor name", field)
        out[field] = q
    return out


def _int_param(spec: SourceSpec, profile: Profile, key: str, default: int) -> int:
    raw = spec.param(key, str(profile.settings.get(key, default)))
    try:
        value = int(str(raw))
    except ValueError:
        raise ConfigError(spec.raw, key, "a whole number", raw) from None
    if value <= 0:
        raise ConfigError(spec.raw, key, "a positive number", raw)
    return value


def open(spec: SourceSpec, ctx: SourceContext) -> SerialSource:
    """The :func:`gateway.sources.open_source` entry point for the ``serial`` scheme."""
    profile = ctx.profile
    if profile is None:
        profile = load_profile(spec.params.get("profile", "twinedge-water-node"))
    return SerialSource(spec, ctx, profile)
