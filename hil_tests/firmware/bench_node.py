"""Firmware figures: ``python -m hil_tests.firmware.bench_node`` prints JSON.

- ``mpy_bytes``: size of each app as deployed (.mpy files plus main.py), per board.
- ``heap``: live and peak heap of the water-quality app on the unix port (``-X heapsize``).
- ``idle_cpu``: CPU share of one core used by that node reporting once a second, with the
  UART shim answering ioctl 10 (fd) and without (the StreamReader spin).
- ``decode_us``: gateway cost per readings frame (6 values): protocol decode alone, and the
  serial source's whole frame path (decode, sequence bookkeeping, Readings; ack write skipped).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

from edge_node import protocol as P
from gateway.commands.firmware import apps, boards, stage
from gateway.sources import SourceContext, parse_spec
from gateway.sources.serial import open as open_serial
from hil_tests.firmware.collect import collecting
from hil_tests.firmware.mpnode import MicroPythonNode
from hil_tests.firmware.test_micropython_node import HW

WINDOW_S = 10.0


def mpy_sizes() -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for app in apps():
        out[app] = {}
        for board in boards():
            with tempfile.TemporaryDirectory() as tmp:
                out[app][board] = stage(app, board, Path(tmp)).size()
    return out


async def node_figures(heap: str, fileno: bool) -> dict[str, float]:
    config = {"node_id": "wq-bench", "period_s": 1.0}
    async with MicroPythonNode(config=config, hw=HW, heap=heap, fileno=fileno) as node:
        async with collecting(str(node)) as c:
            await c.wait_for(lambda c: len(c.seqs("ph")) >= 2, timeout=20)
            cpu0, t0 = node.cpu_seconds(), time.monotonic()
            await asyncio.sleep(WINDOW_S)  # a measuring window, not a wait for an event
            cpu = (node.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        return {
            "cpu_share": round(cpu, 4),
            "heap_live_max": max(node.heap_live),
            "heap_peak": node.heap_peak,
            "readings": len(c.readings),
        }


def decode_figures(n: int = 20000) -> dict[str, float]:
    values = [["temperature", 12.5], ["ph", 7.1], ["conductivity", 450.0]]
    values += [["dissolved_oxygen", 8.5], ["turbidity", 12.0], ["orp", 250.0]]
    frames = [
        P.encode(
            {"type": "readings", "node": "wq-1", "seq": i + 1, "time": 1.7e9, "values": values}
        )[1:-1]
        for i in range(n)
    ]
    t = time.perf_counter()
    for f in frames:
        P.decode(f)
    decode = (time.perf_counter() - t) / n * 1e6
    src = open_serial(parse_spec("serial:/dev/null"), SourceContext("a", None))
    now = time.time()
    t = time.perf_counter()
    for f in frames:
        for _ in src._handle_frame(f, now):
            pass
    path = (time.perf_counter() - t) / n * 1e6
    return {"protocol_decode_us": round(decode, 1), "source_frame_us": round(path, 1)}


async def main() -> None:
    figures = {
        "mpy_bytes": mpy_sizes(),
        "node_64bit_unix_port": {
            "heap_72k_fileno": await node_figures("72k", True),
            "heap_72k_no_fileno_spin": await node_figures("72k", False),
        },
        "gateway": decode_figures(),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
