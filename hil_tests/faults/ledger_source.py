"""Gateway-side driver of the ledger devices: ``ledger:HOST:PORT``.

A ledger device (:class:`hil_tests.faults.ledger.LedgerDevice`) lives outside the gateway process
and speaks the node wire protocol (:mod:`edge_node.protocol`: COBS frames with CRC, hello,
readings, ack) over TCP instead of a UART. This driver turns each value of a readings frame into
one Reading and acknowledges a frame only from ``SourceContext.on_commit``, that is after the
gateway committed it to the outbox; the device keeps every unacknowledged frame and resends it
on the next connection. Within one gateway process a resent frame is recognised by its node
sequence number and counted as a duplicate; after a gateway crash that memory is gone, and a
frame committed but not yet acknowledged when the gateway died arrives a second time: the
store's record of committed frames (``SourceContext.committed``, by node, boot and seq; readings
carry the boot) tells it apart, so it is acknowledged again, counted as a duplicate and not
stored twice, as the serial source does.

The fault tests register the ``ledger`` scheme in the gateway subprocess through
:mod:`hil_tests.faults.launch`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Self

from edge_node import protocol
from gateway.errors import SourceError
from gateway.readings import Quality, Reading
from gateway.sources import SourceContext, SourceSpec

__all__ = ["RESEND_LOG", "LedgerSource", "open"]

log = logging.getLogger("twinedge.faults.ledger")
RESEND_LOG = "committed before a restart: acknowledged again, not stored"

#: per gateway process, per (asset, node boot): highest frame seq yielded and committed. They
#: outlive one connection: a reading committed while the device is reconnecting is acknowledged
#: on the next connection.
_YIELDED: dict[tuple[str, int], int] = {}
_COMMITTED: dict[tuple[str, int], int] = {}
_BOOT: dict[str, int] = {}  # asset -> boot of the node last heard
_WRITER: dict[str, asyncio.StreamWriter] = {}  # asset -> its current connection


def _send_ack(asset: str, upto: int) -> None:
    w = _WRITER.get(asset)
    if w is not None and not w.is_closing():
        w.write(protocol.encode({"type": "ack", "node": "gw", "seq": 0, "upto": upto, "got": upto}))


def _committer(asset: str) -> Callable[[str, int], None]:
    def committed(device: str, seq: int) -> None:
        key = (asset, _BOOT.get(asset, 0))
        if seq > _COMMITTED.get(key, 0):
            _COMMITTED[key] = seq
            _send_ack(asset, seq)

    return committed


class LedgerSource:
    def __init__(self, spec: SourceSpec, ctx: SourceContext) -> None:
        host, _, port = spec.target.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)
        self.ctx = ctx
        self.boot = 0
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None

    async def __aenter__(self) -> Self:
        try:
            async with asyncio.timeout(2):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as e:
            raise SourceError(self.ctx.asset, f"ledger device {self.port}: {e}") from e
        _WRITER[self.ctx.asset] = self._writer
        self.ctx.on_commit = _committer(self.ctx.asset)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writer is not None:
            if _WRITER.get(self.ctx.asset) is self._writer:
                del _WRITER[self.ctx.asset]
            self._writer.close()

    def __aiter__(self) -> AsyncIterator[Reading]:
        return self._readings()

    async def _readings(self) -> AsyncIterator[Reading]:
        assert self._reader is not None
        splitter = protocol.FrameSplitter()
        counters = self.ctx.counters
        while True:
            try:
                data = await self._reader.read(65536)
            except ConnectionError as e:
                raise SourceError(self.ctx.asset, f"ledger device connection lost: {e}") from e
            if not data:
                raise SourceError(self.ctx.asset, "ledger device closed the connection")
            for frame in splitter.feed(data):
                try:
                    msg = protocol.decode(frame)
                except protocol.ProtocolError:
                    counters.frames_bad += 1
                    continue
                for r in self._take(msg):
                    yield r

    def _take(self, msg: protocol.Msg) -> list[Reading]:
        if msg["type"] == "hello":
            self.boot = _BOOT[self.ctx.asset] = msg["boot"]
            if _COMMITTED.get((self.ctx.asset, self.boot)):  # acks lost with the old connection
                _send_ack(self.ctx.asset, _COMMITTED[(self.ctx.asset, self.boot)])
            self.ctx.device_info.update(firmware=msg["firmware"], node=msg["node"])
            return []
        if msg["type"] != "readings":
            return []
        key, seq = (self.ctx.asset, self.boot), msg["seq"]
        if seq <= _YIELDED.get(key, 0):
            self.ctx.counters.duplicates += 1
            if seq <= _COMMITTED.get(key, 0):
                _send_ack(self.ctx.asset, _COMMITTED[key])  # its ack went to an old connection
            return []
        _YIELDED[key] = seq
        committed = self.ctx.committed
        if committed is not None and committed(msg["node"], self.boot, seq):
            # stored before the gateway crashed, not acknowledged: acknowledge, do not store.
            # (Acks here are cumulative: the store commits a device's frames in order, so
            # everything below a committed frame is committed too, unless a full disk refused it.)
            self.ctx.counters.duplicates += 1
            log.info("%s: frame %d (boot %d) %s", self.ctx.asset, seq, self.boot, RESEND_LOG)
            _COMMITTED[key] = max(_COMMITTED.get(key, 0), seq)
            _send_ack(self.ctx.asset, _COMMITTED[key])
            return []
        self.ctx.counters.frames_ok += 1
        now = time.time()
        return [
            Reading(self.ctx.asset, name, value, "C62", now, msg["time"], Quality.GOOD,
                    msg["node"], seq, boot=self.boot)
            for name, value in msg["values"]
        ]  # fmt: skip


def open(spec: SourceSpec, ctx: SourceContext) -> LedgerSource:
    return LedgerSource(spec, ctx)
