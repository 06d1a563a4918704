"""Where the files twinedge ships beside its code live (no heavy imports: the CLI uses it)."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["shipped_models"]


def shipped_models() -> Path | None:
    """The shipped anomaly models: ``models/`` of a source checkout, else the copy a wheel
    installs under ``<prefix>/share/twinedge/models``; None if neither is there."""
    for candidate in (
        Path(__file__).resolve().parents[1] / "models",
        Path(sys.prefix) / "share" / "twinedge" / "models",
    ):
        if candidate.is_dir():
            return candidate
    return None
