"""The gateway: the one place where the stages are wired together.

    sources ─► ingest queue ─► detect ─► outbox (durable) ─► twins ─► uplink (MQTT)
                                                   └─────► local subscribers (API, tail)

Start order: outbox, uplink, API, ingest and flush tasks, then the device supervisors. Stop order
is the reverse: devices first, then the ingest queue is drained into the outbox and the twins are
flushed, then the uplink publishes its death, then the store closes. A reading is committed to
the outbox before the twin shows it and before anything upstream sees it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from gateway import __version__
from gateway.config import AssetConfig, BrokerConfig, Site
from gateway.downlink import Downlink
from gateway.errors import ConfigError, ModelError
from gateway.hub import Hub
from gateway.outbox import Outbox, StoreError
from gateway.readings import Reading
from gateway.security import DownlinkGuard, NonceStore
from gateway.shipped import shipped_models
from gateway.sources import Source, SourceContext, parse_duration
from gateway.supervise import supervise
from gateway.sync import messages
from gateway.sync.messages import Topics
from gateway.sync.projection import project
from gateway.sync.uplink import Message, Uplink
from gateway.twin import Twin

if TYPE_CHECKING:
    from gateway.rehearse.recording import Recorder
    from gateway.sync.http_upsert import HttpUpsert

__all__ = ["Gateway"]

log = logging.getLogger("twinedge.gateway")
INGEST_BATCH = 1024
MODEL_STATS_EVERY = 60.0  # seconds between refreshes of the model statistics in the twins


class Gateway:
    """``async with Gateway(site) as gw: await gw.wait()``."""

    def __init__(
        self,
        site: Site,
        *,
        broker: BrokerConfig | None = None,
        options: Mapping[str, Any] | None = None,
        api_listen: tuple[str, int] | None = None,
    ) -> None:
        self.site = site
        self.broker = broker or site.broker
        self.options = dict(options or {})  # objects injected into sources (e.g. BLE backends)
        self.api_listen = api_listen
        self.topics = Topics(
            self.broker.topic_prefix if self.broker else "twinedge/v1", site.site, site.gateway_id
        )
        self.queue: asyncio.Queue[Reading] = asyncio.Queue(maxsize=20_000)
        self.hub = Hub()
        self.twins: dict[str, Twin] = {a.id: self._new_twin(a) for a in site.assets}
        self.contexts: dict[str, SourceContext] = {}
        self.sources: dict[str, Source] = {}
        self.readings_in = 0
        self._file_restores = 0
        self.downlink: Downlink
        self.warnings: deque[dict[str, Any]] = deque(maxlen=50)
        self.started_at = time.time()
        self._started_mono = time.monotonic()  # uptime survives a wall-clock jump
        self.detector: Any = None
        self.uplink: Uplink | None = None
        self.recorder: Recorder | None = None  # rolling recording for rehearsals, when enabled
        self.http: HttpUpsert | None = None  # NGSI-LD by HTTP upsert, when it is the upstream
        self.api_url: str | None = None
        self.outbox: Outbox
        self._stack = AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._device_tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._models_due = 0.0  # monotonic time of the next model statistics refresh

    @staticmethod
    def _new_twin(a: AssetConfig) -> Twin:
        profile = a.profile
        spec_period = a.source.param("period")
        period = (
            a.period
            or (parse_duration(spec_period, file=a.source.raw) if spec_period else None)
            or (profile.period if profile else None)
        )
        return Twin(
            a.id,
            category=a.category,
            name=a.name,
            location=a.location,
            attributes=a.attributes,
            source=a.source.raw,
            profile=profile.name if profile else None,
            stale_after=a.stale_after,
            config={"period": period, "thresholds": {}},
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _start(self) -> None:
        buf = self.site.buffer
        self.outbox = await self._stack.enter_async_context(
            Outbox(
                self.site.store_path,
                max_rows=buf.max_rows,
                max_bytes=buf.max_bytes,
                synchronous=buf.synchronous,
            )
        )
        if self.outbox.recovered_from is not None:
            self.warn(f"store was unreadable; moved aside to {self.outbox.recovered_from.name}")
        await self._restore_twins()
        self.downlink = self._make_downlink()
        self.detector = self._load_detector()
        self._refresh_models(asyncio.get_running_loop().time())  # births carry the model too
        self._start_recording()
        await self._start_upstream()
        await self._start_api()
        self._stack.push_async_callback(self._stop_core)
        self._tasks = [
            asyncio.create_task(self._ingest(), name="ingest"),
            asyncio.create_task(self._flush_loop(), name="flush"),
        ]
        self._stack.push_async_callback(self._stop_devices)
        for asset in self.site.assets:
            self._device_tasks.append(
                asyncio.create_task(self._run_device(asset), name=f"device:{asset.id}")
            )

    def _make_downlink(self) -> Downlink:
        sec, store = self.site.security, self.site.store_path
        nonces = sec.nonce_file or store.with_name(store.name + ".nonces.json")
        return Downlink(
            guard=DownlinkGuard(sec.trusted, sec.require_signed_downlink, NonceStore(nonces)),
            base_topic=self.topics.base,
            twins=self.twins,
            sources=self.sources,
            detector=lambda: self.detector,
            trusted=sec.trusted,
            bundles_dir=store.parent / "bundles",
            warn=lambda msg, device: self.warn(msg, device),
            report=self._publish_applied,
        )

    def _start_recording(self) -> None:
        if not self.site.recording.enabled:
            return
        from gateway.rehearse.recording import Recorder

        assets = {a.id: a.category for a in self.site.assets}
        self.recorder = Recorder(assets, self.site.recording.max_bytes)
        self._stack.push_async_callback(self._export_recording)

    async def _start_upstream(self) -> None:
        """The MQTT uplink (with a projection beside the native feed), or NGSI-LD by HTTP."""
        table, file = self.site.projection, str(self.site.file)
        projection = project(str(table.get("kind", "native")), self.site.site, table, file)
        if projection is not None and table.get("delivery") == "http":
            from gateway.sync.http_upsert import HttpUpsert
            from gateway.sync.ngsi_ld import NgsiProjection

            if not isinstance(projection, NgsiProjection):
                raise ConfigError(file, "projection.delivery",
                                  "'mqtt' for a projection other than ngsi-ld", "http")  # fmt: skip
            http = await self._stack.enter_async_context(
                HttpUpsert.from_config(self.outbox, projection, table, file)
            )
            for _topic, payload, _retain in self._birth()[1:]:  # every twin, as it stands
                http.submit(json.loads(payload))
            self.http, projection = http, None
        if self.broker is not None:
            self.uplink = await self._stack.enter_async_context(
                Uplink(self.broker, self.topics, self.outbox, gateway=self.site.gateway_id,
                       birth=self._birth, death=self._death, downlink=self.downlink.handle,
                       live_window=self.site.buffer.live_window, projection=projection)
            )  # fmt: skip

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopped.set()
        await self._stack.aclose()

    async def wait(self) -> None:
        """Until the gateway is stopped (or a core task fails, which raises)."""
        stop = asyncio.create_task(self._stopped.wait())
        done, _ = await asyncio.wait([stop, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        for task in done:
            if task is not stop:
                task.result()

    def stop(self) -> None:
        self._stopped.set()

    async def _stop_devices(self) -> None:
        for task in self._device_tasks:
            task.cancel()
        await asyncio.gather(*self._device_tasks, return_exceptions=True)

    async def _stop_core(self) -> None:
        try:
            async with asyncio.timeout(10):
                await self.queue.join()  # every reading the devices gave is in the store
        except TimeoutError:
            log.error("stop: %d readings still queued after 10 s", self.queue.qsize())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for twin in self.twins.values():
            twin.mark_stale()
        await self._flush()

    async def _start_api(self) -> None:
        cfg = self.site.api
        if not cfg.enabled and self.api_listen is None:
            return
        from gateway.api import serve_api

        host, port = self.api_listen or (cfg.host, cfg.port)
        token = cfg.token_file.read_text(encoding="utf-8").strip() if cfg.token_file else None
        server = await self._stack.enter_async_context(
            serve_api(status=self.status, events=self.events, host=host, port=port, token=token)
        )
        self.api_url = f"http://{host}:{server.port}/"

    # -- devices -------------------------------------------------------------------------------

    async def _run_device(self, asset: AssetConfig) -> None:
        committed = functools.partial(self.outbox.committed, asset.id)
        ctx = SourceContext(asset.id, asset.profile, options=self.options, committed=committed)
        self.contexts[asset.id] = ctx
        spec = asset.source
        if asset.period is not None and "period" not in spec.params:
            spec = replace(spec, params={**spec.params, "period": f"{asset.period}s"})

        def opened(source: Source | None) -> None:
            if source is None:
                self.sources.pop(asset.id, None)
            else:
                self.sources[asset.id] = source

        await supervise(spec, ctx, self.queue, on_open=opened)

    # -- ingest --------------------------------------------------------------------------------

    async def _ingest(self) -> None:
        q = self.queue
        carried: list[Reading] = []
        while True:
            batch = carried or [await q.get()]
            while len(batch) < INGEST_BATCH and not q.empty():
                batch.append(q.get_nowait())
            batch, carried = _whole_frames(batch) if not q.empty() else (batch, [])
            try:
                await self._take(batch)
            finally:
                for _ in batch:
                    q.task_done()

    async def _take(self, batch: list[Reading]) -> None:
        events = self.detector.score(batch) if self.detector is not None else []
        try:
            await self.outbox.append(batch, [(e.asset, e.as_dict()) for e in events])
        except StoreError as e:
            if not e.repeated:  # a full disk is warned once a spell, not for every batch
                self.warn(str(e))
            return
        self.readings_in += len(batch)
        if self.outbox.file_restores > self._file_restores:
            self._file_restores = self.outbox.file_restores
            self.warn(f"store {self.outbox.path} was removed while running; written back")
        self._tell_committed(batch)
        if self.recorder is not None:
            self.recorder.record(batch)
        mono = asyncio.get_running_loop().time()
        for r in batch:
            twin = self.twins.get(r.asset)
            if twin is not None:
                twin.observe(r, mono)
        for ev in events:
            self._on_anomaly(ev)
        if self.uplink is not None:
            self.uplink.notify()
        if self.http is not None:
            self.http.notify()
        if self.hub:
            for r in batch:
                self.hub.publish(
                    {
                        "type": "reading",
                        "asset": r.asset,
                        "quantity": r.quantity,
                        "value": r.value,
                        "unit": r.unit,
                        "quality": r.quality.value,
                        "ts": r.time,
                        "score": r.score,
                    }
                )

    async def _export_recording(self) -> None:
        """On stop, write the rolling recording where the site file says (or beside the store)."""
        if self.recorder is None:
            return
        store = self.site.store_path
        path = self.site.recording.path or store.with_name(f"{store.stem}.recording.jsonl.gz")
        rows = await asyncio.to_thread(self.recorder.export, path)
        log.info("recording of %d readings written to %s", rows, path)

    def _tell_committed(self, batch: list[Reading]) -> None:
        """Let sources that acknowledge to their devices do so, now that nothing can be lost:
        one call per distinct (device, seq) in the batch, in order."""
        told: set[tuple[str, str, int]] = set()
        for r in batch:
            key = (r.asset, r.device, r.seq)
            if key in told:
                continue
            told.add(key)
            ctx = self.contexts.get(r.asset)
            if ctx is not None and ctx.on_commit is not None:
                ctx.on_commit(r.device, r.seq)

    def _on_anomaly(self, ev: Any) -> None:
        doc = ev.as_dict()
        twin = self.twins.get(ev.asset)
        if twin is not None:
            active = doc.get("state", "start") != "end"
            info = {k: doc.get(k) for k in ("score", "threshold", "model", "detected_at")}
            for q in ev.quantities:
                twin.set_anomaly(q, info if active else None)
        self.hub.publish(doc | {"type": "anomaly"})

    def _load_detector(self) -> Any:
        try:
            from gateway.detect import Detector
        except ImportError:
            return None
        models = self.site.models_dir or shipped_models()
        if models is None:
            return None
        try:
            return Detector.load(models, {a.id: a.category for a in self.site.assets})
        except ModelError as e:
            self.warn(f"anomaly models not loaded: {e}")
            return None

    # -- twins ---------------------------------------------------------------------------------

    async def _restore_twins(self) -> None:
        for asset, state in (await self.outbox.load_twins()).items():
            if asset in self.twins:
                self.twins[asset].restore(state)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.site.delta_interval)
            await self._flush()

    def _refresh_models(self, mono: float) -> None:
        """Every minute, each twin shows its model's recent score distribution (drift)."""
        if self.detector is None or mono < self._models_due:
            return
        self._models_due = mono + MODEL_STATS_EVERY
        stats = self.detector.stats()
        for twin in self.twins.values():
            model = stats.get(twin.category)
            if model is not None:
                keys = ("model", "mode", "threshold", "rows_scored", "rows_flagged", "scores")
                twin.set_model({k: model.get(k) for k in keys})

    async def _flush(self) -> None:
        """Liveness, counters and drops into the twins; one delta per changed twin."""
        mono = asyncio.get_running_loop().time()
        self._refresh_models(mono)
        changed: dict[str, tuple[int, Mapping[str, Any]]] = {}
        for asset_id, twin in self.twins.items():
            if twin.check_liveness(mono):
                self.hub.publish({"type": "liveness", "asset": asset_id, "online": False})
            ctx = self.contexts.get(asset_id)
            if ctx is not None:
                twin.set_counters(ctx.counters.as_dict())
                twin.set_device_info(ctx.device_info)
            twin.set_dropped(self.outbox.dropped.get(asset_id, 0))
            delta = twin.take_delta()
            if delta is None:
                continue
            revision, patch = delta
            changed[asset_id] = (revision, twin.snapshot())
            self._publish_change(asset_id, revision, patch, changed[asset_id][1])
        if changed:
            try:
                await self.outbox.save_twins(changed)
            except StoreError as e:  # e.g. a full disk: keep running, a later flush saves them
                self.warn(str(e))

    def _publish_change(
        self, asset_id: str, revision: int, patch: Mapping[str, Any], state: Mapping[str, Any]
    ) -> None:
        """A twin changed: a delta on the native feed; the whole twin to an HTTP upstream."""
        gw, session, now = self.site.gateway_id, self.outbox.session, time.time()
        if self.http is not None:
            self.http.submit(messages.twin(gw, session, now, asset_id, revision, state))
        if self.uplink is not None:
            doc = messages.delta(gw, session, now, asset_id, revision, patch)
            self.uplink.publish_live(self.topics.delta(asset_id), messages.dumps(doc))

    def _birth(self) -> Sequence[Message]:
        gw, session, now = self.site.gateway_id, self.outbox.session, time.time()
        state = {
            "version": __version__,
            "started_at": self.started_at,
            "buffer": self._buffer_state(),
            "models": self._models(),
        }
        birth = messages.birth(
            gw,
            session,
            self.outbox.boot,
            self.site.site,
            now,
            {a: t.revision for a, t in self.twins.items()},
            state,
        )
        out: list[Message] = [(self.topics.status, messages.dumps(birth), True)]
        for asset_id, twin in self.twins.items():
            doc = messages.twin(gw, session, now, asset_id, twin.revision, twin.snapshot())
            out.append((self.topics.twin(asset_id), messages.dumps(doc), True))
        return out

    def _death(self, reason: str) -> bytes:
        doc = messages.death(
            self.site.gateway_id, self.outbox.session, self.outbox.boot, time.time(), reason
        )
        return messages.dumps(doc)

    # -- downlink ------------------------------------------------------------------------------

    def _publish_applied(
        self, asset: str, msg_id: str, config: Mapping[str, Any], errors: list[str]
    ) -> None:
        if self.uplink is None:
            return
        doc = messages.applied(
            self.site.gateway_id, self.outbox.session, time.time(), asset, msg_id, config, errors
        )
        self.uplink.publish_live(self.topics.applied(asset), messages.dumps(doc), retain=True)

    # -- views ---------------------------------------------------------------------------------

    def warn(self, msg: str, device: str = "") -> None:
        log.warning("%s%s", f"{device}: " if device else "", msg)
        entry = {"ts": time.time(), "level": "warning", "msg": msg, "device": device}
        self.warnings.append(entry)
        self.hub.publish(entry | {"type": "warning"})

    def _buffer_state(self) -> dict[str, Any]:
        box = self.outbox
        return {
            "rows": box.rows,
            "bytes": box.size_bytes(),
            "max_rows": box.max_rows,
            "max_bytes": box.max_bytes,
            "dropped": {"total": box.dropped_total, "by_asset": dict(box.dropped)},
        }

    def _models(self) -> dict[str, Any]:
        if self.detector is None:
            return {}
        stats: dict[str, Any] = self.detector.stats()
        return stats

    def status(self) -> dict[str, Any]:
        """A snapshot for the API, ``twinedge status`` and the demo's summary."""
        uplink = (
            self.uplink.stats()
            if self.uplink
            else {"state": "disabled", "backlog_rows": self.outbox.rows}
        )
        return {
            "gateway": {
                "id": self.site.gateway_id,
                "site": self.site.site,
                "version": __version__,
                "session": self.outbox.session,
                "boot": self.outbox.boot,
                "started_at": self.started_at,
                "uptime_s": round(time.monotonic() - self._started_mono, 3),
            },
            "uplink": uplink,
            "buffer": self._buffer_state(),
            "assets": {a: t.snapshot() for a, t in self.twins.items()},
            "models": self._models(),
            "warnings": list(self.warnings),
            "readings": {
                "in": self.readings_in,
                "out": uplink.get("published_rows", 0),
                "queued": self.queue.qsize(),
            },
            "recording": self.recorder.stats() if self.recorder is not None else None,
            "downlink": {
                "refused": self.downlink.refused
                + (self.uplink.downlink_refused if self.uplink else 0),
                "signature_refused": dict(self.downlink.refusals),
                "signed_required": self.site.security.require_signed_downlink,
            },
        }

    def events(self) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        """A live subscription to readings, anomalies, liveness changes and warnings."""
        return self.hub.subscribe()


def _whole_frames(batch: list[Reading]) -> tuple[list[Reading], list[Reading]]:
    """Split a batch cut by its size limit into what to commit now and what waits for the next
    batch: each device's last frame (readings with a ``boot``), which may go on in the queue. A
    frame is marked committed and acknowledged with the batch that holds it, so it must be whole
    there, or a crash between two batches would lose its rest. (A frame's readings are queued
    in order; a full queue can put other devices' readings between them, and the frame is then
    carried from batch to batch until its last reading is in.)
    """
    last: dict[tuple[str, str], tuple[int, int]] = {}
    for r in reversed(batch):
        if r.boot is not None and (r.asset, r.device) not in last:
            last[(r.asset, r.device)] = (r.boot, r.seq)
    if not last:
        return batch, []
    now: list[Reading] = []
    later: list[Reading] = []
    for r in batch:
        ends = r.boot is not None and last[(r.asset, r.device)] == (r.boot, r.seq)
        (later if ends else now).append(r)
    return (now, later) if now else (batch, [])
