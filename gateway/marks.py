"""Which device frames the store has committed: so a device's resend is not stored twice.

A twinedge node keeps a readings frame until the gateway acknowledges it, and the gateway
acknowledges only after the commit. A gateway killed between its commit and its ack leaves the
frame with the node, which resends it after the restart. So that the gateway counts it once,
every commit also records a *mark* ``(asset, device, boot, seq)`` for each frame it holds (the
outbox writes them in the same SQLite transaction as the rows, see :mod:`gateway.outbox`), and a
source asks :meth:`FrameMarks.committed` before it yields a frame's readings: a resend of a
committed frame is acknowledged again and not stored.

The record is bounded. Per ``(asset, device)`` it keeps the latest :data:`MAX_BOOTS` boots, each
as runs of consecutive seqs (a node numbers its frames 1, 2, ... per boot and sends them in
order, so usually one run), only the :data:`WINDOW` seqs below the highest and at most
:data:`MAX_RUNS` runs; and at most :data:`MAX_DEVICES` devices, the least recently committed
forgotten first. Forgetting is safe: a forgotten frame, if resent, is stored again (a
duplicate), never lost. Claiming a frame that was not committed would lose it, so the record
changes only after the commit (:meth:`FrameMarks.plan`, then :meth:`FrameMarks.apply`).

Thread safety: the outbox plans and applies on its store thread while sources ask from the
event loop; every device's entry is an immutable tuple replaced by one assignment, so a reader
sees the old or the new entry, never half of one. Pure code, no I/O.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MAX_BOOTS", "MAX_DEVICES", "MAX_RUNS", "WINDOW", "FrameMarks", "Mark", "MarkUpdate"]

#: the largest resend buffer of a twinedge node is 4096 frames (``buffer_frames``): a resend
#: comes from within that many frames of what the node sent last, so 16 times that is ample
WINDOW = 1 << 16
MAX_RUNS = 256  # runs kept per boot (holes come from frames the node dropped or never sent)
MAX_BOOTS = 2  # a node that restarts loses its buffer: older boots are never resent
MAX_DEVICES = 4096

Mark = tuple[str, str, int, int]  # (asset, device, boot, seq): one committed frame
Runs = tuple[tuple[int, int], ...]  # (first, last) inclusive, ascending, apart by >= 2
Boots = tuple[tuple[int, Runs], ...]  # (boot, runs), the most recently committed last
Key = tuple[str, str]  # (asset, device)


@dataclass(frozen=True, slots=True)
class MarkUpdate:
    """What one commit changes: the new entries of the devices it touched, the devices
    forgotten to stay within :data:`MAX_DEVICES`, and the commit's stamp (for recency)."""

    entries: dict[Key, Boots]
    forgotten: tuple[Key, ...]
    stamp: int

    def rows(self) -> list[tuple[str, str, str, int]]:
        """``(asset, device, boots as JSON, stamp)`` rows to upsert into the store."""
        return [(a, d, json.dumps(boots, separators=(",", ":")), self.stamp)
                for (a, d), boots in self.entries.items()]  # fmt: skip


class FrameMarks:
    """The in-memory record; the outbox loads it at start and keeps it in step with the store."""

    def __init__(self) -> None:
        self._entries: dict[Key, Boots] = {}
        self._recent: dict[Key, None] = {}  # least recently committed first (store thread only)

    def __len__(self) -> int:
        return len(self._entries)

    def committed(self, asset: str, device: str, boot: int | None, seq: int) -> bool:
        """Whether frame ``seq`` of ``device`` in its boot ``boot`` (in any boot remembered, if
        None) was committed and is still remembered."""
        for b, runs in self._entries.get((asset, device), ()):
            if boot is None or b == boot:
                i = bisect_right(runs, seq, key=lambda run: run[0]) - 1
                if i >= 0 and runs[i][1] >= seq:
                    return True
        return False

    def boots(self, asset: str, device: str) -> Boots:
        return self._entries.get((asset, device), ())

    # -- changing it (the store thread) -------------------------------------------------------

    def plan(self, marks: Iterable[Mark], stamp: int) -> MarkUpdate | None:
        """The update that adds ``marks``, without applying it (the commit may still fail)."""
        new: dict[Key, dict[int, set[int]]] = {}
        for asset, device, boot, seq in marks:
            new.setdefault((asset, device), {}).setdefault(boot, set()).add(seq)
        if not new:
            return None
        entries = {key: _add(self._entries.get(key, ()), seqs) for key, seqs in new.items()}
        excess = len(self._recent) + sum(k not in self._recent for k in new) - MAX_DEVICES
        forgotten: list[Key] = []
        for key in self._recent:
            if len(forgotten) >= excess:
                break
            if key not in new:
                forgotten.append(key)
        return MarkUpdate(entries, tuple(forgotten), stamp)

    def apply(self, update: MarkUpdate | None) -> None:
        """The commit that wrote ``update`` succeeded: remember it."""
        if update is None:
            return
        for key in update.forgotten:
            self._entries.pop(key, None)
            self._recent.pop(key, None)
        for key, boots in update.entries.items():
            self._entries[key] = boots
            self._recent.pop(key, None)
            self._recent[key] = None

    def load(self, rows: Iterable[tuple[str, str, str, int]]) -> int:
        """Fill from stored ``(asset, device, boots JSON, stamp)`` rows; returns how many
        unreadable rows were skipped (a skipped device is forgotten, which is safe)."""
        bad = 0
        for asset, device, text, _stamp in sorted(rows, key=lambda r: r[3]):
            try:
                boots = tuple(
                    (int(b), tuple((int(first), int(last)) for first, last in runs))
                    for b, runs in json.loads(text)
                )
            except (ValueError, TypeError):
                bad += 1
                continue
            self._entries[(asset, device)] = boots
            self._recent[(asset, device)] = None
        return bad


def _add(boots: Boots, new: dict[int, set[int]]) -> Boots:
    """``boots`` with the seqs ``new[boot]`` added; touched boots move last, the oldest go."""
    out = dict(boots)
    for boot, seqs in new.items():
        runs = _merge(out.pop(boot, ()), seqs)
        out[boot] = runs  # re-inserted: the most recently committed boot is last
    return tuple(out.items())[-MAX_BOOTS:]


def _merge(runs: Runs, seqs: Iterable[int]) -> Runs:
    spans = sorted([*runs, *((s, s) for s in seqs)])
    merged: list[list[int]] = []
    for first, last in spans:
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    floor = merged[-1][1] - WINDOW + 1  # seqs below this are forgotten
    kept = [(max(first, floor), last) for first, last in merged if last >= floor]
    return tuple(kept[-MAX_RUNS:])
