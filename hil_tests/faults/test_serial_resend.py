"""The crash between the commit and the ack, taken apart: a twinedge node (the node framework on a
pseudo-terminal) and the gateway's serial source over a real store. A first gateway commits
frames and dies before it acknowledges them; the node resends them to the next gateway, which
finds them in the store's record of committed frames: acknowledged, counted as duplicates, not
stored again. Frames that were only read, not committed, are taken again."""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.outbox import Outbox
from gateway.readings import Reading
from gateway.sources import SourceContext, open_source
from hil_tests.emulators.serial_node import SerialNode
from hil_tests.faults.ledger import until

SENSORS = 6  # a water-quality node sends six values a frame


def context(box: Outbox) -> SourceContext:
    """What a gateway process gives the serial source: fresh counters, the store's record."""
    return SourceContext("wq-1", None, committed=functools.partial(box.committed, "wq-1"))


async def stored_frames(box: Outbox) -> Counter[float]:
    """observed_at -> readings stored for it (a frame's values share its time)."""
    rows = [r for b in await box.peek(0, 1 << 20) for r in json.loads(f"[{b.body}]")]
    return Counter(r[5] for r in rows)


async def test_resent_frames_committed_before_a_crash_are_not_stored_again(
    tmp_path: Path,
) -> None:
    async with (
        Outbox(tmp_path / "store.db") as box,
        SerialNode(seed=8, period=0.05, directory=tmp_path, resend_s=0.3, link_timeout_s=5.0,
                   hello_s=0.3) as node,
    ):  # fmt: skip
        # gateway 1: reads frames, commits the whole ones, dies before acknowledging them
        ctx1 = context(box)
        async with open_source(f"serial:{node.path}", ctx1) as src:
            first: list[Reading] = []
            gen = src.__aiter__()
            try:
                async with asyncio.timeout(20):
                    while len(first) < 10 * SENSORS + 3:  # ten frames and part of one more
                        first.append(await anext(gen))
            finally:
                await gen.aclose()
        per_frame = Counter(r.seq for r in first)
        whole = {seq for seq, n in per_frame.items() if n == SENSORS}
        await box.append([r for r in first if r.seq in whole])
        pending = {seq for seq, _frame in node.uplink.buffer.due(0, 1 << 30)}
        assert whole <= pending  # committed, never acknowledged: the node still holds them

        # gateway 2: a new process with the same store; its commits are acknowledged
        ctx2 = context(box)
        second: list[Reading] = []

        async def run(src: AsyncIterator[Reading]) -> None:
            async for r in src:
                await box.append([r])
                second.append(r)
                assert ctx2.on_commit is not None
                ctx2.on_commit(r.device, r.seq)

        async with open_source(f"serial:{node.path}", ctx2) as src2:
            task = asyncio.create_task(run(src2))
            try:
                goal = max(per_frame) + 5

                def settled() -> bool:
                    return len(node.uplink.buffer) == 0 and node.uplink.seq >= goal

                await until(settled, 20, lambda: f"node buffer {len(node.uplink.buffer)}")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        stored = await stored_frames(box)

    assert not {r.seq for r in second} & whole  # nothing committed was taken twice
    assert ctx2.counters.duplicates >= len(whole)  # each resend acknowledged again, counted
    assert set(per_frame) - whole <= {r.seq for r in second}  # read, not committed: retaken
    assert max(stored.values()) == SENSORS  # no frame's readings are in the store twice
    assert len(stored) >= goal - 1  # every frame the node made is there (bar the one in flight)
