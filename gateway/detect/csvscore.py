"""Score a CSV stream with a model, strictly causally: row t is scored from rows <= t only.

A univariate model reads one value column (``--value-column``, default the second column); a
multivariate model reads one column per quantity of its manifest, named after the quantity. The
time column (default the first) holds epoch seconds or ISO 8601 times and must not go
backwards. Every input row is written back with two more columns: ``score`` (0..1) and
``anomaly`` (1 when the score reaches the threshold). Bad input raises ConfigError naming the
file, the row (1 = the header line) and the column.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from gateway.detect import features
from gateway.detect.bundle import Bundle
from gateway.errors import ConfigError

__all__ = ["parse_time", "score_csv"]

CHUNK = 4096
#: larger values would overflow the window statistics (squares) into NaN scores
MAX_MAGNITUDE = 1e150


def parse_time(text: str) -> float:
    """Epoch seconds from a number or an ISO 8601 time (naive times are taken as UTC)."""
    try:
        t = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(t):
            raise ValueError(f"not a time: {text!r}")
        return t
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _text_lines(handle: IO[bytes], file: str) -> Iterator[str]:
    """The file's lines as text; a line that is not UTF-8 is an error naming its row."""
    for n, raw in enumerate(handle, start=1):
        try:
            yield raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(file, f"row {n}", "UTF-8 text", raw[:40]) from e


def _columns(bundle: Bundle, header: list[str], file: str, time_col: str | None,
             value_col: str | None) -> tuple[str, list[str]]:  # fmt: skip
    if len(header) < 2:
        raise ConfigError(file, "header", "a header row with a time and a value column", header)
    tcol = time_col or header[0]
    single = len(bundle.quantities) == 1
    vcols = [value_col or header[1]] if single else list(bundle.quantities)
    for col in (tcol, *vcols):
        if col not in header:
            raise ConfigError(file, f"column {col!r}", f"one of {', '.join(header)}")
    return tcol, vcols


def _rows(reader: Iterator[dict[str, str]], file: str, tcol: str, vcols: list[str]
          ) -> Iterator[tuple[dict[str, str], float, list[float]]]:  # fmt: skip
    last = -math.inf
    for line, row in enumerate(reader, start=2):
        if None in row:  # csv.DictReader keeps cells beyond the header under the key None
            raise ConfigError(file, f"row {line}", "no more cells than the header has columns")
        text = row.get(tcol)
        try:
            t = parse_time(text or "")
        except ValueError:
            raise ConfigError(file, f"row {line}: {tcol}", "a time (epoch s or ISO 8601)",
                              text) from None  # fmt: skip
        if t < last:
            raise ConfigError(file, f"row {line}: {tcol}", f"times in order (>= {last})", text)
        last = t
        values = []
        for col in vcols:
            raw = row.get(col)
            try:
                v = float(raw if raw is not None else "")
            except ValueError:
                v = math.nan
            if not abs(v) <= MAX_MAGNITUDE:  # NaN and infinities fail this too
                raise ConfigError(
                    file, f"row {line}: {col}", f"a finite number within ±{MAX_MAGNITUDE:g}", raw
                )
            values.append(v)
        yield row, t, values


def _score_chunk(bundle: Bundle, history: npt.NDArray[np.float64], times: list[float],
                 seen: int) -> npt.NDArray[np.float32]:  # fmt: skip
    """Scores of the last len(times) rows of ``history`` (which holds up to length-1 older rows)."""
    length = bundle.window
    n = len(times)
    windows, filled = features.sliding(history, length)
    windows, filled = windows[-n:], filled[-n:] + (seen - (len(history) - n))
    t = np.asarray(times, dtype=np.float64)
    x = features.compute(bundle.feature_set, windows, filled, t, bundle.params)
    return bundle.run(x)


def score_csv(
    bundle: Bundle,
    path: Path,
    out: IO[str],
    time_col: str | None = None,
    value_col: str | None = None,
    threshold: float | None = None,
) -> tuple[int, int]:
    """Score ``path`` with ``bundle`` and write it to ``out``; returns (rows, flagged)."""
    thr = bundle.threshold if threshold is None else threshold
    file = str(path)
    try:
        handle = path.open("rb")
    except OSError as e:
        raise ConfigError(file, "", "a readable CSV file", str(e)) from e
    with handle:
        reader = csv.DictReader(_text_lines(handle, file))
        try:
            header = list(reader.fieldnames or [])
        except csv.Error as e:
            raise ConfigError(file, "header", "CSV text", str(e)) from e
        tcol, vcols = _columns(bundle, header, file, time_col, value_col)
        writer = csv.DictWriter(out, fieldnames=[*header, "score", "anomaly"], lineterminator="\n")
        writer.writeheader()
        total = flagged = 0
        keep = np.empty((0, len(vcols)))
        buf: list[tuple[dict[str, str], float, list[float]]] = []

        def flush() -> None:
            nonlocal keep, total, flagged
            if not buf:
                return
            if total == 0:  # pad exactly as training did: repeat the first row
                keep = np.empty((0, len(vcols)))
            history = np.concatenate([keep, np.array([v for _, _, v in buf])])
            scores = _score_chunk(bundle, history, [t for _, t, _ in buf], total)
            for (row, _, _), s in zip(buf, scores.tolist(), strict=True):
                hit = s >= thr
                flagged += int(hit)
                writer.writerow({**row, "score": f"{s:.6f}", "anomaly": int(hit)})
            total += len(buf)
            keep = history[-(bundle.window - 1) :] if bundle.window > 1 else history[:0]
            buf.clear()

        try:
            for item in _rows(reader, file, tcol, vcols):
                buf.append(item)
                if len(buf) >= CHUNK:
                    flush()
        except csv.Error as e:
            raise ConfigError(file, f"row {reader.line_num}", "CSV text", str(e)) from e
        flush()
    return total, flagged
