"""A live view of one gateway's twins, built from its MQTT feed as an upstream consumer sees it.

Used by ``twinedge demo`` for its terminal table and summary. It applies births, full twins and
deltas (RFC 7396 merge patches, in revision order) and counts reading rows by seq.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import aiomqtt

from gateway.config import BrokerConfig
from gateway.readings import UNITS
from gateway.sync.messages import Topics
from gateway.twin import merge_patch

__all__ = ["FeedView"]


class FeedView:
    def __init__(self, broker: BrokerConfig, site: str, gateway: str) -> None:
        self.broker = broker
        self.topics = Topics(broker.topic_prefix, site, gateway)
        self.twins: dict[str, dict[str, Any]] = {}
        self.messages = 0
        self.reading_seqs: set[int] = set()
        self.duplicates = 0
        self.revision_gaps = 0
        self.gateway_state = "unknown"
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=None,
            protocol=aiomqtt.ProtocolVersion.V311
            if self.broker.protocol == "3.1.1"
            else aiomqtt.ProtocolVersion.V5,
        )
        await self._stack.enter_async_context(client)
        await client.subscribe(f"{self.topics.base}/#", qos=1)
        tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._task = tg.create_task(self._consume(client), name="feed-view")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._task.cancel()
        await self._stack.aclose()

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if not isinstance(message.payload, bytes):
                continue
            try:
                doc = json.loads(message.payload)
            except ValueError:
                continue
            self.messages += 1
            self.apply(doc)

    def apply(self, doc: dict[str, Any]) -> None:
        kind = doc.get("kind")
        if kind == "twin":
            self.twins[doc["asset"]] = doc["twin"]
        elif kind == "delta":
            twin = self.twins.get(doc["asset"])
            if twin is None or doc["revision"] <= twin.get("revision", 0):
                return
            if doc["revision"] != twin.get("revision", 0) + 1:
                self.revision_gaps += 1
            merge_patch(twin, doc["patch"])
        elif kind == "readings":
            for row in doc["rows"]:
                if row[0] in self.reading_seqs:
                    self.duplicates += 1
                self.reading_seqs.add(row[0])
        elif kind in ("birth", "death"):
            self.gateway_state = "online" if kind == "birth" else f"offline ({doc.get('reason')})"

    def summary(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "readings_received": len(self.reading_seqs),
            "duplicates": self.duplicates,
            "revision_gaps": self.revision_gaps,
            "twins": {a: t.get("revision") for a, t in sorted(self.twins.items())},
        }

    def table(self) -> Any:
        from rich.table import Table

        t = Table(
            title=f"twinedge demo — {self.topics.base} ({self.gateway_state}) — "
            f"{len(self.reading_seqs)} readings received upstream"
        )
        for col in ("asset", "kind", "online", "rev", "state"):
            t.add_column(col)
        for asset, twin in sorted(self.twins.items()):
            online = twin.get("liveness", {}).get("online")
            values = []
            for q, s in twin.get("state", {}).items():
                quality = s.get("quality")
                mark = "" if quality == "good" else f" [yellow]({quality})[/yellow]"
                sym = UNITS.get(s.get("unit", ""), "")
                sep = " " if sym[:1].isalpha() and len(sym) > 2 else ""
                value = s.get("value")
                shown = "–" if value is None else f"{value:.4g}"
                values.append(f"{q}={shown}{sep}{sym}{mark}")
            t.add_row(
                asset,
                twin.get("category", ""),
                "yes" if online else "[red]stale[/red]",
                str(twin.get("revision")),
                "  ".join(values),
            )
        return t
