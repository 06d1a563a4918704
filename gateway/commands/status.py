"""``twinedge status`` (a table of the running gateway) and ``twinedge tail`` (live events).

Both talk to the gateway's local API (``/api/status`` and the ``/api/events`` SSE stream), so
they work from the gateway box or from a laptop on the site network given the token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from gateway.errors import TwinedgeError
from gateway.readings import UNITS

__all__ = ["add_parser", "format_event", "problems", "render_status"]

DEFAULT_URL = "http://127.0.0.1:8080"
_TIMEOUT_S = 10.0


def add_parser(sub: Any) -> None:
    status = sub.add_parser(
        "status",
        help="show the running gateway: devices, readings, buffer, uplink",
        description="Show the running gateway's devices, last readings, counters, buffer and "
        "uplink, read from its local API.",
    )
    _connection_args(status)
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")
    status.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep trying this long while the gateway is not up yet (after a start or reboot)",
    )
    status.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a device is stale, the uplink is down or readings were dropped",
    )
    status.add_argument(
        "--drain",
        action="store_true",
        help="follow the buffer's backlog with a progress bar until all of it is sent",
    )
    status.set_defaults(func=run_status)

    tail = sub.add_parser(
        "tail",
        help="follow live readings and events",
        description="Print live readings, anomalies, liveness changes and warnings as they happen.",
    )
    _connection_args(tail)
    tail.add_argument("--asset", action="append", default=[], help="only this asset (repeatable)")
    tail.add_argument("--quantity", action="append", default=[], help="only this quantity")
    tail.add_argument(
        "--type",
        action="append",
        default=[],
        choices=("reading", "anomaly", "liveness", "warning"),
        help="only this kind of event (repeatable)",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--count", type=int, default=0, help="stop after N events (0: follow)")
    tail.set_defaults(func=run_tail)


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("TWINEDGE_URL", DEFAULT_URL),
        help=f"the gateway's API (default: $TWINEDGE_URL or {DEFAULT_URL})",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("TWINEDGE_TOKEN"),
        help="API token when the gateway is exposed (default: $TWINEDGE_TOKEN)",
    )


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _endpoint(url: str, path: str) -> str:
    return url.rstrip("/") + path


async def _fetch_status(url: str, token: str | None) -> dict[str, Any]:
    import aiohttp

    endpoint = _endpoint(url, "/api/status")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_TIMEOUT_S)) as http,
            http.get(endpoint, headers=_headers(token)) as resp,
        ):
            _check(resp.status, endpoint)
            body: dict[str, Any] = await resp.json()
            return body
    except (aiohttp.ClientError, TimeoutError) as e:
        raise _unreachable(url, e) from None


def _check(status: int, endpoint: str) -> None:
    if status == 401:
        raise TwinedgeError(
            f"{endpoint}: the gateway wants a token: pass --token or set TWINEDGE_TOKEN"
        )
    if status != 200:
        raise TwinedgeError(f"{endpoint}: the gateway answered HTTP {status}")


class _Unreachable(TwinedgeError):
    """No HTTP answer at all (as opposed to a refusal or an error page)."""


def _unreachable(url: str, e: BaseException) -> TwinedgeError:
    why = str(e) or type(e).__name__
    return _Unreachable(
        f"cannot reach the gateway at {url} ({why}): is `twinedge run` running, and is --url right?"
    )


async def _fetch_status_waiting(url: str, token: str | None, wait_s: float) -> dict[str, Any]:
    """:func:`_fetch_status`, retried with backoff while the gateway is unreachable."""
    deadline = time.monotonic() + wait_s
    delay = 0.1
    while True:
        try:
            return await _fetch_status(url, token)
        except _Unreachable:
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)  # backoff between connection attempts
            delay = min(delay * 2, 2.0)


def problems(snap: Mapping[str, Any]) -> list[str]:
    """What a technician must act on: stale devices, a down uplink, dropped readings."""
    clock = snap.get("now")
    now = float(clock) if isinstance(clock, int | float) else time.time()
    found = [
        f"{asset} is stale"
        for asset, twin in sorted(_section(snap, "assets").items())
        if isinstance(twin, Mapping) and not _online(twin, now)
    ]
    state = _section(snap, "uplink").get("state")
    if state not in (None, "connected", "disabled"):
        found.append(f"uplink is {state}")
    dropped = _section(_section(snap, "buffer"), "dropped").get("total")
    if isinstance(dropped, int) and dropped > 0:
        found.append(f"the buffer dropped {dropped} readings")
    return found


def run_status(args: argparse.Namespace) -> int:
    if args.drain:
        from rich.console import Console

        return asyncio.run(follow_drain(args.url, args.token, Console(stderr=True)))
    snap = asyncio.run(_fetch_status_waiting(args.url, args.token, args.wait))
    if args.json:
        json.dump(snap, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        from rich.console import Console

        render_status(snap, Console())
    if args.check:
        found = problems(snap)
        for problem in found:
            print(f"twinedge: check: {problem}", file=sys.stderr)
        return 1 if found else 0
    return 0


async def follow_drain(url: str, token: str | None, console: Any, every: float = 0.5) -> int:
    """A progress bar of the backlog being sent (after an outage) until the buffer is empty.

    Readings that arrive meanwhile extend the total, so the bar counts what was sent since the
    start against what is still buffered.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    snap = await _fetch_status(url, token)
    sent0 = int(_section(snap, "uplink").get("published_rows") or 0)
    columns = (
        TextColumn("backlog"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} sent, {task.fields[left]:,} buffered"),
        TextColumn("{task.fields[note]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("drain", total=None, left=0, note="")
        t0 = time.monotonic()
        while True:
            uplink, left = _section(snap, "uplink"), int(_section(snap, "buffer").get("rows", 0))
            sent = int(uplink.get("published_rows") or 0) - sent0
            rate = sent / max(time.monotonic() - t0, 1e-3)
            note = f"{rate:,.0f} readings/s, uplink {uplink.get('state', '?')}"
            bar.update(task, completed=sent, total=sent + left, left=left, note=note)
            if left == 0:
                return 0
            await asyncio.sleep(every)  # the API has no drain event: poll it gently
            snap = await _fetch_status(url, token)


# -- rendering the status ------------------------------------------------------------------------


def _ago(ts: Any, now: float) -> str:
    if not isinstance(ts, int | float):
        return "never"
    s = max(0.0, now - ts)
    if s < 90:
        return f"{s:.0f} s ago"
    return f"{s / 60:.0f} min ago" if s < 5400 else f"{s / 3600:.1f} h ago"


def _value(v: Any, unit: Any) -> str:
    if isinstance(v, float):
        text = f"{v:.4g}"
    elif v is None:
        text = "–"
    else:
        text = str(v)
    symbol = UNITS.get(str(unit), str(unit or ""))
    return f"{text} {symbol}".rstrip()


def _section(snap: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = snap.get(key)
    return value if isinstance(value, Mapping) else {}


def _online(twin: Mapping[str, Any], now: float) -> bool:
    live = _section(twin, "liveness")
    seen, stale = live.get("last_seen"), live.get("stale_after_s")
    if isinstance(seen, int | float) and isinstance(stale, int | float) and now - seen > stale:
        return False
    return bool(live.get("online"))


def _summary(snap: Mapping[str, Any], now: float) -> list[str]:
    gw, up, buf = _section(snap, "gateway"), _section(snap, "uplink"), _section(snap, "buffer")
    lat = _section(up, "publish_latency_ms")
    readings = _section(snap, "readings")
    uptime = gw.get("uptime_s")
    up_text = f"{uptime / 3600:.1f} h" if isinstance(uptime, int | float) else "?"
    state = str(up.get("state", "unknown"))
    colour = {"connected": "green", "connecting": "yellow"}.get(state, "red")
    dropped = _section(buf, "dropped").get("total", 0)
    return [
        f"[bold]{gw.get('id', '?')}[/] site {gw.get('site', '?')} · twinedge "
        f"{gw.get('version', '?')} · up {up_text}",
        f"uplink [{colour}]{state}[/] {up.get('broker', '')} · backlog "
        f"{up.get('backlog_rows', '?')} rows · latency p50 {lat.get('p50', '–')} ms "
        f"p99 {lat.get('p99', '–')} ms · last ack {_ago(up.get('last_ack_at'), now)}",
        f"buffer {buf.get('rows', '?')} rows, {buf.get('bytes', '?')} of "
        f"{buf.get('max_bytes', '?')} bytes · dropped "
        + (f"[red]{dropped}[/]" if dropped else "0")
        + f" · readings in {readings.get('in', '?')} out {readings.get('out', '?')}",
    ]


def _device_row(asset: str, twin: Mapping[str, Any], now: float) -> list[str]:
    online = _online(twin, now)
    parts = []
    for q, s in _section(twin, "state").items():
        if not isinstance(s, Mapping):
            continue
        quality = s.get("quality", "good") if online else "stale"
        flag = "" if quality == "good" else f" [yellow]({quality})[/]"
        parts.append(f"{q} {_value(s.get('value'), s.get('unit'))}{flag}")
    counters = _section(_section(twin, "device"), "counters")
    anomalies = ", ".join(_section(twin, "anomalies"))
    return [
        asset,
        str(twin.get("category", "")),
        "[green]online[/]" if online else "[red]STALE[/]",
        _ago(_section(twin, "liveness").get("last_seen"), now),
        "\n".join(parts) or "–",
        str(counters.get("frames_bad", "–")),
        str(counters.get("gaps", "–")),
        str(counters.get("reconnects", "–")),
        f"[red]{anomalies}[/]" if anomalies else "",
    ]


def render_status(snap: Mapping[str, Any], console: Any) -> None:
    """Print the snapshot as the technician's table (rich ``Console``)."""
    from rich.table import Table

    clock = snap.get("now")  # the gateway's clock: ages are right even if ours is off
    now = float(clock) if isinstance(clock, int | float) else time.time()
    for line in _summary(snap, now):
        console.print(line, highlight=False)
    devices = Table(title="Devices", title_justify="left", expand=False)
    for col in (
        "Asset",
        "Category",
        "Liveness",
        "Seen",
        "Last readings",
        "Bad frames",
        "Gaps",
        "Reconnects",
        "Anomalies",
    ):
        devices.add_column(col, overflow="fold")
    for asset, twin in sorted(_section(snap, "assets").items()):
        if isinstance(twin, Mapping):
            devices.add_row(*_device_row(asset, twin, now))
    console.print(devices)
    models = _section(snap, "models")
    if models:
        table = Table(title="Models", title_justify="left")
        for col in ("Category", "Model", "Mode", "Scored", "Flagged", "µs/row"):
            table.add_column(col)
        for category, m in models.items():
            if isinstance(m, Mapping):
                table.add_row(
                    category,
                    str(m.get("model", m.get("version", ""))),
                    str(m.get("mode", "")),
                    str(m.get("rows_scored", m.get("scored", ""))),
                    str(m.get("rows_flagged", "")),
                    str(m.get("us_per_row", "")),
                )
        console.print(table)
    warnings = [w for w in snap.get("warnings") or [] if isinstance(w, Mapping)]
    for w in warnings[-10:]:
        who = f"{w.get('device')}: " if w.get("device") else ""
        console.print(
            f"[yellow]{w.get('level', 'warning')}[/] {_ago(w.get('ts'), now)} "
            f"{who}{w.get('msg', '')}",
            highlight=False,
        )


# -- tail ----------------------------------------------------------------------------------------


def _clock(ts: Any) -> str:
    when = ts if isinstance(ts, int | float) else time.time()
    return datetime.fromtimestamp(when, UTC).strftime("%H:%M:%S.%f")[:-3] + "Z"


def format_event(event: Mapping[str, Any]) -> str:
    """One event as one human line."""
    kind = str(event.get("type", "event"))
    head = f"{_clock(event.get('ts'))} {kind:<8} {event.get('asset', event.get('device', '-'))}"
    if kind == "reading":
        return (
            f"{head} {event.get('quantity')} = {_value(event.get('value'), event.get('unit'))}"
            f" ({event.get('quality', 'good')})"
        )
    if kind == "liveness":
        return f"{head} {'online' if event.get('online') else 'STALE'}"
    if kind == "anomaly":
        named = event.get("quantities")
        what = ",".join(map(str, named)) if isinstance(named, list) else event.get("quantity", "")
        ended = " ended" if event.get("state") == "end" else ""
        return (
            f"{head} {what}{ended} score {event.get('score')} "
            f"threshold {event.get('threshold')} {event.get('model', '')}"
        ).rstrip()
    if kind == "warning":
        return f"{head} {event.get('msg', '')}"
    rest = {k: v for k, v in event.items() if k not in ("type", "ts", "asset")}
    return f"{head} {json.dumps(rest, ensure_ascii=False)}"


async def sse_events(
    url: str, token: str | None, query: Mapping[str, str]
) -> AsyncIterator[dict[str, Any]]:
    """Yield the events of the gateway's SSE stream until it ends."""
    import aiohttp

    endpoint = _endpoint(url, "/api/events")
    if query:
        endpoint += "?" + urlencode(query)
    timeout = aiohttp.ClientTimeout(total=None, connect=_TIMEOUT_S, sock_read=None)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(endpoint, headers=_headers(token)) as resp,
        ):
            _check(resp.status, endpoint)
            data: list[str] = []
            async for raw in resp.content:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and data:
                    yield json.loads("\n".join(data))
                    data = []
    except (aiohttp.ClientError, TimeoutError) as e:
        raise _unreachable(url, e) from None


async def _tail(args: argparse.Namespace) -> int:
    query = {
        key: ",".join(values)
        for key, values in (("asset", args.asset), ("quantity", args.quantity), ("type", args.type))
        if values
    }
    seen = 0
    async for event in sse_events(args.url, args.token, query):
        line = json.dumps(event, ensure_ascii=False) if args.json else format_event(event)
        print(line, flush=True)
        seen += 1
        if args.count and seen >= args.count:
            return 0
    print("twinedge: the gateway closed the event stream", file=sys.stderr)
    return 1


def run_tail(args: argparse.Namespace) -> int:
    return asyncio.run(_tail(args))
