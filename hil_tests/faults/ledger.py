"""The ledger harness: devices that stamp every reading with a unique id, the gateway as a real
``twinedge run`` subprocess, a consumer on the real mosquitto, and the books compared at the end.

- :class:`LedgerDevice` is a node outside the gateway process (it survives a gateway crash). It
  speaks the node wire protocol (:mod:`edge_node.protocol`) over TCP, samples at a fixed rate
  whether or not the gateway is there, stamps each value with a running number (the value
  itself, exact in float32 up to 2**24), keeps every frame in the node framework's
  :class:`edge_node.buffer.SendBuffer` until the gateway acknowledges it, and resends what is
  unacknowledged on every new connection. Acknowledged = the gateway committed it.
- :class:`Consumer` subscribes to the gateway's feed with a persistent session (QoS 1) and keeps,
  for every reading row, its feed seq and its (asset, id); it reconnects by itself.
- :class:`GatewayProcess` runs the gateway through :mod:`hil_tests.faults.launch` and kills it.
- :func:`settle` compares the books: what devices emitted and had acknowledged, what the gateway
  committed (its seq counter), what the consumer received before and after removing duplicates,
  and what the gateway reported as dropped. :class:`Books` prints that line and checks the
  contract: nothing acknowledged is missing unless it is counted in the reported drops, and
  nothing counts twice: after dedupe by seq no reading is left twice under two seqs (a device's
  resend of a frame committed before a crash is acknowledged again, not stored again).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_node import protocol
from edge_node.buffer import SendBuffer
from gateway.broker import free_port
from gateway.feed.consumer import left_queued
from hil_tests.faults.ledger_source import RESEND_LOG

__all__ = [
    "BASE",
    "Books",
    "Consumer",
    "GatewayProcess",
    "LedgerDevice",
    "drained",
    "kill9_cycles",
    "settle",
    "until",
    "write_site",
]

GATEWAY, SITE_ID = "gw-ledger", "faults"
BASE = f"twinedge/v1/{SITE_ID}/{GATEWAY}"
VALUES_PER_FRAME = 25  # 25 ids per readings frame keeps the body under protocol.MAX_BODY
RESEND_S = 3.0  # a device resends a frame unacknowledged this long (a node's resend_s)


async def until(
    cond: Callable[[], bool], within: float = 30.0, what: str | Callable[[], str] = ""
) -> None:
    """Wait for a condition on in-memory test state (checked every 10 ms), with a timeout."""
    try:
        async with asyncio.timeout(within):
            while not cond():  # noqa: ASYNC110 - polls harness state, bounded by the timeout
                await asyncio.sleep(0.01)
    except TimeoutError:
        said = what() if callable(what) else what or str(cond)
        raise TimeoutError(f"timed out after {within} s waiting for {said}") from None


# -- devices ------------------------------------------------------------------------------------


class LedgerDevice:
    """``async with LedgerDevice("dev-1", rate=200) as dev:``; the gateway connects to ``dev.port``.

    ``rate`` is readings per second (sent ``VALUES_PER_FRAME`` to a frame). ``flap_after`` closes
    a connection after about that many new frames; ``garbage`` sends that many bytes of noise (and a
    frame with a broken CRC) before every good frame.
    """

    def __init__(
        self,
        name: str,
        *,
        rate: float = 500.0,
        flap_after: int = 0,
        garbage: int = 0,
        capacity: int = 1_000_000,
    ) -> None:
        self.name = name
        self.rate = rate
        self.flap_after = flap_after
        self.garbage = garbage
        self.port = free_port()
        self.boot = random.getrandbits(32)
        self.buffer = SendBuffer(capacity)
        self.frame_seq = 0  # frames made
        self.acked_frames: set[int] = set()  # frames the gateway acknowledged (committed)
        self.acked_upto = 0  # every frame <= this was acknowledged
        self.connections = 0
        self.bad_sent = 0
        self.running = True
        self._writer: asyncio.StreamWriter | None = None
        self._rng = random.Random(self.boot)
        self._stack = AsyncExitStack()

    @property
    def emitted(self) -> int:
        return self.frame_seq * VALUES_PER_FRAME

    @property
    def acked(self) -> int:
        return len(self.acked_frames) * VALUES_PER_FRAME

    def acked_ids(self) -> set[int]:
        """The unique ids of every reading the gateway acknowledged."""
        return {(f - 1) * VALUES_PER_FRAME + i + 1 for f in self.acked_frames
                for i in range(VALUES_PER_FRAME)}  # fmt: skip

    async def __aenter__(self) -> Self:
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        await self._stack.enter_async_context(server)
        tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._sampler = tg.create_task(self._sample(), name=f"ledger-{self.name}")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._sampler.cancel()
        if self._writer is not None:
            self._writer.close()
        await self._stack.aclose()

    def pause(self) -> None:
        """Stop sampling (the test's load ends); unacknowledged frames are still resent."""
        self.running = False

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        start, made = loop.time(), 0
        while True:
            await asyncio.sleep(0.01)  # the node's sampling clock, not a wait for an event
            w = self._writer
            if w is not None and not w.is_closing():  # as a node: resend what stays unacked
                for seq, frame in self.buffer.due(int(RESEND_S * 1000), 1 << 30):
                    self.buffer.mark_sent(seq)
                    self._send(w, frame)
            if not self.running:
                continue
            due = int((loop.time() - start) * self.rate / VALUES_PER_FRAME)
            for _ in range(due - made):
                self._make_frame()
            made = due

    def _make_frame(self) -> None:
        self.frame_seq += 1
        first = (self.frame_seq - 1) * VALUES_PER_FRAME + 1
        msg = {
            "type": "readings",
            "node": self.name,
            "seq": self.frame_seq,
            "time": round(time.time(), 3),  # the device's own clock
            "values": [["uid", float(i)] for i in range(first, first + VALUES_PER_FRAME)],
        }
        frame = protocol.encode(msg)
        w = self._writer
        sent = w is not None and not w.is_closing()
        self.buffer.add(self.frame_seq, frame, sent)
        if sent:
            assert w is not None
            self._send(w, frame, live=True)

    def _send(self, w: asyncio.StreamWriter, frame: bytes, live: bool = False) -> None:
        if self.garbage:
            noise = self._rng.randbytes(self.garbage)
            broken = bytearray(frame)
            broken[len(broken) // 2] ^= 0x55
            w.write(noise + bytes(broken))
            self.bad_sent += 1
        w.write(frame)
        if live and self.flap_after and self._rng.random() < 1 / self.flap_after:
            w.close()  # drop the line after ~flap_after new frames (resends always complete)

    def _acked(self, upto: int, got: int) -> None:
        self.buffer.ack(upto, got)
        self.acked_frames.update(range(self.acked_upto + 1, upto + 1))
        if got:
            self.acked_frames.add(got)
        while self.acked_upto + 1 in self.acked_frames:
            self.acked_upto += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:
            self._writer.close()  # one gateway at a time: a new connection replaces the old
        self._writer = writer
        self.connections += 1
        hello = {
            "type": "hello", "node": self.name, "seq": self.frame_seq, "boot": self.boot,
            "firmware": "ledger-1", "period_ms": 10, "sensors": [["uid", "C62", 10]],
        }  # fmt: skip
        writer.write(protocol.encode(hello))
        for seq, frame in self.buffer.due(0, 1 << 30):  # resend everything not acknowledged
            self.buffer.mark_sent(seq)
            self._send(writer, frame)
        splitter = protocol.FrameSplitter()
        try:
            while data := await reader.read(4096):
                for f in splitter.feed(data):
                    msg = protocol.decode(f)
                    if msg["type"] == "ack":
                        self._acked(msg["upto"], msg["got"])
        except (ConnectionError, protocol.ProtocolError):
            pass
        finally:
            writer.close()
            if self._writer is writer:
                self._writer = None


# -- consumer -----------------------------------------------------------------------------------


def _expiry(seconds: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = seconds
    return props


class Consumer:
    """A feed consumer with a persistent session that survives broker restarts and reconnects.

    ``rows[seq]`` is the first copy of each reading row; ``copies`` counts every row received,
    duplicates included; ``births`` keeps the status documents (the reported drop counters).
    """

    def __init__(
        self,
        port: int,
        identifier: str = "ledger-consumer",
        base: str = BASE,
        key: Callable[[list[Any]], Any] = lambda row: int(row[3]),
    ) -> None:
        self.port = port
        self.base = base
        self.key = key  # a reading row -> its unique id within its asset (default: the value)
        self.identifier = identifier
        self.rows: dict[tuple[str, int], tuple[str, Any]] = {}  # (session, seq) -> (asset, id)
        self.copies = 0
        self.messages = 0
        self.conflicts = 0  # the same seq with different content: must stay 0
        self.births: list[dict[str, Any]] = []
        self.deltas: list[dict[str, Any]] = []
        self.received_at: list[tuple[int, float]] = []  # (seq, gateway receive time) per row
        self.deaths: list[dict[str, Any]] = []
        self.sessions: set[str] = set()
        self.arrivals: list[tuple[float, int]] = []  # (loop time, rows) per readings message
        self.connected = asyncio.Event()
        self.connects = 0  # sessions taken up (a restart of the broker or a cut adds one)
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._task = tg.create_task(self._run(), name="ledger-consumer")
        await until(self.connected.is_set, 15, "the consumer to connect")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._task.cancel()
        await self._stack.aclose()

    async def _run(self) -> None:
        while True:
            client = aiomqtt.Client(
                "127.0.0.1", self.port, identifier=self.identifier, clean_start=False,
                protocol=aiomqtt.ProtocolVersion.V5, properties=_expiry(3600),
            )  # fmt: skip
            try:
                async with client:
                    await client.subscribe(f"{self.base}/#", qos=1)
                    self.connects += 1
                    self.connected.set()
                    async for m in client.messages:
                        self._take(str(m.topic), m.payload)
            except aiomqtt.MqttError:
                self.connected.clear()
                for m in left_queued(client):  # acknowledged to the broker: ours or lost
                    self._take(str(m.topic), m.payload)
            await asyncio.sleep(0.1)  # the broker is down: try again shortly

    def _take(self, topic: str, payload: Any) -> None:
        doc = json.loads(payload)
        kind = doc.get("kind")
        self.messages += 1
        if kind == "readings":
            session = doc["session"]
            self.sessions.add(session)
            rows = doc["rows"]
            self.arrivals.append((asyncio.get_running_loop().time(), len(rows)))
            for row in rows:
                self.copies += 1
                self.received_at.append((row[0], row[6]))
                entry = (row[1], self.key(row))
                if self.rows.setdefault((session, row[0]), entry) != entry:
                    self.conflicts += 1
        elif kind == "birth":
            self.births.append(doc)
        elif kind == "event":  # events take seqs from the same counter as readings
            entry = (f"event/{doc['asset']}", doc["seq"])
            if self.rows.setdefault((doc["session"], doc["seq"]), entry) != entry:
                self.conflicts += 1
        elif kind == "delta":
            self.deltas.append(doc)
        elif kind == "death":
            self.deaths.append(doc)

    def ids_of(self, asset: str) -> set[Any]:
        return {uid for a, uid in self.rows.values() if a == asset}

    def seq_books(self) -> tuple[int, int]:
        """(seqs committed, seqs missing): per store session, the highest seq and the holes."""
        top: dict[str, int] = {}
        for session, seq in self.rows:
            top[session] = max(top.get(session, 0), seq)
        committed = sum(top.values())
        return committed, committed - len(self.rows)


# -- the gateway process ------------------------------------------------------------------------


def write_site(
    tmp: Path,
    broker_port: int,
    devices: list[LedgerDevice],
    *,
    store: str = "store.db",
    buffer: str = "",
    broker_extra: str = "",
    stale_after: str = "30s",
) -> tuple[Path, int]:
    """A site file for the ledger devices; returns it and the status API port."""
    (tmp / "models").mkdir(exist_ok=True)  # no anomaly model: the ids are not sensor values
    api_port = free_port()
    assets = "".join(
        f'[[assets]]\nid = "{d.name}"\ncategory = "water-quality"\nlocation = [4.9, 52.37]\n'
        f'source = "ledger:127.0.0.1:{d.port}"\n'
        for d in devices
    )
    text = (
        f'[gateway]\nid = "{GATEWAY}"\nsite = "{SITE_ID}"\nstore = "{store}"\nmodels = "models"\n'
        'delta_interval = "0.5s"\n'
        f'stale_after = "{stale_after}"\n'
        f'[broker]\nurl = "mqtt://127.0.0.1:{broker_port}"\nkeepalive = "5s"\n{broker_extra}\n'
        f"[buffer]\n{buffer}\n"
        f'[api]\nlisten = "127.0.0.1:{api_port}"\n{assets}'
    )
    path = tmp / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path, api_port


class GatewayProcess:
    """``twinedge run`` in a subprocess (via the ledger launcher); its stderr goes to a log."""

    def __init__(
        self, site: Path, api_port: int, env: dict[str, str] | None = None, start: bool = True
    ) -> None:
        self.site, self.api_port = site, api_port
        self.env = {**os.environ, **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.log = site.with_name("gateway.log")
        self.kills = 0
        self._start_on_enter = start

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hil_tests.faults.launch", "run", str(self.site),
                stdout=log, stderr=log, env=self.env, cwd=str(Path(__file__).parents[2]),
            )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        self.kills += 1

    async def stop(self) -> int:
        """SIGTERM: a clean stop (drains the ingest queue, publishes death)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await self.proc.wait()
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def status(self) -> dict[str, Any]:
        """The running gateway's /api/status."""
        url = f"http://127.0.0.1:{self.api_port}/api/status"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            resp.raise_for_status()
            doc: dict[str, Any] = await resp.json()
            return doc

    async def wait_status(
        self, cond: Callable[[dict[str, Any]], bool], within: float = 30.0
    ) -> dict[str, Any]:
        """Until the status satisfies ``cond`` (the API may not be up yet)."""
        last: dict[str, Any] = {}

        def ok() -> bool:
            return bool(last) and cond(last)

        async with asyncio.timeout(within):
            while True:
                with suppress(aiohttp.ClientError, OSError):
                    last = await self.status()
                    if ok():
                        return last
                await asyncio.sleep(0.05)  # the API is polled, bounded by the timeout

    def tail(self, n: int = 30) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])

    async def __aenter__(self) -> Self:
        if self._start_on_enter:
            await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()


# -- the books ----------------------------------------------------------------------------------


@dataclass
class Books:
    """The ledger of one scenario; ``check()`` asserts the contract, ``line()`` prints it."""

    scenario: str
    emitted: int = 0  # ids the devices made
    acked: int = 0  # ids the gateway acknowledged to the devices (committed)
    committed: int = 0  # feed seqs the gateway gave out in its current session
    received: int = 0  # reading rows the consumer got, duplicates included
    unique_seqs: int = 0  # after removing uplink resends by seq
    unique_ids: int = 0  # after also removing device resends by (asset, id)
    device_resends: int = 0  # ids received under two seqs (stored twice across a crash): 0
    dropped: int = 0  # what the gateway reported as dropped (status buffer.dropped.total)
    missing_acked: int = 0  # acknowledged ids not received
    missing_seqs: int = 0  # seqs 1..committed not received
    conflicts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        base = (
            f"LEDGER {self.scenario}: emitted={self.emitted} acked={self.acked} "
            f"committed={self.committed} received={self.received} "
            f"unique_seqs={self.unique_seqs} unique_ids={self.unique_ids} "
            f"device_resends={self.device_resends} dropped={self.dropped} "
            f"missing_acked={self.missing_acked} missing_seqs={self.missing_seqs} "
            f"overcounted={self.dropped - self.missing_seqs}"
        )
        return base + "".join(f" {k}={v}" for k, v in self.extra.items())

    def check(self, *, exact_drops: bool = True, overcount: int = 0) -> None:
        """``exact_drops``: every hole in the seqs is a reported drop and the report is not
        above the holes by more than ``overcount`` (readings that were in flight when a
        connection broke reach the broker but are counted as dropped if the policy removes
        them before they are sent again: the count errs on the side of reporting)."""
        print(self.line())
        assert self.conflicts == 0, "a seq arrived twice with different content"
        assert self.missing_acked <= self.dropped, "acknowledged readings lost without a report"
        if exact_drops:
            assert self.missing_seqs <= self.dropped <= self.missing_seqs + overcount, (
                self.missing_seqs,
                self.dropped,
            )
        assert self.unique_ids + self.missing_acked >= self.acked
        assert self.device_resends == 0, "a device's resend was stored a second time"


def settle(scenario: str, devices: list[LedgerDevice], consumer: Consumer, dropped: int) -> Books:
    """Compare the books once the devices have nothing unacknowledged and the feed is drained.

    Seqs are given from a counter in the store with no holes, so ``committed`` is the highest
    seq received in each store session and every hole below it must be a reported drop.
    """
    books = Books(scenario, dropped=dropped, conflicts=consumer.conflicts)
    books.received = consumer.copies
    books.unique_seqs = len(consumer.rows)
    per_id = Counter(consumer.rows.values())
    books.unique_ids = len(per_id)
    books.device_resends = sum(c - 1 for c in per_id.values())
    for d in devices:
        books.emitted += d.emitted
        books.acked += d.acked
        books.missing_acked += len(d.acked_ids() - consumer.ids_of(d.name))
    books.committed, books.missing_seqs = consumer.seq_books()
    books.extra["consumer_sessions"] = consumer.connects
    return books


async def drained(
    gw: GatewayProcess, devices: list[LedgerDevice], consumer: Consumer, within: float = 60.0
) -> dict[str, Any]:
    """Stop the load, wait until every device frame is acknowledged, the outbox is empty and the
    consumer has every reading that was not reported dropped; returns the final status."""
    for d in devices:
        d.pause()
    await until(
        lambda: all(d.acked_upto == d.frame_seq for d in devices),
        within,
        lambda: (
            "device acks: " + ", ".join(f"{d.name} {d.acked_upto}/{d.frame_seq}" for d in devices)
        ),
    )
    status = await gw.wait_status(
        lambda s: s["buffer"]["rows"] == 0 and s["readings"]["queued"] == 0, within
    )
    dropped = status["buffer"]["dropped"]["total"]

    def complete() -> bool:
        last = all(
            d.emitted in consumer.ids_of(d.name)
            for d in devices
            if isinstance(d, LedgerDevice) and d.emitted
        )
        return last and consumer.seq_books()[1] <= dropped

    with suppress(TimeoutError):  # if it never completes, the books show what is missing
        await until(complete, within, "the consumer to receive every committed reading")
    return status


async def kill9_cycles(
    tmp: Path, broker_port: int, consumer: Consumer, cycles: int, *, rate: float = 600.0,
    seed: int = 6,
) -> tuple[Books, dict[str, Any]]:  # fmt: skip
    """Three ledger devices under steady load; the gateway is killed with SIGKILL at a random
    moment 0.1-0.8 s after its feed starts, restarted, ``cycles`` times; then drained and the
    books settled. Returns the books and figures (restart-to-birth times)."""
    rng = random.Random(seed)
    devices = [LedgerDevice(n, rate=rate) for n in ("dev-a", "dev-b", "dev-c")]
    async with AsyncExitStack() as stack:
        for d in devices:
            await stack.enter_async_context(d)
        site, api = write_site(tmp, broker_port, devices)
        gw = await stack.enter_async_context(GatewayProcess(site, api, start=False))
        loop = asyncio.get_running_loop()
        restarts: list[float] = []
        try:
            for _ in range(cycles):
                births, seen = len(consumer.births), consumer.copies
                t0 = loop.time()
                await gw.start()
                await until(lambda: len(consumer.births) > births, 20, "the birth")  # noqa: B023
                restarts.append(loop.time() - t0)
                await until(lambda: consumer.copies > seen, 20, "readings")  # noqa: B023
                await asyncio.sleep(rng.uniform(0.1, 0.8))  # the random kill moment under load
                await gw.kill9()
            await gw.start()
            status = await drained(gw, devices, consumer)
            clean_stop = await gw.stop()
        except BaseException:
            print(gw.tail())
            raise
    books = settle(f"kill9 x{gw.kills}", devices, consumer, status["buffer"]["dropped"]["total"])
    books.extra["deaths_by_will"] = sum(d["reason"] == "lost" for d in consumer.deaths)
    # frames committed just before a kill and resent by their device, not stored again
    books.extra["resent_frames_not_stored"] = gw.log.read_text(errors="replace").count(RESEND_LOG)
    restarts.sort()
    figures = {
        "kills": gw.kills,
        "restart_to_birth_s": {
            "p50": round(restarts[len(restarts) // 2], 3),
            "max": round(restarts[-1], 3),
        },
        "clean_stop_rc": clean_stop,
        "sessions": len(consumer.sessions),
    }
    return books, figures
