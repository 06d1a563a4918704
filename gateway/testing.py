"""Helpers for tests and benchmarks that watch the feed: a recorder on a real broker.

:class:`FeedRecorder` subscribes to a topic filter and keeps every message (topic, decoded JSON,
retain flag); :meth:`FeedRecorder.wait_for` waits for a condition on what arrived, with a timeout,
instead of sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiomqtt
from aiohttp import web
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.feed.consumer import left_queued

__all__ = ["ContextBroker", "FeedRecorder", "Received", "context_broker"]


@dataclass(slots=True)
class Received:
    topic: str
    doc: dict[str, Any]
    retain: bool
    raw: bytes


class FeedRecorder:
    """``async with FeedRecorder(url, "twinedge/v1/#") as rec: await rec.wait_for(pred)``."""

    def __init__(
        self,
        url: str,
        topic_filter: str,
        *,
        protocol: str = "5",
        identifier: str | None = None,
        persistent: bool = False,
    ) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.filter = topic_filter
        self.protocol = protocol
        self.identifier = identifier
        self.persistent = persistent  # keep the session (and queued messages) across reconnects
        self.disconnected = False
        self.received: list[Received] = []
        self.undecodable: list[bytes] = []
        self._changed = asyncio.Condition()
        self._stack = AsyncExitStack()
        self.client: aiomqtt.Client

    async def __aenter__(self) -> Self:
        version = (
            aiomqtt.ProtocolVersion.V5 if self.protocol == "5" else aiomqtt.ProtocolVersion.V311
        )
        v5 = self.protocol == "5"
        self.client = aiomqtt.Client(
            self.host,
            self.port,
            protocol=version,
            identifier=self.identifier,
            clean_session=None if v5 else not self.persistent,
            clean_start=(not self.persistent) if v5 else 3,
            properties=_session_expiry(3600) if v5 and self.persistent else None,
        )
        await self._stack.enter_async_context(self.client)
        await self.client.subscribe(self.filter, qos=1)
        tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._task = tg.create_task(self._consume(), name="feed-recorder")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._task.cancel()
        try:
            await self._stack.aclose()
        except* aiomqtt.MqttError:
            pass  # already disconnected

    async def _consume(self) -> None:
        try:
            async for m in self.client.messages:
                await self._take(m)
        except aiomqtt.MqttError:
            for m in left_queued(self.client):
                await self._take(m)
            self.disconnected = True

    async def _take(self, m: aiomqtt.Message) -> None:
        raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            self.undecodable.append(raw)
            return
        async with self._changed:
            self.received.append(Received(str(m.topic), doc, bool(m.retain), raw))
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[list[Received]], bool], within: float = 15.0
    ) -> list[Received]:
        """Until ``predicate(received)`` is true; raises TimeoutError with what did arrive."""
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: predicate(self.received))
        except TimeoutError:
            kinds = [r.doc.get("kind") for r in self.received[-20:]]
            raise TimeoutError(f"condition not met; last kinds received: {kinds}") from None
        return self.received

    def of(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.doc.get("kind") == kind]

    def reading_seqs(self) -> list[int]:
        """Every reading seq received, duplicates included, in arrival order."""
        return [row[0] for r in self.of("readings") for row in r.doc["rows"]]

    def seqs(self) -> list[int]:
        """Every outbox seq received (readings and events share the counter), with duplicates."""
        return self.reading_seqs() + [r.doc["seq"] for r in self.of("event")]

    async def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        await self.client.publish(topic, payload, qos=1, retain=retain)


def _session_expiry(seconds: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = seconds
    return props


class ContextBroker:
    """Keeps upserted entities by id; ``script`` says how to answer the next requests."""

    def __init__(self) -> None:
        self.entities: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, list[dict[str, Any]]]] = []
        self.script: list[str] = []  # "500", "400", "hang", "207" ... then "ok" forever
        self.changed = asyncio.Condition()

    async def upsert(self, request: web.Request) -> web.Response:
        body = await request.json()
        ids = [e["id"] for e in body]
        assert len(ids) == len(set(ids)), "an entity twice in one request"
        self.requests.append((request.headers["Content-Type"], body))
        mode = self.script.pop(0) if self.script else "ok"
        if mode == "hang":
            await asyncio.Event().wait()  # never answers; the client times out
        if mode in ("500", "503", "400", "429"):
            return web.json_response(
                {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData", "title": mode},
                status=int(mode),
            )
        failed = {body[0]["id"]} if mode == "207" else set()
        async with self.changed:
            for ent in body:
                if ent["id"] not in failed:
                    self.entities[ent["id"]] = {**self.entities.get(ent["id"], {}), **ent}
            self.changed.notify_all()
        if failed:
            return web.json_response(
                {
                    "success": [i for i in ids if i not in failed],
                    "errors": [{"entityId": i, "error": {"status": 400}} for i in failed],
                },
                status=207,
            )
        return web.Response(status=204)

    async def until(self, cond: Callable[[], bool], within: float = 10.0) -> None:
        """Until ``cond()`` holds for what the broker took, with a timeout."""
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(cond)


@asynccontextmanager
async def context_broker() -> AsyncIterator[tuple[ContextBroker, str]]:
    """A local HTTP server behaving like an NGSI-LD context broker's batch upsert endpoint;
    yields it and its base URL."""
    broker = ContextBroker()
    app = web.Application()
    app.router.add_post("/ngsi-ld/v1/entityOperations/upsert", broker.upsert)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield broker, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
