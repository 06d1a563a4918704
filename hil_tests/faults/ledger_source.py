"""Gateway-side driver of the ledger devices: ``ledger:HOST:PORT``.

A ledger device (:class:`hil_tests.faults.ledger.LedgerDevice`) lives outside the gateway process
and speaks the node wire protocol (:mod:`edge_node.protocol`: COBS frames with CRC, hello,
readings, ack) over TCP instead of a UART. This driver turns each value of a readings frame into
one Reading and acknowledges a frame only from ``SourceContext.on_commit``, that is after the
gateway committed it to the outbox, one frame per ack (a frame below a committed one may have
been refused by a full disk); the device keeps every unacknowledged frame and resends it on the
next connection and when it stays unacknowledged for a while. A resent frame that the store's
record of committed frames (``SourceContext.committed``, by node, boot and seq; readings carry
the boot) holds is acknowledged again, counted as a duplicate and not stored twice: its ack was
lost with a connection or with a gateway killed between commit and ack. A resent frame still on
its way to the store is ignored; one refused by the store is taken again, as the serial source
does.

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

#: per gateway process, per (asset, node boot): the highest frame seq yielded, and the frames
#: yielded whose readings are not committed yet (-> when). They outlive one connection.
_YIELDED: dict[tuple[str, int], int] = {}
_INFLIGHT: dict[tuple[str, int], dict[int, float]] = {}
_BOOT: dict[str, int] = {}  # asset -> boot of the node last heard
_WRITER: dict[str, asyncio.StreamWriter] = {}  # asset -> its current connection
#: a frame yielded this long ago and still not committed was refused (a full disk): a resend of
#: it is taken again. Until then a resend is on its way to the store already and is ignored.
RETAKE_S = 10.0


def _send_ack(asset: str, seq: int) -> None:
    """Acknowledge one frame (``got``), as the serial source does: never a run of frames, since
    a frame below a committed one may have been refused by a full disk."""
    w = _WRITER.get(asset)
    if w is not None and not w.is_closing():
        w.write(protocol.encode({"type": "ack", "node": "gw", "seq": 0, "upto": 0, "got": seq}))


def _committer(asset: str) -> Callable[[str, int], None]:
    def committed(device: str, seq: int) -> None:
        inflight = _INFLIGHT.get((asset, _BOOT.get(asset, 0)), {})
        if inflight.pop(seq, None) is not None:
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
            self.ctx.device_info.update(firmware=msg["firmware"], node=msg["node"])
            return []
        if msg["type"] != "readings":
            return []
        key, seq, now = (self.ctx.asset, self.boot), msg["seq"], time.time()
        committed = self.ctx.committed
        if committed is not None and committed(msg["node"], self.boot, seq):
            # in the store already, its ack lost (with a connection, or with a crashed gateway
            # process): acknowledge again, do not store
            self.ctx.counters.duplicates += 1
            if seq > _YIELDED.get(key, 0):  # committed by an earlier gateway process
                log.info("%s: frame %d (boot %d) %s", self.ctx.asset, seq, self.boot, RESEND_LOG)
            _send_ack(self.ctx.asset, seq)
            return []
        inflight = _INFLIGHT.setdefault(key, {})
        since = inflight.get(seq)
        if since is not None:
            self.ctx.counters.duplicates += 1
            if now - since < RETAKE_S:
                return []  # on its way to the store: that commit acknowledges it
            log.warning("%s: frame %d never reached the store; taking it again", self.ctx.asset,
                        seq)  # fmt: skip
        inflight[seq] = now
        _YIELDED[key] = max(_YIELDED.get(key, 0), seq)
        self.ctx.counters.frames_ok += 1
        return [
            Reading(self.ctx.asset, name, value, "C62", now, msg["time"], Quality.GOOD,
                    msg["node"], seq, boot=self.boot)
            for name, value in msg["values"]
        ]  # fmt: skip


def open(spec: SourceSpec, ctx: SourceContext) -> LedgerSource:
    return LedgerSource(spec, ctx)
