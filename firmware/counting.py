"""People counting with two break beams (or PIR zones) on pin interrupts."""

from edge_node.compat import ticks_diff, ticks_ms


class BeamCounter:
    """Counts people crossing two break beams (or PIR zones) A then B ("in") or B then A ("out").

    Pin interrupts only stamp the time; direction is decided in ``read_in``/``read_out`` so the
    ISR stays tiny. A beam blocked for longer than ``blocked_ms`` raises OSError (tamper).
    """

    def __init__(self, pin_a, pin_b, trigger, window_ms=800, blocked_ms=30000):
        self.pin_a = pin_a
        self.pin_b = pin_b
        self.window_ms = window_ms
        self.blocked_ms = blocked_ms
        self.count_in = 0
        self.count_out = 0
        self._a = None
        self._b = None
        self._blocked_since = None
        pin_a.irq(trigger=trigger, handler=self._on_a)
        pin_b.irq(trigger=trigger, handler=self._on_b)

    def _on_a(self, pin):
        now = ticks_ms()
        if self._b is not None and ticks_diff(now, self._b) <= self.window_ms:
            self.count_out += 1
            self._b = None
        else:
            self._a = now

    def _on_b(self, pin):
        now = ticks_ms()
        if self._a is not None and ticks_diff(now, self._a) <= self.window_ms:
            self.count_in += 1
            self._a = None
        else:
            self._b = now

    def read_in(self):
        self._check_blocked()
        n, self.count_in = self.count_in, 0
        return n

    def _check_blocked(self):
        """Raise OSError when a beam has been interrupted (input low) for ``blocked_ms``."""
        now = ticks_ms()
        if self.pin_a.value() and self.pin_b.value():
            self._blocked_since = None
        elif self._blocked_since is None:
            self._blocked_since = now
        elif ticks_diff(now, self._blocked_since) > self.blocked_ms:
            raise OSError("beam blocked for %d s (tamper?)" % (self.blocked_ms // 1000))

    def read_out(self):
        n, self.count_out = self.count_out, 0
        return n
