"""Bounded buffer of readings frames the gateway has not acknowledged yet."""

import gc

from edge_node.compat import ticks_diff, ticks_ms

_mem_free = getattr(gc, "mem_free", None)  # MicroPython: the heap bounds the buffer too


class SendBuffer:
    """Encoded frames kept by sequence number until the gateway acknowledges them.

    When full, the oldest frame is dropped and counted in ``dropped`` (the gateway sees the
    gap by sequence number). On MicroPython it is also full when less than ``reserve`` bytes of
    heap would be left after a collection: a node whose gateway is away for long loses its
    oldest readings, not its heap. ``due(resend_ms)`` lists frames sent longer ago than
    ``resend_ms``. Entries are ``[seq, frame, when last sent or None]``, oldest first; adding
    one is a single append, so a MemoryError leaves the buffer as it was.
    """

    def __init__(self, capacity, reserve=4096):
        if capacity < 1:
            raise ValueError("buffer capacity must be at least 1")
        self.capacity = capacity
        self.reserve = reserve
        self._entries = []  # ascending seq
        self.dropped = 0

    def __len__(self):
        return len(self._entries)

    def add(self, seq, frame, sent):
        while self._entries and (len(self._entries) >= self.capacity or self._heap_low()):
            self.shed(1)
        self._entries.append([seq, frame, ticks_ms() if sent else None])

    def shed(self, n):
        """Drop the ``n`` oldest frames (counted in ``dropped``) to make room."""
        n = min(n, len(self._entries))
        del self._entries[:n]
        self.dropped += n

    def _heap_low(self):
        if _mem_free is None or _mem_free() >= self.reserve:
            return False
        gc.collect()
        return _mem_free() < self.reserve

    def ack(self, upto, got):
        """Free every frame with seq <= ``upto`` and the frame ``got``; returns how many."""
        n = self._find(upto + 1)  # frames before it have seq <= upto
        del self._entries[:n]
        i = self._find(got)
        if got > upto and i < len(self._entries) and self._entries[i][0] == got:
            del self._entries[i]
            n += 1
        return n

    def _find(self, seq):
        """Index of the first frame whose seq is >= ``seq`` (binary search)."""
        lo, hi = 0, len(self._entries)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._entries[mid][0] < seq:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def due(self, resend_ms, limit):
        """Up to ``limit`` (seq, frame) pairs never sent or sent more than ``resend_ms`` ago."""
        now = ticks_ms()
        out = []
        for seq, frame, sent in self._entries:
            if sent is None or ticks_diff(now, sent) >= resend_ms:
                out.append((seq, frame))
                if len(out) >= limit:
                    break
        return out

    def mark_sent(self, seq):
        i = self._find(seq)
        if i < len(self._entries) and self._entries[i][0] == seq:
            self._entries[i][2] = ticks_ms()

    def oldest(self):
        return self._entries[0][0] if self._entries else 0
