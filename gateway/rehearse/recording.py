"""A bounded rolling recording of raw readings per asset, and its file format.

:class:`Recorder` keeps the newest readings of each asset up to ``max_bytes`` per asset (the size
of their rows in the file), dropping the oldest first and counting what it dropped. Pedestrian
counters are recorded counts-only: ``count_in``/``count_out`` and nothing else (no battery, no
radio strength, no device id), so a recording of a street holds no more than the feed does.

The file is gzip-compressed JSON lines: a header object ``{"format": "twinedge-recording",
"version": 1, "assets": {id: {"category": ..., "units": {quantity: unit}}}, "dropped": {...}}``
then one row per reading ``[asset, quantity, value, observed_at]`` in time order. The header may
carry ``"labels": {asset: [[start, end, kind]]}`` (a scenario saved as a recording keeps its ground
truth; a gateway's own recording has none). A rehearsal reads it back with
:func:`load_recording` as one :class:`~gateway.rehearse.scenario.Series` per asset.
"""

from __future__ import annotations

import gzip
import json
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gateway.errors import ConfigError
from gateway.readings import Quality, Reading
from gateway.rehearse.scenario import Series

__all__ = ["COUNTS_ONLY", "FORMAT", "Recorder", "load_recording"]

FORMAT = "twinedge-recording"
VERSION = 1
COUNTS_ONLY = {"pedestrian-counter": frozenset({"count_in", "count_out"})}
_Row = tuple[str, float, float]  # quantity, value, observed_at
Label = tuple[float, float, str]  # start, end, kind


class Recorder:
    """Keeps the newest raw readings of each asset within ``max_bytes`` per asset.

    ``assets`` maps asset id to category; readings of other assets are ignored. Invalid and
    non-finite values are not recorded (nothing to rehearse with).
    """

    def __init__(self, assets: Mapping[str, str], max_bytes: int = 8 << 20) -> None:
        if max_bytes < 64:
            raise ValueError(f"max_bytes must be at least 64, got {max_bytes}")
        self.assets = dict(assets)
        self.max_bytes = max_bytes
        self._rows: dict[str, deque[tuple[_Row, int]]] = {a: deque() for a in self.assets}
        self._bytes = dict.fromkeys(self.assets, 0)
        self._units: dict[str, dict[str, str]] = {a: {} for a in self.assets}
        self.dropped = dict.fromkeys(self.assets, 0)

    def record(self, batch: list[Reading]) -> None:
        """Add a batch of readings (cheap: called for every batch the gateway stores)."""
        for r in batch:
            rows = self._rows.get(r.asset)
            if rows is None or r.quality is Quality.INVALID or r.value != r.value:
                continue
            allowed = COUNTS_ONLY.get(self.assets[r.asset])
            if allowed is not None and r.quantity not in allowed:
                continue
            row = (r.quantity, float(r.value), r.time)
            size = len(_line(r.asset, row))
            rows.append((row, size))
            self._units[r.asset].setdefault(r.quantity, r.unit)
            self._bytes[r.asset] += size
            while self._bytes[r.asset] > self.max_bytes:
                _, old = rows.popleft()
                self._bytes[r.asset] -= old
                self.dropped[r.asset] += 1

    def stats(self) -> dict[str, dict[str, int]]:
        """Per asset: rows kept, their bytes and rows dropped by the cap."""
        return {a: {"rows": len(self._rows[a]), "bytes": self._bytes[a],
                    "dropped": self.dropped[a]} for a in self.assets}  # fmt: skip

    def export(self, path: str | Path, labels: Mapping[str, list[Label]] | None = None) -> int:
        """Write the recording to ``path`` (gzip JSON lines); returns the rows written.

        ``labels`` (asset -> [(start, end, kind)]) is ground truth to keep with the readings,
        e.g. when a scenario is saved as a recording; a gateway's own recording has none.
        """
        header: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "dropped": self.dropped,
            "assets": {a: {"category": c, "units": self._units[a]} for a, c in self.assets.items()},
        }  # fmt: skip
        if labels:
            header["labels"] = {a: [list(x) for x in v] for a, v in labels.items() if v}
        merged = sorted(((row[2], a, row) for a, rows in self._rows.items() for row, _ in rows),
                        key=lambda x: x[0])  # fmt: skip
        with gzip.open(Path(path), "wt", encoding="utf-8", compresslevel=6) as f:
            f.write(json.dumps(header, separators=(",", ":")) + "\n")
            for _, asset, row in merged:
                f.write(_line(asset, row))
        return len(merged)

    @classmethod
    def load(cls, path: str | Path, max_bytes: int = 8 << 20) -> Recorder:
        """A recorder holding the readings of a recording file (the cap applies again)."""
        header, rows = _read(Path(path))
        rec = cls({a: v["category"] for a, v in header["assets"].items()}, max_bytes)
        for asset, q, value, t in rows:
            unit = header["assets"][asset]["units"].get(q, "")
            rec.record([Reading(asset, q, value, unit, t, t)])
        for a, n in header.get("dropped", {}).items():
            rec.dropped[a] = rec.dropped.get(a, 0) + int(n)
        return rec


def _line(asset: str, row: _Row) -> str:
    return json.dumps([asset, row[0], row[1], row[2]], separators=(",", ":")) + "\n"


def _read(path: Path) -> tuple[dict[str, Any], list[tuple[str, str, float, float]]]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            header = json.loads(f.readline())
            _check_header(str(path), header)
            rows = []
            for n, line in enumerate(f, start=2):
                rows.append(_row(str(path), n, json.loads(line), header["assets"]))
    except FileNotFoundError:
        raise ConfigError(str(path), "", "an existing recording file") from None
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(str(path), "", f"a gzip JSON-lines recording ({e})") from None
    return header, rows


def _check_header(file: str, header: Any) -> None:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ConfigError(file, "format", f"{FORMAT!r} in the first line", None)
    if header.get("version") != VERSION:
        raise ConfigError(file, "version", f"version {VERSION}", header.get("version"))
    assets = header.get("assets")
    if not isinstance(assets, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("category"), str)
        and isinstance(v.get("units"), dict) for v in assets.values()
    ):  # fmt: skip
        raise ConfigError(file, "assets", "an object of asset -> {category, units}", None)


def _row(file: str, n: int, row: Any, assets: dict[str, Any]) -> tuple[str, str, float, float]:
    ok = isinstance(row, list) and len(row) == 4 and row[0] in assets
    ok = ok and isinstance(row[1], str)
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in row[2:])
    if not ok:
        raise ConfigError(file, f"line {n}", "[asset, quantity, value, observed_at]", row)
    return row[0], row[1], float(row[2]), float(row[3])


def load_recording(path: str | Path) -> list[Series]:
    """A recording file as one :class:`Series` per asset (values aligned on sample times)."""
    header, rows = _read(Path(path))
    by_asset: dict[str, dict[float, dict[str, float]]] = {a: {} for a in header["assets"]}
    for asset, q, value, t in rows:
        by_asset[asset].setdefault(t, {})[q] = value
    out: list[Series] = []
    for asset, samples in by_asset.items():
        meta = header["assets"][asset]
        times = np.array(sorted(samples), dtype=np.float64)
        values = {q: np.array([samples[t].get(q, np.nan) for t in times.tolist()])
                  for q in meta["units"]}  # fmt: skip
        labels = [
            (float(a), float(b), str(k)) for a, b, k in header.get("labels", {}).get(asset, [])
        ]
        out.append(Series(asset, meta["category"], times, values, dict(meta["units"]), labels))
    return out
