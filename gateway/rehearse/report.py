"""Render a rehearsal: a rich table for the terminal, and a self-contained HTML page with SVG.

The HTML page has no external assets (no scripts, fonts or style sheets from elsewhere): one
inline ``<style>``, the summary table, and per asset an inline SVG of its main quantity with the
labelled faults shaded and, under it, one strip per side marking where that side flagged.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.readings import iso
from gateway.rehearse.compare import Rehearsal
from gateway.rehearse.scenario import Series

__all__ = ["ROWS", "html_report", "print_table"]

#: the summary rows: label, path in a side's dict, digits
ROWS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("precision", ("detection", "precision"), 3),
    ("recall", ("detection", "recall"), 3),
    ("F1", ("detection", "f1"), 3),
    ("labelled faults", ("detection", "events"), 0),
    ("faults missed", ("detection", "missed_events"), 0),
    ("median delay (s)", ("detection", "median_delay_s"), 0),
    ("false-alarm samples", ("detection", "false_positive_rows"), 0),
    ("alerts raised", ("alerts",), 0),
    ("shadow alerts", ("shadow_alerts",), 0),
    ("readings published", ("readings",), 0),
    ("bytes published", ("published_bytes",), 0),
    ("bytes per reading", ("bytes_per_reading",), 1),
    ("outage backlog (readings)", ("backlog_max_readings",), 0),
    ("backfill bytes", ("backfill_bytes",), 0),
    ("scoring µs per reading", ("latency", "us_per_reading"), 2),
    ("scoring p99 ms per batch", ("latency", "batch_p99_ms"), 3),
)
PRIMARY = {"water-quality": "dissolved_oxygen", "streetlight": "power",
           "pedestrian-counter": "count_in"}  # fmt: skip
COLOURS = {"current": "#1f77b4", "candidate": "#d62728"}


def _get(d: dict[str, Any] | None, path: tuple[str, ...]) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _fmt(v: Any, digits: int) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) or digits:
        return f"{float(v):,.{digits}f}"
    return f"{v:,}"


def summary_rows(doc: dict[str, Any]) -> list[list[str]]:
    """The summary as text cells: label, current, candidate."""
    sides = doc["sides"]
    return [[label, *(_fmt(_get(sides[s], path), d) for s in ("current", "candidate"))]
            for label, path, d in ROWS]  # fmt: skip


def print_table(doc: dict[str, Any], console: Any = None) -> None:
    """The summary and the alerts per asset as rich tables."""
    from rich.console import Console
    from rich.table import Table

    out = console or Console()
    sides = doc["sides"]
    title = doc["input"].get("name", doc["input"]["kind"])
    t = Table(title=f"rehearsal: {title}")
    t.add_column("")
    t.add_column(f"current\n{sides['current']['source']}", justify="right")
    t.add_column(f"candidate\n{sides['candidate']['source']}", justify="right")
    for row in summary_rows(doc):
        t.add_row(*row)
    out.print(t)
    a = Table(title="alerts per asset (flagged samples)")
    for col in ("asset", "category", "current", "candidate"):
        a.add_column(col, justify="right" if col in ("current", "candidate") else "left")
    for asset, cur in sides["current"]["assets"].items():
        cand = sides["candidate"]["assets"][asset]
        a.add_row(asset, cur["category"], f"{cur['alerts']} ({cur['flagged']})",
                  f"{cand['alerts']} ({cand['flagged']})")  # fmt: skip
    out.print(a)


# --------------------------------------------------------------------------- HTML
_STYLE = """
body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:1000px}
table{border-collapse:collapse;margin:1em 0}td,th{padding:.25em .8em;border-bottom:1px solid #ddd}
td.n{text-align:right;font-variant-numeric:tabular-nums}h2{margin-top:1.6em;font-size:1.1em}
.k{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle}
"""


def html_report(r: Rehearsal) -> str:
    """A self-contained HTML page: summary, per-asset alerts and SVG plots."""
    doc = r.as_dict()
    title = html.escape(str(doc["input"].get("name", doc["input"]["kind"])))
    parts = [f"<!doctype html><html lang=en><meta charset=utf-8><title>Rehearsal: {title}</title>",
             f"<style>{_STYLE}</style><h1>Rehearsal: {title}</h1>",
             f"<p>{html.escape(str(doc['input'].get('description', '')))}</p>",
             _summary_html(doc), _legend()]  # fmt: skip
    current = {s.asset: s for s in r.inputs["current"]}
    outages = [(e["start"], e["end"]) for e in doc["input"].get("events", [])
               if e["kind"] == "broker_outage"]  # fmt: skip
    for asset, series in current.items():
        flags = {name: res.traces[asset] for name, res in r.results.items()}
        parts.append(f"<h2>{html.escape(asset)} ({html.escape(series.category)})</h2>")
        parts.append(_plot(series, {n: (t.times, t.flagged) for n, t in flags.items()}, outages))
    return "\n".join(parts) + "\n</html>\n"


def _summary_html(doc: dict[str, Any]) -> str:
    sides = doc["sides"]
    head = "".join(f"<th>{s}<br><small>{html.escape(sides[s]['source'])}</small></th>"
                   for s in ("current", "candidate"))  # fmt: skip
    rows = "".join(
        f"<tr><td>{html.escape(a)}</td><td class=n>{b}</td><td class=n>{c}</td></tr>"
        for a, b, c in summary_rows(doc)
    )
    return f"<table><tr><th></th>{head}</tr>{rows}</table>"


def _legend() -> str:
    keys = "".join(f"<span class=k style='background:{c}'></span>{n} flagged"
                   for n, c in COLOURS.items())  # fmt: skip
    return (f"<p>{keys}<span class=k style='background:#f5c16c'></span>labelled fault"
            "<span class=k style='background:#bbb'></span>broker outage</p>")  # fmt: skip


def _plot(series: Series, flags: dict[str, tuple[npt.NDArray[np.float64], Any]],
          outages: list[tuple[float, float]]) -> str:  # fmt: skip
    """An SVG line of the main quantity, label spans and outages shaded, a flag strip per side."""
    w, h, strip = 960.0, 160.0, 10.0
    q = PRIMARY.get(series.category, next(iter(series.values)))
    t, v = _thin(series.times, series.values[q], 800)
    if not len(t):
        return "<p>(no samples)</p>"
    t0, t1 = float(series.times[0]), max(float(series.times[-1]), float(series.times[0]) + 1)
    lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    span = hi - lo or 1.0

    gutter = 56.0  # room for the side names left of their strips

    def x(tt: float) -> float:
        return gutter + (tt - t0) / (t1 - t0) * (w - gutter)

    shapes = [f"<rect x='{x(a):.1f}' y='0' width='{max(x(b) - x(a), 1):.1f}' height='{h:.0f}' "
              f"fill='#f5c16c' opacity='.5'><title>{html.escape(k)}</title></rect>"
              for a, b, k in series.labels]  # fmt: skip
    shapes += [f"<rect x='{x(a):.1f}' y='0' width='{max(x(b) - x(a), 1):.1f}' height='{h:.0f}' "
               f"fill='#888' opacity='.35'><title>broker outage</title></rect>"
               for a, b in outages]  # fmt: skip
    pts = " ".join(f"{x(a):.1f},{h - 4 - (b - lo) / span * (h - 8):.1f}"
                   for a, b in zip(t.tolist(), v.tolist(), strict=True) if b == b)  # fmt: skip
    shapes.append(f"<polyline points='{pts}' fill='none' stroke='#333' stroke-width='1'/>")
    for i, (name, (times, flagged)) in enumerate(flags.items()):
        shapes += _strip(name, _runs(times, flagged), h + 6 + i * (strip + 4), strip, x)
    total = h + 6 + len(flags) * (strip + 4) + 14
    axis = (f"<text x='{gutter:.0f}' y='{total - 2:.0f}' font-size='10'>{iso(t0)}</text>"
            f"<text x='{w:.0f}' y='{total - 2:.0f}' font-size='10' text-anchor='end'>{iso(t1)}"
            f"</text><text x='0' y='12' font-size='10'>{hi:.4g}</text>"
            f"<text x='0' y='{h / 2:.0f}' font-size='10'>{q}</text>"
            f"<text x='0' y='{h - 2:.0f}' font-size='10'>{lo:.4g}</text>")  # fmt: skip
    return (f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {w:.0f} {total:.0f}' "
            f"width='100%' role='img'>{''.join(shapes)}{axis}</svg>")  # fmt: skip


def _strip(name: str, runs: list[tuple[float, float]], y: float, height: float,
           x: Callable[[float], float]) -> list[str]:  # fmt: skip
    """One side's flag strip: its name, then a bar over each flagged stretch."""
    out = [f"<text x='0' y='{y + height - 1:.0f}' font-size='9'>{name}</text>"]
    colour = COLOURS.get(name, "#555")
    out += [f"<rect x='{x(a):.1f}' y='{y:.0f}' width='{max(x(b) - x(a), 1):.1f}' "
            f"height='{height:.0f}' fill='{colour}'/>" for a, b in runs]  # fmt: skip
    return out


def _thin(t: npt.NDArray[np.float64], v: npt.NDArray[np.float64],
          n: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:  # fmt: skip
    """At most ``n`` points: min and max of each bucket, so spikes stay visible."""
    if len(t) <= n:
        return t, v
    idx = np.array_split(np.arange(len(t)), n // 2)
    keep = sorted({int(i[np.nanargmin(v[i])]) for i in idx if len(i) and not np.isnan(v[i]).all()}
                  | {int(i[np.nanargmax(v[i])]) for i in idx
                     if len(i) and not np.isnan(v[i]).all()})  # fmt: skip
    return t[keep], v[keep]


def _runs(times: npt.NDArray[np.float64], flagged: Any) -> list[tuple[float, float]]:
    """Contiguous flagged stretches as (start, end) times."""
    f = np.asarray(flagged, dtype=np.int8)
    if not f.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], f, [0]])))
    last = len(times) - 1
    return [(float(times[a]), float(times[min(b, last)])) for a, b in
            zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True)]  # fmt: skip
