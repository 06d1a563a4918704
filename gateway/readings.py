"""The vocabulary every stage speaks: a Reading, its Quality and its unit (UN/CEFACT common codes).

Times are seconds since the Unix epoch (UTC) as floats: cheap to make, compare and store at
150k readings/s; :func:`iso` renders them timezone-aware for the feed. Pure code, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["UNITS", "Quality", "Reading", "iso"]


class Quality(enum.StrEnum):
    """How far a value can be trusted. Never silently dropped: a doubtful value is flagged."""

    GOOD = "good"
    SUSPECT = "suspect"  # out of physical range, or an anomaly model flagged it
    STALE = "stale"  # the device stopped reporting; the last value is history, not state
    INVALID = "invalid"  # could not be decoded into a number (kept for the record)


#: UN/CEFACT common codes of the shipped profiles (NGSI-LD ``unitCode``) and display symbols.
UNITS: dict[str, str] = {
    "CEL": "°C",
    "C62": "",  # dimensionless "one" (pH, counts)
    "G42": "µS/cm",
    "M1": "mg/L",
    "NTU": "NTU",  # nephelometric turbidity unit (Smart Data Models' usage)
    "2Z": "mV",
    "VLT": "V",
    "AMP": "A",
    "WTT": "W",
    "P1": "%",
    "IE": "persons",
    "E37": "px",
    "2N": "dB",
    "SEC": "s",
    "HTZ": "Hz",
    "LUX": "lx",
}


@dataclass(slots=True)
class Reading:
    """One value of one quantity of one asset, with its unit, times and quality.

    ``device`` and ``seq`` identify the reading at its source (node id and the node's sequence
    number, or the driver's own counter) so gaps and duplicates can be found; ``score`` is set by
    the anomaly stage. ``boot`` is set by a source whose device resends until acknowledged and
    announces a boot number per start (a twinedge node's hello): ``(device, boot, seq)`` then
    names the frame across gateway restarts, and the store records it as committed.
    """

    asset: str
    quantity: str
    value: float
    unit: str
    received_at: float
    observed_at: float | None = None
    quality: Quality = Quality.GOOD
    device: str = ""
    seq: int = 0
    score: float | None = None
    boot: int | None = None

    @property
    def time(self) -> float:
        """The best time we have for the value: the device's clock if it has one, else receipt."""
        return self.observed_at if self.observed_at is not None else self.received_at


def iso(ts: float | None) -> str | None:
    """Render an epoch time as an ISO 8601 UTC string with milliseconds (``...Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
