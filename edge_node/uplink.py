"""The serial uplink: readings frames with sequence numbers, a bounded resend buffer, acks,
hello while the gateway is away, and commands from the gateway (see :mod:`edge_node.protocol`).

The gateway acknowledges every readings frame (``got``) and the highest seq below which it
has everything (``upto``). With no frame from the gateway for ``link_timeout_s`` the node
considers it away: readings are only buffered and a hello goes out every ``hello_s``. The
first ack after that brings the node online and every buffered frame is resent, oldest first.
"""

import asyncio
import gc
from random import getrandbits

from edge_node import wire
from edge_node.buffer import SendBuffer
from edge_node.compat import const, ticks_diff, ticks_ms

_RESEND_BURST = const(8)  # frames per housekeeping round, so live readings are not held up
_MAX_BODY = const(250)  # wire.MAX_BODY
_E_BAD_VALUE = const(2)


class SerialUplink:
    def __init__(self, link, config):
        self.link = link
        self.config = config
        self.buffer = SendBuffer(config.get("buffer_frames"))
        self.boot = getrandbits(32)
        self.seq = 0
        self.splitter = wire.FrameSplitter()
        self.last_rx = None
        self.last_hello = None
        self.stats = {"sent": 0, "resent": 0, "acks": 0, "bad_frames": 0, "commands": 0}
        self.node_id = config.get("node_id")

    def online(self):
        if self.last_rx is None:
            return False
        timeout_ms = int(self.config.get("link_timeout_s") * 1000)
        return ticks_diff(ticks_ms(), self.last_rx) < timeout_ms

    def submit(self, values, time):
        """Send ``values`` as readings frames (as many as the frame size needs) and keep each
        frame until the gateway acknowledges it."""
        for chunk in _chunks(values):
            self.seq += 1
            msg = {"type": "readings", "node": self.node_id, "seq": self.seq}
            msg["time"] = time
            msg["values"] = chunk
            live = self.online()
            try:
                frame = self._keep(msg, live)
            except MemoryError:  # a full or fragmented heap: give up the older half, once
                self.buffer.shed(len(self.buffer) // 2 + 1)
                gc.collect()
                frame = self._keep(msg, live)
            if live:
                self.link.write(frame)
                self.stats["sent"] += 1

    def _keep(self, msg, live):
        frame = wire.encode(msg)
        self.buffer.add(msg["seq"], frame, live)
        return frame

    def error(self, code, ref, text):
        msg = {"type": "error", "node": self.node_id, "seq": 0, "code": code, "ref": ref}
        msg["text"] = text[:160]
        self.link.write(wire.encode(msg))

    def hello(self, node):
        msg = node.announcement()
        msg["boot"] = self.boot
        msg["seq"] = self.seq
        self.link.write(wire.encode(msg))
        self.last_hello = ticks_ms()

    async def run(self, node):
        self.hello(node)
        for problem in node.config.problems:
            self.error(_E_BAD_VALUE, 0, problem)
        await asyncio.gather(self._receive(node), self._housekeeping(node))

    async def _receive(self, node):
        while True:
            data = await self.link.read()
            for frame in self.splitter.feed(data):
                try:
                    msg = wire.decode(frame)
                except wire.ProtocolError:
                    self.stats["bad_frames"] += 1
                    continue
                if msg["node"] and msg["node"] != self.node_id:
                    continue  # addressed to another node on a shared line
                await self._handle(node, msg)

    async def _handle(self, node, msg):
        was_online = self.online()
        self.last_rx = ticks_ms()
        kind = msg["type"]
        if kind == "ack":
            self.stats["acks"] += 1
            self.buffer.ack(msg["upto"], msg["got"])
            if not was_online:
                self._resend()  # the gateway is back: resend now
        elif kind == "command":
            self.stats["commands"] += 1
            err = await node.command(msg)
            if err is None:
                reply = {"type": "ack", "node": self.node_id, "seq": 0, "upto": 0}
                reply["got"] = msg["seq"]
                self.link.write(wire.encode(reply))
                if msg["command"] in ("set-period", "set-config", "hello"):
                    self.hello(node)  # (re)announce: new periods, or a gateway that missed it
            else:
                self.error(err[0], msg["seq"], err[1])

    def _resend(self):
        """Send up to a burst of frames that are due (unsent, or unacknowledged for resend_s)."""
        resend_ms = int(self.config.get("resend_s") * 1000)
        for seq, frame in self.buffer.due(resend_ms, _RESEND_BURST):
            self.link.write(frame)
            self.buffer.mark_sent(seq)
            self.stats["resent"] += 1

    async def _housekeeping(self, node):
        tick = min(self.config.get("resend_s"), self.config.get("hello_s")) / 2
        while True:
            if self.online():
                self._resend()
            else:
                hello_ms = int(self.config.get("hello_s") * 1000)
                if self.last_hello is None or ticks_diff(ticks_ms(), self.last_hello) >= hello_ms:
                    self.hello(node)
            await asyncio.sleep(tick)


def _chunks(values):
    """Split ``values`` so that each readings frame stays under the maximum body size."""
    chunk: list = []
    size = 40  # header, node id, time, CRC
    for item in values:
        need = 6 + len(item[0])
        if chunk and size + need > _MAX_BODY:
            yield chunk
            chunk = []
            size = 40
        chunk.append(item)
        size += need
    if chunk:
        yield chunk
