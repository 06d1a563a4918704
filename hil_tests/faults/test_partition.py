"""The network is cut in the middle of publishing: a TCP proxy between the gateway and mosquitto
drops the connection after a random number of bytes (so PUBLISH packets are cut in half and
PUBACKs never come back), again and again, under steady load."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from gateway.broker import MosquittoProcess, free_port
from hil_tests.faults.ledger import (
    Consumer,
    GatewayProcess,
    LedgerDevice,
    drained,
    settle,
    until,
    write_site,
)


class CuttingProxy:
    """127.0.0.1:``port`` -> the broker; the first ``cuts`` connections are cut (both ways, with
    an RST) once the gateway has sent a random 20-300 kB through them. About every other cut
    first goes deaf one way: the broker still gets the gateway's PUBLISHes for another 200 kB
    (about three full readings messages) but its PUBACKs are thrown away, so those messages
    reach the consumer and are then sent again."""

    def __init__(self, target: int, cuts: int, seed: int = 6) -> None:
        self.target, self.cuts = target, cuts
        self.port = free_port()
        self.cut = 0
        self.deaf = 0  # cuts that first threw PUBACKs away
        self.rng = random.Random(seed)

    async def __aenter__(self) -> CuttingProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        budget = self.rng.randint(20_000, 300_000) if self.cut < self.cuts else None
        deaf = budget is not None and self.rng.random() < 0.5
        acks_lost = False
        try:
            br, bw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            cw.close()
            return
        done = asyncio.Event()

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
            nonlocal budget, deaf, acks_lost
            try:
                while data := await r.read(4096):
                    if not up and acks_lost:
                        continue  # the broker's PUBACKs vanish
                    if up and budget is not None:
                        if len(data) >= budget and deaf:
                            deaf, acks_lost, budget = False, True, budget + 200_000
                            self.deaf += 1
                        elif len(data) >= budget:
                            w.write(data[: budget // 2])  # half a packet, then the line dies
                            self.cut += 1
                            break
                        budget -= len(data)
                    w.write(data)
                    await w.drain()
            except ConnectionError:
                pass
            done.set()

        tasks = [asyncio.create_task(pump(cr, bw, True)), asyncio.create_task(pump(br, cw, False))]
        await done.wait()
        for t in tasks:
            t.cancel()
        for w in (cw, bw):
            w.transport.abort()


async def test_network_cut_mid_publish(
    tmp_path: Path, mq: MosquittoProcess, consumer: Consumer
) -> None:
    cuts = 8
    async with (
        CuttingProxy(mq.port, cuts) as proxy,
        LedgerDevice("dev-a", rate=1500) as a,
        LedgerDevice("dev-b", rate=1500) as b,
    ):
        site, api = write_site(tmp_path, proxy.port, [a, b])
        async with GatewayProcess(site, api) as gw:
            await until(lambda: proxy.cut >= cuts, 90, "every cut")
            status = await drained(gw, [a, b], consumer)
        books = settle(f"cut mid-publish x{proxy.cut}", [a, b], consumer,
                       status["buffer"]["dropped"]["total"])  # fmt: skip
        books.extra.update(reconnects=status["uplink"]["reconnects"], acks_lost=proxy.deaf)
        books.check()
        assert books.missing_acked == 0 and books.dropped == 0
        assert books.unique_ids == books.emitted
        assert status["uplink"]["reconnects"] >= cuts
