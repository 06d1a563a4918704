"""Bounded buffer of readings frames the gateway has not acknowledged yet."""

import gc

from edge_node.compat import ticks_diff, ticks_ms

_mem_free = getattr(gc, "mem_free", None)  # MicroPython: the heap bounds the buffer too


class SendBuffer:
    """Encoded frames kept by sequence number until the gateway acknowledges them.

    When full, the oldest frame is dropped and counted in ``dropped`` (the gateway sees the
    gap by sequence number). On MicroPython it is also full when less than ``reserve`` bytes of
    heap would be left after a collection: a node whose gateway is away for long loses its
    oldest readings, never its heap. ``due(resend_ms)`` lists frames sent longer ago than
    ``resend_ms``. Three parallel lists (seq, frame, when last sent or None), oldest first.
    """

    def __init__(self, capacity, reserve=4096):
        if capacity < 1:
            raise ValueError("buffer capacity must be at least 1")
        self.capacity = capacity
        self.reserve = reserve
        self._seqs = []  # ascending
        self._frames = []
        self._sent = []
        self.dropped = 0

    def __len__(self):
        return len(self._seqs)

    def add(self, seq, frame, sent):
        while self._seqs and (len(self._seqs) >= self.capacity or self._heap_low()):
            self._drop(0)
            self.dropped += 1
        self._seqs.append(seq)
        self._frames.append(frame)
        self._sent.append(ticks_ms() if sent else None)

    def _heap_low(self):
        if _mem_free is None or _mem_free() >= self.reserve:
            return False
        gc.collect()
        return _mem_free() < self.reserve

    def _drop(self, i):
        self._seqs.pop(i)
        self._frames.pop(i)
        self._sent.pop(i)

    def ack(self, upto, got):
        """Free every frame with seq <= ``upto`` and the frame ``got``; returns how many."""
        n = self._find(upto + 1)  # frames before it have seq <= upto
        if n:
            del self._seqs[:n]
            del self._frames[:n]
            del self._sent[:n]
        i = self._find(got)
        if got > upto and i < len(self._seqs) and self._seqs[i] == got:
            self._drop(i)
            n += 1
        return n

    def _find(self, seq):
        """Index of the first frame whose seq is >= ``seq`` (binary search)."""
        lo, hi = 0, len(self._seqs)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._seqs[mid] < seq:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def due(self, resend_ms, limit):
        """Up to ``limit`` (seq, frame) pairs never sent or sent more than ``resend_ms`` ago."""
        now = ticks_ms()
        out = []
        for i in range(len(self._seqs)):
            sent = self._sent[i]
            if sent is None or ticks_diff(now, sent) >= resend_ms:
                out.append((self._seqs[i], self._frames[i]))
                if len(out) >= limit:
                    break
        return out

    def mark_sent(self, seq):
        i = self._find(seq)
        if i < len(self._seqs) and self._seqs[i] == seq:
            self._sent[i] = ticks_ms()

    def oldest(self):
        return self._seqs[0] if self._seqs else 0
