"""Drive a Source in a background task and wait for what it yields (with timeouts, no sleeps).

The collector plays the gateway's store: every reading it takes counts as committed, so a source
that acknowledges to its device (``SourceContext.on_commit``) does so as it would in a gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.readings import Reading
from gateway.sources import DeviceCounters, SourceContext, open_source


class Collector:
    """Iterates a source in a task; ``await wait_for(pred)`` until ``pred(self)`` holds."""

    def __init__(self, spec: str, ctx: SourceContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.readings: list[Reading] = []
        self.error: BaseException | None = None
        self.changed = asyncio.Event()
        self.source: Any = None
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            async with open_source(self.spec, self.ctx) as src:
                self.source = src
                self.changed.set()
                async for r in src:
                    self.readings.append(r)
                    if self.ctx.on_commit is not None:  # kept, as the gateway's store would
                        self.ctx.on_commit(r.device, r.seq)
                    self.changed.set()
        except Exception as e:  # recorded for the test to assert on
            self.error = e
            self.changed.set()

    async def wait_for(self, pred: Callable[[Collector], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not pred(self):
                self.changed.clear()
                await self.changed.wait()

    def seqs(self, quantity: str) -> list[int]:
        return [r.seq for r in self.readings if r.quantity == quantity]

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        await self.wait_for(lambda c: c.source is not None or c.error is not None)
        if self.error is not None:
            raise self.error
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def collecting(
    spec: str, ctx: SourceContext | None = None, asset: str = "asset-1"
) -> AsyncIterator[Collector]:
    async with Collector(spec, ctx or SourceContext(asset, None, DeviceCounters())) as c:
        yield c
