"""Test helpers that run under CPython (pytest) and MicroPython (mp_runner.py) alike."""

import asyncio

from edge_node import protocol as P


def raises(exc, fn, *args):
    """Call ``fn(*args)``; return the exception of type ``exc`` it raised, or fail."""
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("%s did not raise %s" % (fn, exc.__name__))


class MemoryLine:
    """Both ends of a serial line in memory: the node's link and the test's gateway end."""

    def __init__(self):
        self.to_node = []
        self.node_ready = asyncio.Event()
        self.to_gw = bytearray()
        self.gw_ready = asyncio.Event()
        self.cut = False  # gateway away: bytes from the node are lost
        self.splitter = P.FrameSplitter()
        self.frames = []

    # the node's side (UartLink interface)
    def write(self, data):
        if not self.cut:
            self.to_gw.extend(data)
            self.gw_ready.set()
        return len(data)

    async def read(self):
        while not self.to_node:
            self.node_ready.clear()
            await self.node_ready.wait()
        return self.to_node.pop(0)

    # the gateway's side
    def send(self, msg_or_bytes):
        data = msg_or_bytes if isinstance(msg_or_bytes, bytes) else P.encode(msg_or_bytes)
        self.to_node.append(data)
        self.node_ready.set()

    async def next(self, kind, timeout=5.0, where=None):
        """Wait for the next message of type ``kind`` (optionally matching ``where(msg)``)."""
        return await asyncio.wait_for(self._next(kind, where), timeout)

    async def _next(self, kind, where):
        while True:
            while self.frames:
                msg = P.decode(self.frames.pop(0))
                if msg["type"] == kind and (where is None or where(msg)):
                    return msg
            if self.to_gw:
                self.frames.extend(self.splitter.feed(bytes(self.to_gw)))
                self.to_gw = bytearray()
                continue
            self.gw_ready.clear()
            await self.gw_ready.wait()
