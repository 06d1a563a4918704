"""Soak: the demo site at 10x its normal rate for a long time, with random faults.

    .venv/bin/python benchmarks/soak.py --minutes 30 [--json out.json]

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
- memory: per gateway life longer than twice the warm-up, the highest RSS of the last third
  against the highest of the first third after warm-up.

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
                "fds": fds,
                "in": st["readings"]["in"],
                "out": st["readings"]["out"],
                "backlog": st["buffer"]["rows"],
                "dropped": st["buffer"]["dropped"]["total"],
                "boot": st["gateway"]["boot"],
            }
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
        async with GatewayProcess(site, api) as gw, asyncio.TaskGroup() as tg:
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
        memory = []
        for life in self.lives:
            warm = [x for x in life if x[0] >= self.args.warmup]
            if len(warm) >= 6:
                third = len(warm) // 3
                memory.append(
                    {
                        "seconds": round(warm[-1][0], 1),
                        "rss_kib_first_third_max": max(x[1] for x in warm[:third]),
                        "rss_kib_last_third_max": max(x[1] for x in warm[-third:]),
                        "fds_min_max": [min(x[2] for x in warm), max(x[2] for x in warm)],
                    }
                )
        flat = all(
            m["rss_kib_last_third_max"] <= m["rss_kib_first_third_max"] + 4096 for m in memory
        )
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
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if result["contract_held"] else 1


if __name__ == "__main__":
    sys.exit(main())
