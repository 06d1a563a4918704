"""Memory probe for the soak (``benchmarks/soak.py --probe``), loaded into the gateway process
through ``PYTHONPATH`` only when ``TWINEDGE_MEMPROBE`` names a directory; nothing otherwise.

Every 5 s it appends one JSON line to ``DIR/probe-PID.jsonl`` with what only the process itself
can see: glibc's heap figures (``mallinfo2``: bytes in use and free in all arenas, mmapped
chunks) and SQLite's own allocations (``sqlite3_memory_used`` and its high-water mark: the page
cache lives there). With ``TWINEDGE_MEMPROBE_FRAMES=N`` it also runs tracemalloc with N frames
and every 30 s writes the largest Python allocation differences to ``DIR/tracemalloc-PID.txt``
(slow: for finding an allocation, not for figures). Touching ``DIR/trim`` makes it call
``malloc_trim(0)`` once and record the RSS before and after (retained free memory vs. a leak).
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
import time
import tracemalloc
from pathlib import Path


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]  # fmt: skip


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _python_diffs(path: str, first: list[tracemalloc.Snapshot], t: float) -> None:
    snap = tracemalloc.take_snapshot()
    with open(path, "a") as f:
        f.write(f"=== t={t:.0f} s traced (current, peak) = {tracemalloc.get_traced_memory()}\n")
        if first:
            for stat in snap.compare_to(first[0], "traceback")[:5]:
                f.write(f"  {stat.size_diff / 1024:+.0f} KiB in {stat.count_diff:+d} blocks\n")
                f.writelines(f"    {line}\n" for line in stat.traceback.format()[-8:])
        else:
            first.append(snap)


def _loop(directory: str, frames: int) -> None:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    sqlite = ctypes.CDLL("libsqlite3.so.0")
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    sqlite.sqlite3_memory_highwater.restype = ctypes.c_int64
    sqlite.sqlite3_memory_highwater.argtypes = [ctypes.c_int]
    pid, t0 = os.getpid(), time.monotonic()
    first: list[tracemalloc.Snapshot] = []
    with open(os.path.join(directory, f"probe-{pid}.jsonl"), "a", buffering=1) as out:
        n = 0
        while True:
            time.sleep(5)  # the probe's sampling interval
            n += 1
            t = time.monotonic() - t0
            mi = libc.mallinfo2()
            row = {
                "t": round(t, 1),
                "rss_kib": _rss_kib(pid),
                "heap_inuse_kib": (mi.uordblks + mi.hblkhd) >> 10,
                "heap_free_kib": mi.fordblks >> 10,
                "sqlite_kib": sqlite.sqlite3_memory_used() >> 10,
                "sqlite_highwater_kib": sqlite.sqlite3_memory_highwater(0) >> 10,
            }
            trigger = os.path.join(directory, "trim")
            if os.path.exists(trigger):
                os.unlink(trigger)
                before = _rss_kib(pid)
                libc.malloc_trim(0)
                row["trim_rss_kib"] = [before, _rss_kib(pid)]
            out.write(json.dumps(row) + "\n")
            if frames and n % 6 == 0:
                _python_diffs(os.path.join(directory, f"tracemalloc-{pid}.txt"), first, t)


def _start() -> None:
    directory = os.environ.get("TWINEDGE_MEMPROBE")
    if not directory:
        return
    frames = int(os.environ.get("TWINEDGE_MEMPROBE_FRAMES", "0"))
    if frames:
        tracemalloc.start(frames)
    threading.Thread(target=_loop, args=(directory, frames), daemon=True, name="memprobe").start()


_start()
