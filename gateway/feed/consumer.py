"""The reference consumer's MQTT side: connect, subscribe, decode, hand batches to a handler.

:class:`FeedClient` is an async context manager owning one aiomqtt connection and two tasks: the
reader decodes each message (bad ones are counted and logged with their topic, never fatal) into
a bounded queue; the writer takes what arrives within ``linger`` (20 ms) of a first message as
one batch, so a busy feed costs one SQLite transaction per batch, not per message. :func:`run_sink`
materialises the feed into SQLite with :class:`~gateway.feed.store.TwinStore` and publishes the
rebirth requests it returns; ``twinedge feed tail`` uses :meth:`FeedClient.messages` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.errors import ConfigError, FrameError, TwinedgeError
from gateway.feed.decode import FeedMessage, Validation, decode
from gateway.feed.store import RebirthRequest, TwinStore

__all__ = [
    "UPLINK_LEAVES",
    "Broker",
    "BrokerError",
    "FeedClient",
    "default_filters",
    "left_queued",
    "run_sink",
]

log = logging.getLogger("twinedge.feed")


def left_queued(client: aiomqtt.Client) -> list[aiomqtt.Message]:
    """The messages still queued in ``client`` after its connection broke.

    aiomqtt ends ``client.messages`` at a disconnect even while messages are queued, and paho
    has already acknowledged those to the broker (QoS 1), so the broker will not send them again:
    a consumer that does not take them loses them."""
    queue = client._queue  # aiomqtt has no public way to reach them
    return [queue.get_nowait() for _ in range(queue.qsize())]


@dataclass(frozen=True, slots=True)
class Broker:
    """Where and how to connect. The password is never part of the URL: it is read from
    ``password_file`` or the ``TWINEDGE_FEED_PASSWORD`` environment variable when connecting."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None

    @classmethod
    def parse(
        cls, url: str, *, password_file: Path | None = None, ca_file: Path | None = None
    ) -> Broker:
        """``mqtt://[user@]host[:port]`` or ``mqtts://[user@]host[:port]``."""
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError("--broker", "", "a URL such as mqtt://127.0.0.1:1883", url)
        if parts.password is not None:
            raise ConfigError("--broker", "", "no password in the URL (use --password-file)", "…")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ConfigError("--broker", "", "a valid port", url) from None
        if ca_file is not None and not tls:
            raise ConfigError("--ca-file", "", "an mqtts:// broker URL to go with it", url)
        return cls(parts.hostname, port, tls, parts.username, password_file, ca_file)

    def password(self) -> str | None:
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise ConfigError(str(self.password_file), "", "a readable file", str(e)) from None
        return os.environ.get("TWINEDGE_FEED_PASSWORD")

    def tls_params(self) -> aiomqtt.TLSParameters | None:
        if not self.tls:
            return None
        return aiomqtt.TLSParameters(ca_certs=str(self.ca_file) if self.ca_file else None)


class FeedClient:
    """``async with FeedClient(url, [filter]) as feed: async for batch in feed.batches(): ...``."""

    def __init__(
        self,
        url: str | Broker,
        filters: list[str],
        *,
        validation: Validation = "full",
        client_id: str | None = None,
        queue: int = 50_000,
        max_batch: int = 5_000,
        linger: float = 0.02,
        session_expiry: int = 0,
        protocol: str = "5",
    ) -> None:
        self.broker = url if isinstance(url, Broker) else Broker.parse(url)
        self.protocol = protocol  # "5", or "3.1.1" for brokers that speak only that
        self.filters = filters
        self.validation = validation
        self.client_id = client_id or f"twinedge-feed-{uuid.uuid4().hex[:8]}"
        self.max_batch = max_batch
        self.linger = linger
        self.bad = 0
        self.session_expiry = session_expiry  # > 0: the broker keeps our messages while away
        self._queue: asyncio.Queue[FeedMessage | BrokerError] = asyncio.Queue(queue)
        self._failed: BrokerError | None = None
        self._client: aiomqtt.Client | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=self.client_id,
            username=self.broker.username,
            password=self.broker.password(),
            tls_params=self.broker.tls_params(),
            max_queued_incoming_messages=0,
            **self._session_args(),
        )
        try:
            self._client = await self._stack.enter_async_context(client)
            for f in self.filters:
                await self._client.subscribe(f, qos=1)
        except aiomqtt.MqttError as e:
            await self._stack.aclose()
            raise BrokerError(f"{self.broker.host}:{self.broker.port}: {e}") from None
        reader = asyncio.create_task(self._read(), name="feed-reader")
        self._stack.push_async_callback(_cancel, reader)
        return self

    def _session_args(self) -> dict[str, Any]:
        """A session the broker keeps while we are away when ``session_expiry`` > 0."""
        keep = self.session_expiry > 0
        if self.protocol == "3.1.1":
            return {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": not keep}
        return {
            "protocol": aiomqtt.ProtocolVersion.V5,
            "clean_start": not keep,
            "properties": _session_expiry(self.session_expiry) if keep else None,
        }

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def _read(self) -> None:
        assert self._client is not None
        try:
            async for m in self._client.messages:
                await self._take(m)
        except aiomqtt.MqttError as e:
            for m in left_queued(self._client):
                await self._take(m)
            await self._queue.put(BrokerError(f"connection lost: {e}"))

    async def _take(self, m: aiomqtt.Message) -> None:
        payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
        try:
            msg = decode(m.topic.value, payload, self.validation)
        except FrameError as e:
            self.bad += 1
            log.warning("feed: bad message dropped: %s", e)
            return
        await self._queue.put(msg)

    async def _get(self) -> FeedMessage:
        item = await self._queue.get()
        if isinstance(item, BrokerError):
            raise item
        return item

    async def messages(self) -> AsyncIterator[FeedMessage]:
        while True:
            yield await self._get()

    async def batches(self) -> AsyncIterator[list[FeedMessage]]:
        """Batches of up to ``max_batch`` messages: whatever arrives within ``linger`` seconds
        of the first one, so a busy feed costs one transaction per batch, not per message."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._get()]
            deadline = loop.time() + self.linger
            while len(batch) < self.max_batch:
                try:
                    if not self._queue.empty():
                        batch.append(self._queue.get_nowait())  # type: ignore[arg-type]
                    else:
                        left = deadline - loop.time()
                        if left <= 0:
                            break
                        async with asyncio.timeout(left):
                            batch.append(await self._get())
                except TimeoutError:
                    break
                except BrokerError:
                    yield batch  # what arrived before the connection was lost, then fail
                    raise
                if isinstance(batch[-1], BrokerError):
                    failure = batch.pop()
                    yield batch
                    raise failure
            yield batch

    async def publish(self, request: RebirthRequest) -> None:
        assert self._client is not None
        await self._client.publish(request.topic, json.dumps(request.payload).encode(), qos=1)


class BrokerError(TwinedgeError, ConnectionError):
    """The broker is unreachable or the connection to it was lost."""


def _session_expiry(seconds: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = seconds
    return props


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


UPLINK_LEAVES = ("status", "readings", "twin/+", "delta/+", "event/+", "applied/+")


def default_filters(
    prefix: str = "twinedge/v1", leaves: Sequence[str] = UPLINK_LEAVES, sites: Sequence[str] = ()
) -> list[str]:
    """What the gateways publish under ``prefix`` (not the downlink topics), for every site
    or only ``sites`` (a sink per group of sites partitions the twin streams)."""
    return [f"{prefix}/{site}/+/{leaf}" for site in (sites or ("+",)) for leaf in leaves]


async def run_sink(
    url: str | Broker,
    db: Path,
    *,
    prefix: str = "twinedge/v1",
    validation: Validation = "full",
    share: str | None = None,
    on_batch: Callable[[TwinStore], None] | None = None,
    ready: asyncio.Event | None = None,
    leaves: Sequence[str] = UPLINK_LEAVES,
    sites: Sequence[str] = (),
    session_expiry: int = 3600,
    backoff_max: float = 30.0,
    protocol: str = "5",
) -> None:
    """Materialise the feed into ``db`` until cancelled, reconnecting with backoff.

    ``share`` joins a shared subscription; ``sites`` limits it to those sites; ``ready`` is set
    once subscribed; ``on_batch`` sees
    the store after every batch; ``leaves`` narrows the subscription (e.g. ``("readings",
    "event/+")`` for a shared readings sink). The MQTT session (client id derived from the
    database path) outlives a disconnection by ``session_expiry`` seconds, so the broker keeps
    the messages published meanwhile.
    """
    filters = default_filters(prefix, leaves, sites)
    if share:
        filters = [f"$share/{share}/{f}" for f in filters]
    client_id = "twinedge-sink-" + hashlib.sha256(str(db.resolve()).encode()).hexdigest()[:12]
    delay = 0.5
    reported = time.monotonic()
    with TwinStore(db) as store:
        while True:
            try:
                async with FeedClient(
                    url,
                    filters,
                    validation=validation,
                    client_id=client_id,
                    session_expiry=session_expiry,
                    protocol=protocol,
                ) as feed:
                    delay = 0.5
                    log.info("feed sink: subscribed to %s", ", ".join(filters))
                    if ready is not None:
                        ready.set()
                    async for batch in feed.batches():
                        for req in store.apply(batch):
                            await feed.publish(req)
                        if on_batch is not None:
                            on_batch(store)
                        reported = _report(store, feed, reported)
            except BrokerError as e:
                pause = delay * (0.5 + random.random())
                log.warning("feed sink: %s; reconnecting in %.1f s", e, pause)
                await asyncio.sleep(pause)  # backoff before reconnecting
                delay = min(delay * 2, backoff_max)


def _report(store: TwinStore, feed: FeedClient, last: float, every: float = 60.0) -> float:
    """Log the sink's counters once a minute (checked per batch: no timer task)."""
    now = time.monotonic()
    if now - last < every:
        return last
    c = store.counters
    log.info(
        "feed sink: %d messages, %d readings, %d duplicates, %d gaps, %d rebirths asked, %d bad",
        c.messages,
        c.readings,
        c.duplicate_messages + c.duplicate_rows,
        c.gaps,
        c.rebirths_requested,
        feed.bad,
    )
    return now
