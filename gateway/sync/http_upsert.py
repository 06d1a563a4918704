"""Deliver the NGSI-LD projection to a context broker by HTTP batch upsert, driven by the outbox.

``POST {url}/ngsi-ld/v1/entityOperations/upsert?options=update`` with the entities projected from
the outbox's rows (readings and anomaly events) and the latest twin entities. Rows leave the
outbox only after the broker took them, so nothing is lost while the broker is down:

- 201/204 (or 200): delivered; the rows are acknowledged;
- 207 multi-status: the entities the broker lists under ``errors`` are dead-lettered (counted,
  logged, appended to ``dead_letter_file`` if set), the rest are delivered; rows acknowledged;
- 400/409/413/422 and other 4xx: the broker refuses the batch for good: every entity is
  dead-lettered and the rows acknowledged, so one bad entity cannot block the queue;
- 401/403/404/408/429, 5xx, timeouts and connection errors: kept; the same rows are retried
  with exponential backoff (``backoff`` doubling to ``backoff_max``, with jitter).

A request body never names one entity twice (a batch can hold several observations of one
asset): such batches are split into several requests, sent in order, all before the ack.
Twin entities (liveness, battery, firmware) are state, not history: :meth:`submit` coalesces
them by id and they ride along with the next request until one succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import aiohttp

from gateway.errors import ConfigError
from gateway.sync.ngsi_ld import NgsiProjection

__all__ = ["BatchQueue", "DeliveryCounters", "HttpUpsert", "StoredBatch"]

log = logging.getLogger("twinedge.sync.http_upsert")

KIND_EVENT = 1
RETRY_4XX = frozenset((401, 403, 404, 408, 425, 429))
UPSERT_PATH = "/ngsi-ld/v1/entityOperations/upsert"


class StoredBatch(Protocol):
    """One outbox batch: readings (``body`` = the feed's JSON rows joined by commas, without
    brackets) or one event (``body`` = the event's JSON object)."""

    @property
    def id(self) -> int: ...

    @property
    def kind(self) -> int: ...

    @property
    def body(self) -> str: ...


class BatchQueue(Protocol):
    """The outbox seam: batches oldest first by id, removed only by ``ack(first, last)``."""

    async def peek(self, after: int, limit: int) -> Sequence[StoredBatch]: ...

    async def ack(self, first: int, last: int) -> int: ...


@dataclass(slots=True)
class DeliveryCounters:
    requests: int = 0
    delivered_entities: int = 0
    acked_batches: int = 0
    retries: int = 0
    dead_letters: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class _Retry(Exception):
    """The broker could not take the batch now; try the same rows again later."""


class HttpUpsert:
    """``async with HttpUpsert(outbox, projection, url) as up: up.notify()`` after each append."""

    def __init__(
        self,
        queue: BatchQueue,
        projection: NgsiProjection,
        url: str,
        *,
        batch: int = 1000,
        timeout: float = 10.0,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        idle: float = 1.0,
        tenant: str | None = None,
        headers: Mapping[str, str] | None = None,
        dead_letter_file: Path | None = None,
    ) -> None:
        self.queue = queue
        self.projection = projection
        self.endpoint = url.rstrip("/") + UPSERT_PATH + "?options=update"
        self.batch = batch
        self.timeout = timeout
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.idle = idle
        self.headers = dict(headers or {})
        if tenant:
            self.headers["NGSILD-Tenant"] = tenant
        self.dead_letter_file = dead_letter_file
        self.counters = DeliveryCounters()
        self.connected = False  # the last request reached the broker and was answered
        self._twins: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(
        cls,
        queue: BatchQueue,
        projection: NgsiProjection,
        table: Mapping[str, Any],
        file: str = "site.toml",
    ) -> Self:
        """From the ``[projection]`` table: ``url`` (required), ``tenant``, ``timeout`` (s),
        ``batch`` (readings per request cycle), ``dead_letter_file``."""
        url = table.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(file, "projection.url", "the context broker's http(s):// URL", url)
        tenant = table.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise ConfigError(file, "projection.tenant", "a string", tenant)
        timeout = table.get("timeout", 10.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(file, "projection.timeout", "seconds > 0", timeout)
        batch = table.get("batch", 1000)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(file, "projection.batch", "an integer >= 1", batch)
        dead = table.get("dead_letter_file")
        if dead is not None and not isinstance(dead, str):
            raise ConfigError(file, "projection.dead_letter_file", "a file path", dead)
        return cls(
            queue,
            projection,
            url,
            batch=batch,
            timeout=float(timeout),
            tenant=tenant,
            dead_letter_file=Path(dead) if dead else None,
        )

    async def __aenter__(self) -> Self:
        self._session = await self._stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        )
        group = await self._stack.enter_async_context(asyncio.TaskGroup())
        task = group.create_task(self._run(), name="ngsi-ld-upsert")
        self._stack.callback(task.cancel)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.__aexit__(et, e, tb)

    def notify(self) -> None:
        """New rows are in the outbox (or twins were submitted): deliver without waiting."""
        self._idle.clear()
        self._wake.set()

    def submit(self, message: Mapping[str, Any]) -> None:
        """Project a native twin/delta message; its entities go with the next request."""
        for ent in self.projection.entities(message):
            cur = self._twins.get(ent["id"])
            self._twins[ent["id"]] = {**cur, **ent} if cur else ent
        self.notify()

    # -- the loop ------------------------------------------------------------------------------

    async def drained(self) -> None:
        """Return once the outbox is empty and every submitted twin was delivered."""
        await self._idle.wait()

    async def _run(self) -> None:
        delay = self.backoff
        while True:
            batches = list(await self.queue.peek(0, self.batch))
            if not batches and not self._twins:
                self._idle.set()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.idle):  # also catches appends not notified
                        await self._wake.wait()
                continue
            try:
                await self._deliver(batches)
            except _Retry as e:
                self.counters.retries += 1
                pause = delay * (0.5 + random.random())
                log.warning("ngsi-ld upsert: %s; retrying in %.1f s", e, pause)
                await asyncio.sleep(pause)  # backoff between attempts, not a wait for an event
                delay = min(delay * 2, self.backoff_max)
                continue
            delay = self.backoff
            if batches:
                await self.queue.ack(batches[0].id, batches[-1].id)
                self.counters.acked_batches += len(batches)

    async def _deliver(self, batches: list[StoredBatch]) -> None:
        twins = list(self._twins.values())
        entities = self._entities(batches) + twins  # history first: the latest state wins
        for body in _unique_chunks(entities):
            await self._post(body)
        for ent in twins:  # sent: forget them unless a newer version arrived meanwhile
            if self._twins.get(ent["id"]) is ent:
                del self._twins[ent["id"]]

    def _entities(self, batches: list[StoredBatch]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for b in batches:
            try:
                doc = json.loads(b.body if b.kind == KIND_EVENT else f"[{b.body}]")
            except ValueError:
                log.error("ngsi-ld upsert: outbox batch %d unreadable, skipped", b.id)
                continue
            if b.kind != KIND_EVENT:
                out.extend(self.projection.readings_entities(doc))
            elif (
                isinstance(doc, dict)
                and doc.get("type") == "anomaly"
                and doc.get("mode", "active") == "active"
            ):
                out.append(self.projection.anomaly_entity(doc))
        return out

    async def _post(self, entities: list[dict[str, Any]]) -> None:
        assert self._session is not None
        headers = dict(self.headers)
        if entities and "@context" in entities[0]:
            headers["Content-Type"] = "application/ld+json"
        else:
            headers["Content-Type"] = "application/json"
            ctx = ", ".join(
                f'<{c}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
                for c in self.projection.context[:1]
            )
            headers["Link"] = ctx
        self.counters.requests += 1
        try:
            async with self._session.post(self.endpoint, json=entities, headers=headers) as resp:
                status = resp.status
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError) as e:
            self.connected = False
            raise _Retry(f"broker unreachable ({type(e).__name__}: {e})") from None
        self.connected = True
        self._classify(status, text, entities)

    def _classify(self, status: int, text: str, entities: list[dict[str, Any]]) -> None:
        if status in (200, 201, 204):
            self.counters.delivered_entities += len(entities)
        elif status == 207:
            failed = _failed_ids(text)
            bad = [e for e in entities if e["id"] in failed]
            self.counters.delivered_entities += len(entities) - len(bad)
            self._dead_letter(bad, status, text)
        elif status >= 500 or status in RETRY_4XX:
            raise _Retry(f"broker answered {status}: {text[:200]}")
        else:
            self._dead_letter(entities, status, text)

    def _dead_letter(self, entities: list[dict[str, Any]], status: int, reason: str) -> None:
        if not entities:
            return
        self.counters.dead_letters += len(entities)
        log.error(
            "ngsi-ld upsert: broker refused %d entities (%d): %s; first id %s",
            len(entities),
            status,
            reason[:300],
            entities[0]["id"],
        )
        if self.dead_letter_file is not None:
            with self.dead_letter_file.open("a", encoding="utf-8") as f:
                for ent in entities:
                    f.write(
                        json.dumps({"status": status, "reason": reason[:1000], "entity": ent})
                        + "\n"
                    )


def _unique_chunks(entities: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split into consecutive request bodies in which no entity id appears twice."""
    chunks: list[list[dict[str, Any]]] = []
    seen: set[str] = set()
    for ent in entities:
        if not chunks or ent["id"] in seen:
            chunks.append([])
            seen = set()
        chunks[-1].append(ent)
        seen.add(ent["id"])
    return chunks


def _failed_ids(text: str) -> set[str]:
    """Entity ids under ``errors`` of an NGSI-LD BatchOperationResult."""
    try:
        doc = json.loads(text)
    except ValueError:
        return set()
    errors = doc.get("errors", []) if isinstance(doc, dict) else []
    return {str(e.get("entityId")) for e in errors if isinstance(e, dict)}
