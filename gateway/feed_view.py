"""The demo's live view of one gateway's twins, through the reference feed consumer.

It runs :func:`gateway.feed.consumer.run_sink` into an SQLite file beside the demo's store, as an
upstream platform would, and renders the materialised twins: what the terminal shows is what
came over MQTT, deduplicated by key and seq and ordered by revision, not the gateway's memory.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from gateway.config import BrokerConfig
from gateway.feed.consumer import run_sink
from gateway.feed.store import TwinStore
from gateway.readings import UNITS

__all__ = ["FeedView"]


class FeedView:
    def __init__(self, broker: BrokerConfig, site: str, gateway: str, db: Path) -> None:
        self.broker, self.site, self.gateway, self.db = broker, site, gateway, db
        self.store: TwinStore | None = None
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        ready = asyncio.Event()
        tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        sink = run_sink(
            self.broker.display_url, self.db, prefix=self.broker.topic_prefix,
            validation="light", sites=[self.site], on_batch=self._seen, ready=ready,
            protocol=self.broker.protocol, session_expiry=0,
        )  # fmt: skip
        self._task = tg.create_task(sink, name="feed-view")
        async with asyncio.timeout(15):
            await ready.wait()  # subscribed before the gateway publishes its birth
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._task.cancel()
        await self._stack.aclose()

    def _seen(self, store: TwinStore) -> None:
        self.store = store

    @property
    def twins(self) -> dict[str, tuple[int, dict[str, Any]]]:
        if self.store is None:
            return {}
        return {a: (rev, t) for gw, a, rev, t in self.store.twins() if gw == self.gateway}

    def summary(self) -> dict[str, Any]:
        counters = self.store.counters.as_dict() if self.store else {}
        return {
            "messages": counters.get("messages", 0),
            "readings_received": counters.get("readings", 0),
            "duplicates": counters.get("duplicate_rows", 0),
            "revision_gaps": counters.get("gaps", 0),
            "twins": {a: rev for a, (rev, _t) in sorted(self.twins.items())},
        }

    def table(self) -> Any:
        from rich.table import Table

        online = self.store.gateway_online(self.gateway) if self.store else None
        state = {None: "waiting for its birth", True: "online", False: "offline"}[online]
        received = self.summary()["readings_received"]
        t = Table(title=f"twinedge demo — {self.broker.topic_prefix}/{self.site}/{self.gateway} "
                  f"({state}) — {received} readings received upstream")  # fmt: skip
        for col in ("asset", "kind", "online", "rev", "state"):
            t.add_column(col)
        for asset, (rev, twin) in sorted(self.twins.items()):
            live = twin.get("liveness", {}).get("online")
            t.add_row(asset, twin.get("category", ""), "yes" if live else "[red]stale[/red]",
                      str(rev), "  ".join(_values(twin)))  # fmt: skip
        return t


def _values(twin: dict[str, Any]) -> list[str]:
    out = []
    for q, s in twin.get("state", {}).items():
        quality = s.get("quality")
        mark = "" if quality == "good" else f" [yellow]({quality})[/yellow]"
        sym = UNITS.get(s.get("unit", ""), "")
        sep = " " if sym[:1].isalpha() and len(sym) > 2 else ""
        value = s.get("value")
        shown = "–" if value is None else f"{value:.4g}"
        out.append(f"{q}={shown}{sep}{sym}{mark}")
    return out
