"""kill -9 with real twinedge nodes: the node framework (:mod:`edge_node`) on a pseudo-terminal
(:class:`hil_tests.emulators.serial_node.SerialNode`) and the gateway's own serial source.

Two water-quality nodes sample six sensors every 50 ms (240 readings/s in all) with their own
clock, keep every frame in their resend buffer until the gateway acknowledges it, and resend on
their own schedule. The gateway is killed at random moments and restarted. A reading is
identified by ``(asset, quantity, observed_at in ms)``. The contract: at the end every frame the
nodes made is acknowledged (their buffers are empty, nothing overflowed) and every acknowledged
reading arrived: the serial source acknowledges a frame only after its readings are committed,
and never cumulatively past what it committed, so frames queued at a crash or made while the
gateway was down stay with the node until they are stored. And none arrived twice: a frame
committed in the instant before a kill, whose ack the kill swallowed, is resent by its node and
found in the store's record of committed frames (node, boot, seq): acknowledged, not stored again.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

from gateway.broker import MosquittoProcess
from hil_tests.emulators.serial_node import SerialNode
from hil_tests.faults.ledger import BASE, Books, Consumer, GatewayProcess, drained, until

KILLS = int(os.environ.get("SERIAL_KILLS", "5"))


class NodeBooks:
    """The ledger view of one emulated node, from its own uplink: frames made (its seq) and
    frames still unacknowledged (its resend buffer). Every frame carries the six sensors and
    the node's time (50 ms apart), so a frame is identified by ``observed_at`` in the feed."""

    def __init__(self, node: SerialNode, asset: str) -> None:
        self.node, self.name = node, asset

    @property
    def frame_seq(self) -> int:
        return int(self.node.uplink.seq)

    @property
    def acked_upto(self) -> int:
        pending = [s for s, _f in self.node.uplink.buffer.due(0, 1 << 30)]
        return min(pending) - 1 if pending else self.frame_seq

    def pause(self) -> None:
        """The load ends: the node's own set-period command, as the gateway would send it."""
        cmd = {"type": "command", "node": "", "seq": 1, "command": "set-period", "sensor": "",
               "period_ms": 3_600_000}  # fmt: skip
        asyncio.get_running_loop().create_task(self.node.node.command(cmd))


async def test_kill9_with_serial_nodes(tmp_path: Path, mq: MosquittoProcess) -> None:
    def key(row: list[Any]) -> tuple[str, int]:
        return (row[2], round(row[5] * 1000))

    rng = random.Random(6)
    async with (
        Consumer(mq.port, identifier="serial-ledger", base=BASE, key=key) as consumer,
        SerialNode("water-quality", "wq-0001", seed=1, period=0.05, directory=tmp_path,
                   buffer_frames=4096) as n1,
        SerialNode("water-quality", "wq-0002", seed=2, period=0.05, directory=tmp_path,
                   buffer_frames=4096) as n2,
    ):  # fmt: skip
        books = [NodeBooks(n1, "wq-1"), NodeBooks(n2, "wq-2")]
        from hil_tests.faults.ledger import write_site

        site, api = write_site(tmp_path, mq.port, [])
        text = site.read_text().replace("[api]", "[api]", 1)
        for b in books:
            text += (f'[[assets]]\nid = "{b.name}"\ncategory = "water-quality"\n'
                     f'location = [4.9, 52.37]\nsource = "serial:{b.node.path}"\n')  # fmt: skip
        site.write_text(text)

        gw = GatewayProcess(site, api, start=False)
        try:
            for _ in range(KILLS):
                births, seen = len(consumer.births), consumer.copies
                await gw.start()
                await until(lambda: len(consumer.births) > births, 20, "the birth")  # noqa: B023
                await until(lambda: consumer.copies > seen + 100, 20, "readings")  # noqa: B023
                await asyncio.sleep(rng.uniform(0.2, 1.0))  # the random kill moment
                await gw.kill9()
            await gw.start()
            status = await drained(gw, books, consumer, within=60)  # type: ignore[arg-type]
        except BaseException:
            print(gw.tail())
            raise
        finally:
            await gw.__aexit__(None, None, None)
    ledger = Books(f"serial nodes kill9 x{gw.kills}", dropped=status["buffer"]["dropped"]["total"])
    ledger.received, ledger.unique_seqs = consumer.copies, len(consumer.rows)
    ledger.committed, ledger.missing_seqs = consumer.seq_books()
    frames_in_feed = {
        asset: {ms for _q, ms in consumer.ids_of(asset)} for asset in ("wq-1", "wq-2")
    }
    for b in books:
        sensors = 6
        ledger.emitted += b.frame_seq * sensors
        ledger.acked += b.acked_upto * sensors
        ledger.missing_acked += max(0, b.acked_upto - len(frames_in_feed[b.name])) * sensors
    ledger.unique_ids = len(set(consumer.rows.values()))
    ledger.device_resends = ledger.unique_seqs - ledger.unique_ids
    ledger.extra["node_resent_frames"] = sum(b.node.uplink.stats["resent"] for b in books)
    ledger.check()
    assert all(b.node.uplink.buffer.dropped == 0 for b in books)  # no node buffer overflow
    assert ledger.missing_acked == 0 and ledger.dropped == 0
    assert ledger.unique_ids == ledger.emitted
    assert ledger.device_resends == 0 and ledger.unique_seqs == ledger.emitted  # none twice
