"""A fan-out of live events (readings, anomalies, liveness, warnings) to local subscribers.

Subscribers (the status page's SSE stream, ``twinedge tail``) each get a bounded queue; a slow
subscriber loses events, counted in ``dropped``, and never slows the gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

__all__ = ["Hub"]


class Hub:
    def __init__(self, maxsize: int = 1000) -> None:
        self._subs: set[asyncio.Queue[dict[str, Any]]] = set()
        self.maxsize = maxsize
        self.dropped = 0

    def __bool__(self) -> bool:
        return bool(self._subs)

    def publish(self, event: dict[str, Any]) -> None:
        for q in self._subs:
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.maxsize)
        self._subs.add(q)

        async def events() -> AsyncIterator[dict[str, Any]]:
            while True:
                yield await q.get()

        try:
            yield events()
        finally:
            self._subs.discard(q)
