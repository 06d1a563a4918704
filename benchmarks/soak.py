"""Soak: the demo site at 10x its normal rate for a long time, with random faults.

    .venv/bin/python benchmarks/soak.py --minutes 30 [--json out.json] [--probe DIR]

The six demo assets (water quality, streetlights, pedestrian counters; in-process ``demo:``
sources and the shipped anomaly models) sample every 0.1 s instead of every 1 s, and two ledger
devices (outside the gateway, node wire protocol, resend until acknowledged) add exact
accounting. `twinedge run` runs in a subprocess against a real mosquitto; a persistent-session
consumer records the feed. Every ``--fault-every`` seconds (random, ±50 %) one fault is drawn:
kill -9 and restart of the gateway, a broker outage of 2-20 s, or a flapping burst of the
ledger devices. Every ``--sample`` seconds it records the gateway's RSS, open descriptors and
its readings in/out/dropped. At the end it drains and settles the books:

- ledger devices: every acknowledged id received (after dedupe), none lost;
- all assets: the feed seqs received have no hole that is not a reported drop ("unexplained
  loss" = holes minus reported drops, must be 0);
- memory, per gateway life longer than twice the warm-up (and with at least 6 samples after
  it): the highest RSS of the last third of the samples after warm-up may be at most 4 MiB above
  the highest of the first third; in a life of 10 minutes or more it must also have reached its
  ceiling: the last third at most 1 MiB above the middle third. Each sample also splits the RSS
  into the C heap of the main thread (``[heap]``), the other threads' malloc arenas
  (64 MiB-aligned anonymous mappings: the store thread, where SQLite's page cache lives), other
  anonymous memory (Python's object arenas, large chunks) and file-backed pages. The split is a
  guide, not a measure: the kernel merges neighbouring anonymous mappings, so memory can move
  between "arenas" and "anon" from one life to the next; ``--probe`` has the exact figures.

``--probe DIR`` loads ``benchmarks/memprobe`` into the gateway process: it adds to each sample
the C heap in use and free (glibc ``mallinfo2``) and SQLite's own memory, and writes its lines
to ``DIR``; see that module for tracemalloc snapshots and a ``malloc_trim`` trigger.

Readings of the in-process demo sources that sat in the ingest queue at a kill -9 were never
acknowledged (those sources cannot resend): the contract does not cover them and they are not
counted as emitted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

from gateway.broker import MosquittoProcess, free_port, mosquitto
from gateway.commands.demo import IN_PROCESS
from gateway.commands.demo import write_site as write_demo_site
from hil_tests.faults.ledger import Consumer, GatewayProcess, LedgerDevice, drained, settle

DEMO_BASE = "twinedge/v1/harbour/gw-demo"
PROBE = Path(__file__).with_name("memprobe")


def site_file(tmp: Path, mq_port: int, devices: list[LedgerDevice]) -> tuple[Path, int]:
    sources = {k: v.format(period="0.1s") for k, v in IN_PROCESS.items()}  # 10x the 1 s default
    site = write_demo_site(tmp, f"mqtt://127.0.0.1:{mq_port}", "5", "5s", sources, "in-process")
    api = free_port()
    text = site.read_text(encoding="utf-8").replace(
        "[api]\nenabled = false", f'[api]\nlisten = "127.0.0.1:{api}"'
    )
    for d in devices:
        text += (
            f'\n[[assets]]\nid = "{d.name}"\ncategory = "water-quality"\n'
            f'location = [4.9, 52.37]\nsource = "ledger:127.0.0.1:{d.port}"\n'
        )
    site.write_text(text, encoding="utf-8")
    return site, api


def proc_figures(pid: int) -> tuple[int, int]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def rss_split(pid: int) -> dict[str, int]:
    """RSS (KiB) by kind of mapping, from /proc/PID/smaps."""
    out = {"heap": 0, "arenas": 0, "anon": 0, "file": 0}
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=6)
        if "-" in head[0] and not head[0].endswith(":"):
            start = int(head[0].split("-")[0], 16)
            name = head[5] if len(head) > 5 else ""
            if name == "[heap]":
                kind = "heap"
            elif name.startswith("/"):
                kind = "file"
            elif not name and start % (64 << 20) == 0:
                kind = "arenas"  # glibc's per-thread heaps are aligned to their 64 MiB size
            else:
                kind = "anon"
        elif head[0] == "Rss:":
            out[kind] += int(head[1])
    return out


def probe_line(directory: Path, pid: int) -> dict[str, Any]:
    """The last line the memory probe wrote in the gateway process ``pid``."""
    try:
        lines = (directory / f"probe-{pid}.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return {}
    if not lines:
        return {}
    doc: dict[str, Any] = json.loads(lines[-1])
    return {k: v for k, v in doc.items() if k not in ("t", "rss_kib")}


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path, mq: MosquittoProcess) -> None:
        self.args, self.tmp, self.mq = args, tmp, mq
        self.rng = random.Random(args.seed)
        self.devices = [LedgerDevice(f"ledger-{i}", rate=200) for i in range(2)]
        self.samples: list[dict[str, Any]] = []
        self.faults: list[tuple[float, str]] = []
        self.lives: list[list[tuple[float, int, int]]] = [[]]
        self.t0 = time.monotonic()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    async def sampler(self, gw: GatewayProcess) -> None:
        while True:
            await asyncio.sleep(self.args.sample)  # the sampling interval of the measurement
            if not gw.alive:
                continue
            try:
                rss, fds = proc_figures(gw.pid)
                st = await gw.status()
            except (OSError, ValueError, KeyError, aiohttp.ClientError):
                continue  # between a kill and the restart, or the API not up yet
            row = {
                "t": self.now(),
                "rss_kib": rss,
                "rss_split_kib": rss_split(gw.pid),
                "fds": fds,
                "in": st["readings"]["in"],
                "out": st["readings"]["out"],
                "backlog": st["buffer"]["rows"],
                "dropped": st["buffer"]["dropped"]["total"],
                "boot": st["gateway"]["boot"],
                "uplink": st["uplink"].get("state"),
                "memory_releases": st["uplink"].get("memory_releases"),
            }
            if self.args.probe:
                row.update(probe_line(self.args.probe, gw.pid))
            self.samples.append(row)
            self.lives[-1].append((st["gateway"]["uptime_s"], rss, fds))
            print(json.dumps(row), flush=True)

    async def fault(self, gw: GatewayProcess) -> None:
        kind = self.rng.choice(self.args.faults.split(","))
        self.faults.append((self.now(), kind))
        print(f"# {self.now()} s: fault {kind}", flush=True)
        if kind == "kill9":
            await gw.kill9()
            self.lives.append([])
            await gw.start()
        elif kind == "broker":
            await self.mq.stop()
            await asyncio.sleep(self.rng.uniform(2, 20))  # the length of the outage
            await self.mq.start()
        else:
            for d in self.devices:
                d.flap_after = 3
            await asyncio.sleep(self.rng.uniform(5, 15))  # the length of the flapping burst
            for d in self.devices:
                d.flap_after = 0

    async def run(self, consumer: Consumer) -> dict[str, Any]:
        a = self.args
        for d in self.devices:
            await d.__aenter__()
        site, api = site_file(self.tmp, self.mq.port, self.devices)
        env = {}
        if a.probe:
            a.probe.mkdir(parents=True, exist_ok=True)
            path = os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")]))
            env = {"PYTHONPATH": path, "TWINEDGE_MEMPROBE": str(a.probe.resolve())}
        async with GatewayProcess(site, api, env) as gw, asyncio.TaskGroup() as tg:
            sampler = tg.create_task(self.sampler(gw))
            end = time.monotonic() + a.minutes * 60
            while (left := end - time.monotonic()) > 0:
                await asyncio.sleep(min(left, a.fault_every * self.rng.uniform(0.5, 1.5)))
                if time.monotonic() < end:
                    await self.fault(gw)
            await self.mq.start()
            await self.quiet_demo_sources()
            status = await drained(gw, self.devices, consumer, within=300)
            sampler.cancel()
        for d in self.devices:
            await d.__aexit__(None, None, None)
        return self.report(consumer, status)

    async def quiet_demo_sources(self) -> None:
        """End the load the way an operator would: a desired period of one day for every demo
        asset, over the downlink (the ledger devices are paused by ``drained``)."""
        async with aiomqtt.Client("127.0.0.1", self.mq.port) as client:
            for asset in (
                "wq-harbour",
                "wq-canal",
                "light-quay-1",
                "light-quay-2",
                "ped-bridge",
                "ped-square",
            ):
                doc = {"v": 1, "id": f"soak-end-{asset}", "period": "1d"}
                await client.publish(f"{DEMO_BASE}/desired/{asset}", json.dumps(doc), qos=1)

    def report(self, consumer: Consumer, status: dict[str, Any]) -> dict[str, Any]:
        dropped = status["buffer"]["dropped"]["total"]
        books = settle("soak", self.devices, consumer, dropped)
        memory = [m for life in self.lives if (m := life_memory(life, self.args.warmup))]
        flat = all(m["flat"] for m in memory)
        unexplained = max(0, books.missing_seqs - dropped)
        names = {d.name for d in self.devices}
        ledger_rows = [v for v in consumer.rows.values() if v[0] in names]
        resends = len(ledger_rows) - len(set(ledger_rows))
        print(books.line())
        return {
            "minutes": self.args.minutes,
            "faults": dict(Counter(kind for _t, kind in self.faults)),
            "feed": {
                "seqs_committed": books.committed,
                "seqs_received": books.unique_seqs,
                "rows_received_with_duplicates": books.received,
                "dropped_reported": dropped,
                "unexplained_loss": unexplained,
            },
            "ledger_devices": {
                "emitted": books.emitted,
                "acked": books.acked,
                "missing_acked": books.missing_acked,
                "device_resends": resends,
            },
            "memory_per_life": memory,
            "memory_flat": flat,
            "contract_held": unexplained == 0 and books.missing_acked == 0 and flat,
        }


def life_memory(life: list[tuple[float, int, int]], warmup: float) -> dict[str, Any] | None:
    """The memory verdict of one gateway life (uptime, RSS, fds samples), None if too short."""
    warm = [x for x in life if x[0] >= warmup]
    if len(warm) < 6 or warm[-1][0] < 2 * warmup:
        return None
    third = len(warm) // 3
    first = max(x[1] for x in warm[:third])
    middle = max(x[1] for x in warm[third:-third])
    last = max(x[1] for x in warm[-third:])
    ceiling = warm[-1][0] < 600 or last <= middle + 1024
    return {
        "seconds": round(warm[-1][0], 1),
        "samples_after_warmup": len(warm),
        "rss_kib_at_warmup": warm[0][1],
        "rss_kib_first_middle_last_third_max": [first, middle, last],
        "rss_kib_min_max": [min(x[1] for x in warm), max(x[1] for x in warm)],
        "fds_min_max": [min(x[2] for x in warm), max(x[2] for x in warm)],
        "flat": last <= first + 4096 and ceiling,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="twinedge-soak-") as tmp:
        mq_dir = Path(tmp) / "mosquitto"
        mq_dir.mkdir()
        extra = f"persistence true\npersistence_location {mq_dir}/\nautosave_interval 0\n"
        async with (
            mosquitto(extra=extra) as mq,
            Consumer(mq.port, identifier="soak", base=DEMO_BASE) as consumer,
        ):
            return await Soak(args, Path(tmp), mq).run(consumer)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--fault-every", type=float, default=60.0, help="seconds between faults")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds of warm-up per life")
    p.add_argument("--seed", type=int, default=6)
    p.add_argument("--faults", default="kill9,broker,flap", help="faults to draw from")
    p.add_argument("--json", type=Path)
    p.add_argument("--probe", type=Path, help="load the memory probe; its lines go to this dir")
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if result["contract_held"] else 1


if __name__ == "__main__":
    sys.exit(main())
