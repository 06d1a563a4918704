"""Firmware figures: ``python -m hil_tests.firmware.bench_node [--minutes M]`` prints JSON.

- ``mpy_bytes``: size of each app as deployed (.mpy files plus main.py), per board.
- ``shim_heap``: live heap the HIL shims take on the unix port (on a board ``machine`` and
  ``bluetooth`` are C in the firmware, and the board file is the real one).
- ``apps_64k``: each app on the unix port at ``-X heapsize=64k`` for ``--minutes`` with its real
  traffic: the water node reporting every second to the gateway's serial source; the counter
  with beams broken every second, heard by the ``ble-adv`` source; the streetlight connected
  to the ``ble`` source, dimmed and switched every few seconds. Live heap after a collection
  by stage (boot, app imported, node built) and while running (max), heap in use before a
  collection (peak), and CPU share of one core.
- ``water_outage_64k``: the water node with its gateway away for 20 s at a 0.2 s period (100
  frames): the node keeps running; how many frames it kept for the gateway.
- ``idle_cpu``: the water node reporting once a second, with the UART polled by fd and with a
  stream without an fd (the busy loop asyncio falls back to).
- ``decode_us``: gateway cost per readings frame (6 values): protocol decode alone, and the
  serial source's whole frame path (decode, sequence bookkeeping, Readings; ack write skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_node import protocol as P
from gateway.commands.firmware import apps, boards, stage, tool
from gateway.profiles import load_profile
from gateway.sources import SourceContext, parse_spec
from gateway.sources.serial import open as open_serial
from hil_tests.emulators.ble import BleRadio
from hil_tests.firmware.blenode import MicroPythonBleNode
from hil_tests.firmware.collect import collecting
from hil_tests.firmware.mpnode import MICROPYTHON, SHIM, MicroPythonNode
from hil_tests.firmware.test_ble_counter_node import HW as COUNTER_HW
from hil_tests.firmware.test_ble_streetlight_node import HW as LIGHT_HW
from hil_tests.firmware.test_micropython_node import HW

HEAP = "64k"
IDLE_WINDOW_S = 10.0


def mpy_sizes() -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for app in apps():
        out[app] = {}
        for board in boards():
            with tempfile.TemporaryDirectory() as tmp:
                out[app][board] = stage(app, board, Path(tmp)).size()
    return out


def shim_heap() -> dict[str, int]:
    """Live heap of the shim modules, imported after asyncio into a bare interpreter."""
    script = (
        "import gc, sys, asyncio\ngc.collect()\nb = gc.mem_alloc()\n"
        "for m in sys.argv[1:]:\n    __import__(m)\n"
        "gc.collect()\nprint(gc.mem_alloc() - b)\n"
    )
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("machine", "board", "bluetooth", "blehw"):
            cmd = [tool("mpy-cross"), "-o", f"{tmp}/{name}.mpy", str(SHIM / f"{name}.py")]
            subprocess.run(cmd, check=True, capture_output=True, timeout=30)
        (Path(tmp) / "measure.py").write_text(script)
        env = dict(os.environ, MICROPYPATH=f".frozen:{tmp}", TWINEDGE_BLE="127.0.0.1:9")
        for label, mods in (("water", ["machine", "board"]), ("ble", ["machine", "blehw"])):
            run = subprocess.run(
                [str(MICROPYTHON), f"{tmp}/measure.py", *mods],
                env=env, capture_output=True, text=True, timeout=30, check=True,
            )  # fmt: skip
            out[label] = int(run.stdout.strip())
    return out


def _stages(node: MicroPythonNode) -> dict[str, int]:
    stages = {}
    for line in node.output:
        parts = line.split()
        if line.startswith("heap ") and parts[1] in ("boot", "imported", "built"):
            stages[parts[1]] = int(parts[2].split("=")[1])
    return stages


def _heap(node: MicroPythonNode, cpu: float, seconds: float) -> dict[str, Any]:
    assert node.proc is not None
    return {
        "alive": node.proc.returncode is None,
        "seconds": round(seconds),
        "stages": _stages(node),
        "live_max": max(node.heap_live),
        "peak": node.heap_peak,
        "cpu_share": round(cpu, 4),
    }


async def _run_for(node: MicroPythonNode, seconds: float, step: Any) -> tuple[float, float]:
    """Call ``await step()`` until ``seconds`` have passed; returns (cpu share, seconds)."""
    cpu0, t0 = node.cpu_seconds(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        assert node.proc is not None
        if node.proc.returncode is not None:
            raise AssertionError("node died:\n" + "\n".join(node.output[-15:]))
        await step()
    elapsed = time.monotonic() - t0
    return (node.cpu_seconds() - cpu0) / elapsed, elapsed


async def water(seconds: float) -> dict[str, Any]:
    config = {"node_id": "wq-bench", "period_s": 1.0}
    node = MicroPythonNode(config=config, hw=HW, heap=HEAP)
    async with node, collecting(str(node)) as c:
        await c.wait_for(lambda c: len(c.seqs("ph")) >= 2, timeout=20)
        cpu, elapsed = await _run_for(node, seconds, lambda: asyncio.sleep(1))
        figures = _heap(node, cpu, elapsed)
        figures["readings"] = len(c.readings)
        figures["gaps"] = c.ctx.counters.gaps
    return figures


async def counter(seconds: float) -> dict[str, Any]:
    config = {"node_id": "counter-0042", "period_s": 1.0}
    async with BleRadio() as radio:
        ctx = SourceContext(
            "counter-0042", load_profile("counter-ble-adv"), options=dict(radio.options)
        )
        node = MicroPythonBleNode(radio, config=config, hw=COUNTER_HW, heap=HEAP)
        async with node, collecting("ble-adv:counter-0042", ctx) as c:
            await c.wait_for(lambda c: len(c.seqs("count_in")) >= 1, timeout=20)

            async def someone_walks_in() -> None:
                await node.pulse(18)
                await node.pulse(19)
                await asyncio.sleep(1)

            cpu, elapsed = await _run_for(node, seconds, someone_walks_in)
            figures = _heap(node, cpu, elapsed)
            figures["counted_in"] = sum(r.value for r in c.readings if r.quantity == "count_in")
    return figures


async def streetlight(seconds: float) -> dict[str, Any]:
    config = {"node_id": "sl-bench", "period_s": 1.0}
    async with BleRadio() as radio:
        ctx = SourceContext(
            "sl-bench", load_profile("streetlight-ble"), options=dict(radio.options)
        )
        async with MicroPythonBleNode(
            radio, "streetlight", config=config, hw=LIGHT_HW, heap=HEAP
        ) as node:
            await node.wait_advert(lambda a: True)
            async with collecting(f"ble:{node.address}", ctx) as c:
                await c.wait_for(lambda c: len(c.seqs("voltage")) >= 2, timeout=20)
                level = iter(range(1000))

                async def dim() -> None:
                    await c.source.command("dim", {"level": 20 + next(level) % 80})
                    await asyncio.sleep(3)

                cpu, elapsed = await _run_for(node, seconds, dim)
                figures = _heap(node, cpu, elapsed)
                figures["readings"] = len(c.readings)
                figures["notified"] = node.notified
    return figures


async def water_outage() -> dict[str, Any]:
    config = {"node_id": "wq-bench", "period_s": 0.2, "link_timeout_s": 1.5, "hello_s": 0.3}
    async with MicroPythonNode(config=config, hw=HW, heap=HEAP) as node:
        async with collecting(str(node)) as c:
            await c.wait_for(lambda c: len(c.seqs("ph")) >= 3, timeout=20)
            mark = max(c.seqs("ph"))
        node.cut = True
        await asyncio.sleep(20)  # a measuring window: the outage, not a wait for an event
        node.cut = False
        async with collecting(str(node)) as c2:
            await c2.wait_for(lambda c: max(c.seqs("ph"), default=0) >= mark + 110, timeout=30)
            last = max(c2.seqs("ph"))
        kept = len(set(c2.seqs("ph")) & set(range(mark + 1, mark + 101)))
        assert node.proc is not None
        return {
            "alive": node.proc.returncode is None,
            "frames_in_outage": last - mark - 10,
            "frames_kept_and_resent": kept,
            "live_max": max(node.heap_live),
            "peak": node.heap_peak,
        }


async def idle_cpu(fileno: bool) -> float:
    config = {"node_id": "wq-bench", "period_s": 1.0}
    node = MicroPythonNode(config=config, hw=HW, heap=HEAP, fileno=fileno)
    async with node, collecting(str(node)) as c:
        await c.wait_for(lambda c: len(c.seqs("ph")) >= 2, timeout=20)
        cpu0, t0 = node.cpu_seconds(), time.monotonic()
        await asyncio.sleep(IDLE_WINDOW_S)  # a measuring window, not a wait for an event
        return round((node.cpu_seconds() - cpu0) / (time.monotonic() - t0), 4)


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="per app (default 3)")
    seconds = parser.parse_args().minutes * 60
    figures = {
        "load_before": os.getloadavg(),
        "mpy_bytes": mpy_sizes(),
        "shim_heap": shim_heap(),
        "apps_64k": {
            "water_quality": await water(seconds),
            "pedestrian_counter": await counter(seconds),
            "streetlight": await streetlight(seconds),
        },
        "water_outage_64k": await water_outage(),
        "idle_cpu_64k": {"fileno": await idle_cpu(True), "no_fileno_spin": await idle_cpu(False)},
        "gateway": decode_figures(),
        "load_after": os.getloadavg(),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
