"""Device flapping and a flood of malformed frames: four devices drop their connection after
every ~5 frames and send noise and a frame with a broken CRC before every good frame. The
gateway's resident memory and open file descriptors are sampled over the run: after warm-up
they must not grow. Nothing acknowledged may be lost, and the bad frames are counted per device.
``FLAP_SECONDS`` sets the length of the run (20 s by default; the soak runs longer)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from gateway.broker import MosquittoProcess
from hil_tests.faults.ledger import (
    Consumer,
    GatewayProcess,
    LedgerDevice,
    drained,
    settle,
    until,
    write_site,
)

SECONDS = float(os.environ.get("FLAP_SECONDS", "20"))
WARMUP = 6.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_flapping_devices_and_malformed_flood_memory_bounded(
    tmp_path: Path, mq: MosquittoProcess, consumer: Consumer
) -> None:
    devices = [LedgerDevice(f"flap-{i}", rate=500, flap_after=5, garbage=48) for i in range(4)]
    for d in devices:
        await d.__aenter__()
    try:
        site, api = write_site(tmp_path, mq.port, devices)
        async with GatewayProcess(site, api) as gw:
            await until(lambda: consumer.copies > 0, 20, "readings")
            loop = asyncio.get_running_loop()
            start = loop.time()
            samples: list[tuple[float, int, int]] = []
            while (t := loop.time() - start) < SECONDS:
                samples.append((t, rss_kib(gw.pid), open_fds(gw.pid)))
                await asyncio.sleep(0.25)  # the sampling interval of the measurement
            status = await drained(gw, devices, consumer)
        warm = [s for s in samples if s[0] >= WARMUP]
        first, last = warm[: len(warm) // 3], warm[-(len(warm) // 3) :]
        rss_first = max(s[1] for s in first)
        rss_last = max(s[1] for s in last)
        fds = [s[2] for s in warm]
        counters = [status["assets"][d.name]["device"]["counters"] for d in devices]
        books = settle(
            "flapping + malformed", devices, consumer, status["buffer"]["dropped"]["total"]
        )
        books.extra.update(
            seconds=SECONDS,
            connections=sum(d.connections for d in devices),
            bad_frames_sent=sum(d.bad_sent for d in devices),
            bad_frames_counted=sum(c["frames_bad"] for c in counters),
            rss_kib_after_warmup=rss_first,
            rss_kib_end=rss_last,
            fds=f"{min(fds)}-{max(fds)}",
        )
        books.check()
        assert books.missing_acked == 0 and books.unique_ids == books.emitted
        assert sum(d.connections for d in devices) >= 4 * SECONDS / 2  # it really flapped
        assert sum(c["frames_bad"] for c in counters) >= sum(d.bad_sent for d in devices) // 2
        assert rss_last <= rss_first + 4096, (rss_first, rss_last)  # no growth after warm-up
        assert max(fds) - min(fds) <= 8  # no descriptor leak per reconnect
    finally:
        for d in devices:
            await d.__aexit__(None, None, None)
