"""The MQTT uplink: publishes the outbox and twin changes, receives the downlink.

On every connection it publishes the birth (gateway status and full twins, retained) before
anything else, then resends every row still in the outbox, oldest first, in batches of up to
``batch_max`` rows with up to ``inflight`` batches awaiting their PUBACK at once. A batch leaves the
outbox only after all of its messages are acknowledged (QoS 1), so a crash or a cut connection
means a resend, never a loss; consumers drop the duplicates by key and seq. The last will is a
retained death on the status topic. Reconnects back off exponentially with jitter.

Memory: a drain holds at most ``inflight`` messages of ``batch_max`` readings at once (each
message's payload, and paho's packet of it until it is written). When a drain of at least two
batches ends, the C heap it freed is handed back to the OS (glibc ``malloc_trim``): without that
the process keeps the pages of its largest drain so far, which showed as RSS steps at outages.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import json
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config import BrokerConfig
from gateway.outbox import KIND_EVENT, KIND_READINGS, Batch, Outbox
from gateway.sync import messages
from gateway.sync.messages import Topics
from gateway.sync.projection import Projection

__all__ = ["MAX_DOWNLINK_BYTES", "Uplink"]

log = logging.getLogger("twinedge.uplink")

MAX_DOWNLINK_BYTES = 64 * 1024
# aiomqtt warns whenever more than 10 publishes await their PUBACK: with pipelining that is normal
_MQTT_LOG = logging.getLogger("twinedge.mqtt")
_MQTT_LOG.setLevel(logging.ERROR)
Message = tuple[str, bytes, bool]  # topic, payload, retain
Downlink = Callable[[str, str, bytes], Awaitable[None]]  # kind, asset, payload


class Uplink:
    """``async with Uplink(...) as up: up.notify()`` after new rows are committed."""

    def __init__(
        self,
        cfg: BrokerConfig,
        topics: Topics,
        outbox: Outbox,
        *,
        gateway: str,
        birth: Callable[[], Sequence[Message]],
        death: Callable[[str], bytes],
        downlink: Downlink,
        live_window: float = 60.0,
        projection: Projection | None = None,
    ) -> None:
        self.cfg = cfg
        self.topics = topics
        self.outbox = outbox
        self.gateway = gateway
        self._birth = birth
        self._death = death
        self._downlink = downlink
        self.live_window = live_window
        self.projection = projection  # NGSI-LD / Ditto messages published beside the native ones
        self.state = "connecting"
        self.reconnects = 0
        self.published_rows = 0
        self.published_messages = 0
        self.published_bytes = 0
        self.downlink_refused = 0
        self.last_error: str | None = None  # why the last connection failed, safe to show
        self.last_ack_at: float | None = None
        self._latency_ms: deque[float] = deque(maxlen=4096)
        self.memory_releases = 0
        self._inflight = 0  # batches published and not yet acknowledged
        self._busy_rows = 0  # rows taken from the outbox since the publisher was last idle
        self._release_due = False  # a drain ended: release the freed heap once it is acknowledged
        self._released_at = 0.0
        self._release_timer: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._live: asyncio.Queue[Message] = asyncio.Queue(maxsize=10_000)
        self._connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._stack = AsyncExitStack()
        # paho only logs some failures (a TLS alert after the handshake): keep the last one
        self._paho_log = _MQTT_LOG.getChild(cfg.client_id)
        self._paho_error = _LastError()

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._paho_log.addHandler(self._paho_error)
        self._stack.callback(self._paho_log.removeHandler, self._paho_error)
        tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._task = tg.create_task(self._run(), name="uplink")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        client = self._client
        if client is not None and self.state == "connected":
            try:
                payload = self._death("stopped")
                await client.publish(self.topics.status, payload, qos=1, retain=True, timeout=5)
            except (aiomqtt.MqttError, TimeoutError) as err:
                log.warning("could not publish death on stop: %s", err)
        self._task.cancel()
        if self._release_timer is not None:
            self._release_timer.cancel()
        await self._stack.aclose()

    def notify(self) -> None:
        """New rows were committed to the outbox."""
        self._wake.set()

    def publish_live(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        """Queue a twin delta or applied message; dropped (False) while disconnected, because
        the birth on the next connection carries the full state anyway."""
        if not self._connected.is_set():
            return False
        try:
            self._live.put_nowait((topic, payload, retain))
        except asyncio.QueueFull:
            return False
        return True

    async def wait_connected(self) -> None:
        await self._connected.wait()

    # -- connection loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.25
        while True:
            self._paho_error.text = None
            try:
                async with self._make_client() as client:
                    self._client = client
                    delay = 0.25
                    await self._session(client)
            except* (aiomqtt.MqttError, OSError, TimeoutError) as eg:
                self.last_error = explain(eg.exceptions[0], self._paho_error.text)
                log.warning("uplink to %s lost: %s", self.cfg.display_url, self.last_error)
            finally:
                self._client = None
                self._connected.clear()
                self.state = "disconnected"
            self.reconnects += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 30.0)
            self.state = "connecting"

    def _make_client(self) -> aiomqtt.Client:
        cfg = self.cfg
        v5 = cfg.protocol == "5"
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 7 * 24 * 3600
        will = aiomqtt.Will(self.topics.status, self._death("lost"), qos=1, retain=True)
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=cfg.client_id,
            username=cfg.username,
            password=cfg.password(),
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else False,
            clean_start=False if v5 else 3,  # 3: paho's "not set" for 3.1.1
            properties=props,
            will=will,
            keepalive=max(5, int(cfg.keepalive)),
            timeout=10,
            tls_context=self._tls_context(),
            max_inflight_messages=cfg.inflight * 4,
            max_queued_incoming_messages=1000,
            logger=self._paho_log,
        )

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.cfg.tls:
            return None
        ctx = _PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.pins = frozenset(self.cfg.pin_sha256)
        if self.cfg.ca_file is None:
            ctx.load_default_certs()
        else:
            ctx.load_verify_locations(cafile=str(self.cfg.ca_file))
        if self.cfg.cert_file is not None and self.cfg.key_file is not None:
            ctx.load_cert_chain(str(self.cfg.cert_file), str(self.cfg.key_file))
        return ctx

    async def _session(self, client: aiomqtt.Client) -> None:
        for flt in (self.topics.desired_filter, self.topics.command_filter, self.topics.rebirth):
            await client.subscribe(flt, qos=1)
        await self._publish_birth(client)
        self.state = "connected"
        self._drain_live()
        self._connected.set()
        log.info("uplink connected to %s", self.cfg.display_url)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._publisher(client), name="uplink-outbox")
            tg.create_task(self._live_publisher(client), name="uplink-live")
            tg.create_task(self._receiver(client), name="uplink-downlink")

    def _projected(self, msgs: Sequence[Message]) -> list[Message]:
        """The messages plus what the configured projection makes of each (not retained)."""
        if self.projection is None:
            return list(msgs)
        out = list(msgs)
        for _topic, payload, _retain in msgs:
            out += [(t, p, False) for t, p in self.projection.to_messages(json.loads(payload))]
        return out

    async def _publish_birth(self, client: aiomqtt.Client) -> None:
        msgs = self._projected(self._birth())
        await asyncio.gather(
            *(client.publish(t, p, qos=1, retain=r, timeout=30) for t, p, r in msgs)
        )

    def _drain_live(self) -> None:
        while not self._live.empty():
            self._live.get_nowait()

    # -- outbox publishing ---------------------------------------------------------------------

    async def _publisher(self, client: aiomqtt.Client) -> None:
        cursor = 0  # a new connection resends everything still in the outbox
        slots = asyncio.Semaphore(self.cfg.inflight)
        self._busy_rows = self._inflight = 0  # a batch cancelled before it ran never counted down
        async with asyncio.TaskGroup() as tg:
            while True:
                rows = await self.outbox.peek(cursor, self.cfg.batch_max)
                if not rows:
                    self._wake.clear()
                    rows = await self.outbox.peek(cursor, self.cfg.batch_max)
                    if not rows:
                        self._idle()
                        await self._wake.wait()
                        continue
                cursor = rows[-1].id
                self._busy_rows += sum(b.count for b in rows)
                await slots.acquire()
                self._inflight += 1
                tg.create_task(self._send_batch(client, rows, slots))

    def _idle(self) -> None:
        """The outbox has nothing more to send: if that ends a drain, release its memory."""
        if self._busy_rows >= 2 * self.cfg.batch_max:
            self._release_due = True
        self._busy_rows = 0
        self._maybe_release()

    def _maybe_release(self) -> None:
        """Once the last message of a drain is acknowledged, give the heap it freed back to the
        OS; at most every 10 s, so a site that drains all the time does not pay it each time."""
        now = time.monotonic()
        if not self._release_due or self._inflight or self._release_timer is not None:
            return
        if (wait := self._released_at + 10.0 - now) > 0:  # again once the 10 s are over
            self._release_timer = asyncio.get_running_loop().call_later(wait, self._release_later)
            return
        self._release_due = False
        self._released_at = now
        if release_freed_heap():
            self.memory_releases += 1
            log.debug(
                "freed heap released after a drain in %.1f ms", (time.monotonic() - now) * 1e3
            )

    def _release_later(self) -> None:
        self._release_timer = None
        self._maybe_release()

    async def _send_batch(
        self, client: aiomqtt.Client, batches: list[Batch], slots: asyncio.Semaphore
    ) -> None:
        try:
            first, last = batches[0].id, batches[-1].id
            readings = [(b.count, b.received_at) for b in batches if b.kind == KIND_READINGS]
            msgs = self._projected([(t, p, False) for t, p in self._encode(batches, time.time())])
            batches.clear()  # the stored rows are in the payloads now: do not hold them twice
            await asyncio.gather(*(client.publish(t, p, qos=1, timeout=60) for t, p, _r in msgs))
            await self.outbox.ack(first, last)
        finally:
            slots.release()
            self._inflight -= 1
        done = time.time()
        self.last_ack_at = done
        self.published_messages += len(msgs)
        self.published_bytes += sum(len(p) for _t, p, _r in msgs)
        self.published_rows += sum(count for count, _at in readings)
        if readings:  # the oldest reading of the batch waited longest: record its latency
            self._latency_ms.append((done - readings[0][1]) * 1000.0)
        self._maybe_release()

    def _encode(self, batches: list[Batch], now: float) -> list[tuple[str, bytes]]:
        """All reading batches as one readings message, each event as its own message."""
        gw, session = self.gateway, self.outbox.session
        readings = [b for b in batches if b.kind == KIND_READINGS]
        out = []
        if readings:
            backfill = now - readings[0].received_at > self.live_window
            rows = [b.body for b in readings]
            payload = messages.readings_payload(
                gw, session, now, readings[0].first_seq, readings[-1].last_seq, rows, backfill
            )
            out.append((self.topics.readings, payload))
        for b in batches:
            if b.kind == KIND_EVENT:
                doc = messages.event(gw, session, now, b.first_seq, b.asset, json.loads(b.body))
                out.append((self.topics.event(b.asset), messages.dumps(doc)))
        return out

    async def _live_publisher(self, client: aiomqtt.Client) -> None:
        while True:
            batch = [await self._live.get()]
            while not self._live.empty() and len(batch) < 256:
                batch.append(self._live.get_nowait())
            batch = self._projected(batch)
            await asyncio.gather(
                *(client.publish(t, p, qos=1, retain=r, timeout=30) for t, p, r in batch)
            )

    # -- downlink ------------------------------------------------------------------------------

    async def _receiver(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload
            if topic == self.topics.rebirth:
                log.info("rebirth requested")
                await self._publish_birth(client)
                continue
            where = self.topics.downlink_asset(topic)
            if where is None or not isinstance(payload, bytes | bytearray):
                self.downlink_refused += 1
                continue
            if len(payload) > MAX_DOWNLINK_BYTES:
                self.downlink_refused += 1
                log.warning(
                    "downlink on %s refused: %d bytes > %d", topic, len(payload), MAX_DOWNLINK_BYTES
                )
                continue
            await self._downlink(where[0], where[1], bytes(payload))

    # -- figures -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        lat = sorted(self._latency_ms)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None

        return {
            "state": self.state,
            "broker": self.cfg.display_url,
            "backlog_rows": self.outbox.rows,
            "published_rows": self.published_rows,
            "published_messages": self.published_messages,
            "published_bytes": self.published_bytes,
            "last_ack_at": self.last_ack_at,
            "publish_latency_ms": {"p50": pct(0.5), "p99": pct(0.99)},
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "downlink_refused": self.downlink_refused,
            "memory_releases": self.memory_releases,
        }


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None).malloc_trim  # glibc; musl and other C libraries have none
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_MALLOC_TRIM = _malloc_trim()


def release_freed_heap() -> bool:
    """Hand the free pages of every malloc arena back to the OS (what the process freed stays
    mapped otherwise, at the size of its largest peak); False where the C library cannot."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


class PinMismatch(ssl.SSLCertVerificationError):
    """The broker's certificate verified but matches none of ``pin_sha256``."""


class _PinnedSocket(ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except OSError:
            self.close()  # paho leaves a socket whose handshake failed open
            raise
        pins: frozenset[str] = getattr(self.context, "pins", frozenset())
        if not pins:
            return
        der = self.getpeercert(binary_form=True) or b""
        if not pins & cert_pins(der):
            self.close()
            raise PinMismatch("the broker's certificate matches none of pin_sha256")


class _PinnedContext(ssl.SSLContext):
    """A client context that also checks the broker certificate against the configured pins."""

    sslsocket_class = _PinnedSocket
    pins: frozenset[str] = frozenset()


def cert_pins(der: bytes) -> set[str]:
    """The SHA-256 (hex) of a DER certificate and of its SubjectPublicKeyInfo: either may be
    pinned (the public key's pin survives a certificate renewal with the same key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization as ser

    pins = {hashlib.sha256(der).hexdigest()}
    try:
        spki = (
            x509.load_der_x509_certificate(der)
            .public_key()
            .public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
        )
    except ValueError:
        return pins
    pins.add(hashlib.sha256(spki).hexdigest())
    return pins


class _LastError(logging.Handler):
    """Remembers the last error paho logged during a connection attempt."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.text = record.getMessage()


def _tls_alert(text: str) -> str | None:
    low = text.lower()
    if "certificate required" in low:
        return "TLS: the broker requires a client certificate (set cert_file and key_file)"
    if any(k in low for k in ("unknown ca", "bad certificate", "certificate unknown")):
        return f"TLS: the broker refused our client certificate ({text})"
    return None


def explain(err: BaseException, logged: str | None = None) -> str:
    """A connection failure in words a technician can act on; never includes credentials.

    ``logged`` is what paho logged meanwhile: a TLS 1.3 broker refuses a client certificate
    only after the handshake, which paho logs and then reports as a timeout.
    """
    while isinstance(err, aiomqtt.MqttError) and isinstance(err.__context__, OSError):
        err = err.__context__  # aiomqtt re-raises socket and TLS errors as a bare MqttError
    text = str(err) or type(err).__name__
    if isinstance(err, PinMismatch):
        return f"TLS: {text} (check [broker] pin_sha256)"
    if isinstance(err, ssl.SSLCertVerificationError):
        why = err.verify_message or text
        return f"TLS: the broker's certificate is not trusted ({why}; check [broker] ca_file)"
    alert = _tls_alert(text) or (_tls_alert(logged) if logged else None)
    if alert is not None:
        return alert
    if isinstance(err, ssl.SSLError):
        return f"TLS: {text}"
    if isinstance(err, aiomqtt.MqttCodeError) and any(
        k in text.lower() for k in ("not authorized", "bad user name or password")
    ):
        return f"the broker refused the login ({text}): check username and the password"
    if isinstance(err, ConnectionResetError | BrokenPipeError):
        return f"connection closed by the broker ({text}); with TLS, check the client certificate"
    return f"{text} ({logged})" if logged else text
