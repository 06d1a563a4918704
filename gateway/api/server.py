"""The aiohttp server behind the status page: routes, token check, SSE stream, history recorder."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import ipaddress
import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web

from gateway.api.metrics import render_metrics
from gateway.errors import ConfigError
from gateway.readings import UNITS

__all__ = ["ApiServer", "EventsFactory", "StatusFn", "serve_api"]

log = logging.getLogger("twinedge.api")

StatusFn = Callable[[], dict[str, Any]]
EventsFactory = Callable[[], AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: events buffered per SSE client between the app's subscription and the socket
SSE_QUEUE = 256
#: most events written to one client in one write
SSE_BATCH = 64
#: a comment line every this many seconds keeps proxies open and finds vanished clients
SSE_HEARTBEAT_S = 15.0
#: a client that cannot take one event within this time is disconnected
SSE_WRITE_TIMEOUT_S = 10.0
#: recent values kept per (asset, quantity) for the sparklines
HISTORY_POINTS = 120
_STATIC = {
    "/": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}
_PUBLIC = frozenset({*_STATIC, "/healthz", "/favicon.ico"})


@dataclass(slots=True)
class ApiStats:
    """The server's own counters; they appear in ``/metrics``."""

    sse_clients: int = 0
    sse_dropped: int = 0  # events not delivered because a client's queue was full
    sse_slow_disconnects: int = 0
    status_errors: int = 0
    unauthorized: int = 0
    requests: int = 0


@dataclass(slots=True)
class History:
    """A ring of recent (time, value) points per asset and quantity, fed from reading events."""

    points: int = HISTORY_POINTS
    series: dict[str, dict[str, deque[tuple[float, float]]]] = field(default_factory=dict)

    def add(self, event: Mapping[str, Any]) -> None:
        asset, quantity, value = event.get("asset"), event.get("quantity"), event.get("value")
        if not isinstance(asset, str) or not isinstance(quantity, str):
            return
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            return
        ts = event.get("ts")
        when = float(ts) if isinstance(ts, int | float) else time.time()
        per_asset = self.series.setdefault(asset, {})
        ring = per_asset.setdefault(quantity, deque(maxlen=self.points))
        ring.append((round(when, 3), float(value)))

    def as_dict(self, asset: str | None = None) -> dict[str, dict[str, list[list[float]]]]:
        assets = [asset] if asset is not None else list(self.series)
        return {
            a: {q: [list(p) for p in ring] for q, ring in self.series.get(a, {}).items()}
            for a in assets
            if a in self.series
        }


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events one SSE client wants: ``?asset=a,b&quantity=ph&type=reading,anomaly``."""

    assets: frozenset[str] = frozenset()
    quantities: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> EventFilter:
        def split(key: str) -> frozenset[str]:
            return frozenset(v for v in query.get(key, "").split(",") if v)

        return cls(split("asset"), split("quantity"), split("type"))

    def __call__(self, event: Mapping[str, Any]) -> bool:
        if self.types and event.get("type") not in self.types:
            return False
        if self.assets and event.get("asset", event.get("device")) not in self.assets:
            return False
        if not self.quantities:
            return True
        named = event.get("quantities")  # an anomaly names every quantity it covers
        if isinstance(named, list):
            return not self.quantities.isdisjoint(str(q) for q in named)
        return event.get("quantity") in self.quantities


def _drain(
    first: dict[str, Any] | None, queue: asyncio.Queue[dict[str, Any] | None]
) -> tuple[list[bytes], bool]:
    """SSE frames of ``first`` and what else is queued (up to a batch); True at the end marker."""
    chunks: list[bytes] = []
    event = first
    while True:
        if event is None:
            return chunks, True
        kind = str(event.get("type", "message"))
        chunks.append(f"event: {kind}\ndata: {dumps(event)}\n\n".encode())
        if len(chunks) >= SSE_BATCH or queue.empty():
            return chunks, False
        event = queue.get_nowait()


def jsonable(obj: Any) -> Any:
    """Make a snapshot safe for strict JSON: non-finite floats become null, enums their value."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset | deque):
        return [jsonable(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return jsonable(obj.value)
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), ensure_ascii=False, separators=(",", ":"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or "" (all interfaces): treat as exposed


class ApiServer:
    """The running server. Use :func:`serve_api` to create one."""

    def __init__(
        self, status: StatusFn, events: EventsFactory, host: str, port: int, token: str | None
    ) -> None:
        if not is_loopback(host) and not token:
            raise ConfigError(
                "api", "token", f"an access token to listen on the non-loopback address {host!r}"
            )
        self._status = status
        self._events = events
        self.host = host
        self.port = port
        self._token = token
        self.stats = ApiStats()
        self.history = History()
        self.started = time.monotonic()
        self._streams: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host or '0.0.0.0'}:{self.port}/"

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        for path in _STATIC:
            app.router.add_get(path, self._static)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/api/status", self._api_status)
        app.router.add_get("/api/history", self._api_history)
        app.router.add_get("/api/events", self._api_events)
        app.router.add_get("/metrics", self._metrics)
        return app

    # -- auth ---------------------------------------------------------------------------------

    def authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        given = request.query.get("token", "")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header.removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), self._token.encode())

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.stats.requests += 1
        if request.method not in ("GET", "HEAD"):
            # read-only API: nothing may change state, with or without a token
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        if request.path not in _PUBLIC and not self.authorized(request):
            self.stats.unauthorized += 1
            log.warning(
                "api: refused %s from %s: missing or wrong token", request.path, request.remote
            )
            return web.json_response(
                {
                    "error": "missing or wrong token: send 'Authorization: Bearer <token>' "
                    "or add ?token=<token>"
                },
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="twinedge"'},
            )
        return await handler(request)

    # -- plain endpoints ----------------------------------------------------------------------

    async def _static(self, request: web.Request) -> web.Response:
        name, ctype = _STATIC[request.path]
        body = resources.files("gateway.api").joinpath("static", name).read_bytes()
        return web.Response(
            body=body, content_type=ctype, charset="utf-8", headers={"Cache-Control": "no-cache"}
        )

    def snapshot(self) -> dict[str, Any]:
        """The app's status, or a :class:`web.HTTPServiceUnavailable` naming what failed."""
        try:
            snap = self._status()
            if not isinstance(snap, Mapping):
                raise TypeError(f"status() returned {type(snap).__name__}, expected a dict")
            out: dict[str, Any] = jsonable(snap)
            return out
        except Exception as e:  # the app's status callback is a foreign component
            self.stats.status_errors += 1
            log.exception("api: the gateway status could not be read")
            raise web.HTTPServiceUnavailable(
                text=dumps({"error": f"gateway status unavailable: {e}"}),
                content_type="application/json",
            ) from e

    async def _api_status(self, request: web.Request) -> web.Response:
        body = self.snapshot()
        body.setdefault("units", UNITS)  # display symbols for the page
        body["now"] = time.time()  # lets a client judge staleness against the gateway's clock
        return web.Response(text=dumps(body), content_type="application/json")

    async def _api_history(self, request: web.Request) -> web.Response:
        body = self.history.as_dict(request.query.get("asset"))
        return web.Response(text=dumps(body), content_type="application/json")

    async def _healthz(self, request: web.Request) -> web.Response:
        snap = self.snapshot()
        uplink = snap.get("uplink", {})
        body = {
            "ok": True,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "uplink": uplink.get("state") if isinstance(uplink, dict) else None,
        }
        return web.Response(text=dumps(body), content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        text = render_metrics(self.snapshot(), self.stats)
        return web.Response(
            text=text,
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    # -- live events --------------------------------------------------------------------------

    async def _api_events(self, request: web.Request) -> web.StreamResponse:
        wanted = EventFilter.from_query(request.query)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        self.stats.sse_clients += 1
        try:
            await resp.write(b"retry: 2000\n: twinedge events\n\n")
            async with self._events() as stream, asyncio.TaskGroup() as tg:
                queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(SSE_QUEUE)
                pump = tg.create_task(self._pump(stream, wanted, queue), name="api-sse-pump")
                await self._write_events(resp, queue)
                pump.cancel()
        except ConnectionResetError:
            pass  # the client went away
        finally:
            self.stats.sse_clients -= 1
            self._streams.discard(task)
        return resp

    async def _pump(
        self,
        stream: AsyncIterator[dict[str, Any]],
        wanted: EventFilter,
        queue: asyncio.Queue[dict[str, Any] | None],
    ) -> None:
        """Move events from the app into this client's queue; never wait on the client."""
        try:
            async for event in stream:
                if not wanted(event):
                    continue
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    self.stats.sse_dropped += 1
        except Exception:  # a foreign component: end this client's stream, keep the server
            log.exception("api: the live-event subscription failed")
        finally:
            if queue.full():  # make room for the end marker: the writer must learn of the end
                queue.get_nowait()
                self.stats.sse_dropped += 1
            queue.put_nowait(None)  # the app stopped publishing: end the stream

    async def _write_events(
        self, resp: web.StreamResponse, queue: asyncio.Queue[dict[str, Any] | None]
    ) -> None:
        """Write queued events to the client, many per write when they pile up."""
        while True:
            try:
                async with asyncio.timeout(SSE_HEARTBEAT_S):
                    first = await queue.get()
            except TimeoutError:
                chunks, done = [b": ping\n\n"], False
            else:
                chunks, done = _drain(first, queue)
            if chunks and not await self._send(resp, b"".join(chunks)):
                return
            if done:
                return

    async def _send(self, resp: web.StreamResponse, chunk: bytes) -> bool:
        try:
            async with asyncio.timeout(SSE_WRITE_TIMEOUT_S):
                await resp.write(chunk)
        except TimeoutError:
            self.stats.sse_slow_disconnects += 1
            log.warning("api: dropped a live-events client that stopped reading")
            return False
        except ConnectionResetError:
            return False  # the client went away (closed the page, lost the network)
        return True

    async def record_history(self) -> None:
        """Keep recent reading values for the sparklines; resubscribe if the feed fails."""
        backoff = 0.5
        while not self._closing.is_set():
            try:
                async with self._events() as stream:
                    backoff = 0.5
                    async for event in stream:
                        if event.get("type") == "reading":
                            self.history.add(event)
                return  # the app closed the subscription: it is shutting down
            except Exception:  # a foreign component; keep serving the page without history
                log.exception("api: live events failed; resubscribing in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def close_streams(self) -> None:
        self._closing.set()
        for task in list(self._streams):
            task.cancel()


@asynccontextmanager
async def serve_api(
    *,
    status: StatusFn,
    events: EventsFactory,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
) -> AsyncIterator[ApiServer]:
    """Serve the status page and API until the block exits; ``port=0`` picks a free port."""
    server = ApiServer(status, events, host, port, token)
    runner = web.AppRunner(server.make_app(), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host or None, port)
        try:
            await site.start()
        except OSError as e:
            raise ConfigError(
                "api", "listen", f"a free address to listen on ({e})", f"{host}:{port}"
            ) from e
        sockets = [s for s in (runner.addresses or []) if isinstance(s, tuple)]
        if sockets:
            server.port = int(sockets[0][1])
        log.info("status page at %s", server.url)
        # a plain task, not a TaskGroup: an error in the caller's block must reach the caller
        # as itself, not wrapped in an ExceptionGroup
        recorder = asyncio.create_task(server.record_history(), name="api-history")
        try:
            yield server
        finally:
            recorder.cancel()
            await server.close_streams()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder
    finally:
        await runner.cleanup()
