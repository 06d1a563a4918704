"""Bounded buffer of readings frames the gateway has not acknowledged yet."""

from edge_node.compat import ticks_diff, ticks_ms


class SendBuffer:
    """Encoded frames kept by sequence number until the gateway acknowledges them.

    When full, the oldest frame is dropped and counted in ``dropped`` (the gateway sees the
    gap by sequence number). ``due(resend_ms)`` lists frames sent longer ago than ``resend_ms``.
    """

    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError("buffer capacity must be at least 1")
        self.capacity = capacity
        self._seqs = []  # ascending
        self._frames = {}  # seq -> [frame, last_sent_ticks or None]
        self.dropped = 0

    def __len__(self):
        return len(self._seqs)

    def add(self, seq, frame, sent):
        while len(self._seqs) >= self.capacity:
            old = self._seqs.pop(0)
            del self._frames[old]
            self.dropped += 1
        self._seqs.append(seq)
        self._frames[seq] = [frame, ticks_ms() if sent else None]

    def ack(self, upto, got):
        """Free every frame with seq <= ``upto`` and the frame ``got``; returns how many."""
        keep = []
        freed = 0
        for s in self._seqs:
            if s <= upto or s == got:
                del self._frames[s]
                freed += 1
            else:
                keep.append(s)
        self._seqs = keep
        return freed

    def due(self, resend_ms, limit):
        """Up to ``limit`` (seq, frame) pairs never sent or sent more than ``resend_ms`` ago."""
        now = ticks_ms()
        out = []
        for s in self._seqs:
            entry = self._frames[s]
            if entry[1] is None or ticks_diff(now, entry[1]) >= resend_ms:
                out.append((s, entry[0]))
                if len(out) >= limit:
                    break
        return out

    def mark_sent(self, seq):
        entry = self._frames.get(seq)
        if entry is not None:
            entry[1] = ticks_ms()

    def oldest(self):
        return self._seqs[0] if self._seqs else 0
