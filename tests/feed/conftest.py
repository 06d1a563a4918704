"""Sample twin objects of the three shipped categories, shaped as the gateway publishes them."""

from __future__ import annotations

from typing import Any

import pytest

T0 = 1763700000.0


def value(x: float, unit: str, quality: str = "good", t: float = T0) -> dict[str, Any]:
    return {
        "value": x,
        "unit": unit,
        "quality": quality,
        "observed_at": t,
        "received_at": t + 0.1,
        "score": None,
    }


def make_twin(asset: str, category: str, state: dict[str, Any], **extra: Any) -> dict[str, Any]:
    twin = {
        "id": asset,
        "category": category,
        "name": f"{category} {asset}",
        "location": {"type": "Point", "coordinates": [-6.2603, 53.3498]},
        "attributes": extra.pop("attributes", {}),
        "revision": 12,
        "liveness": {"online": True, "last_seen": T0 + 0.1, "stale_after_s": 30.0},
        "state": state,
        "device": {
            "source": "serial:/dev/ttyUSB0",
            "profile": "twinedge-node",
            "counters": {
                "frames_ok": 10,
                "frames_bad": 0,
                "gaps": 0,
                "duplicates": 0,
                "reconnects": 0,
                "out_of_range": 0,
            },
            "info": {"firmware": "1.2.0", "battery": 87, "rssi": -71},
        },
        "anomalies": {},
        "buffer": {"dropped": 0},
        "config": {"period": 1.0, "thresholds": {}},
    }
    twin.update(extra)
    return twin


@pytest.fixture
def twins() -> dict[str, dict[str, Any]]:
    return {
        "water-quality": make_twin(
            "wq-1",
            "water-quality",
            {
                "temperature": value(12.3, "CEL"),
                "ph": value(7.2, "C62"),
                "conductivity": value(410.0, "G42"),
                "dissolved_oxygen": value(8.1, "M1"),
                "turbidity": value(3.2, "NTU", "suspect"),
                "orp": value(215.0, "2Z"),
            },
            anomalies={
                "turbidity": {
                    "score": 0.93,
                    "threshold": 0.8,
                    "model": "water-quality@1.0.0",
                    "detected_at": T0,
                }
            },
        ),
        "streetlight": make_twin(
            "sl-7",
            "streetlight",
            {
                "power_state": value(1, "C62"),
                "dim_level": value(60, "P1"),
                "power": value(42.5, "WTT"),
                "voltage": value(229.8, "VLT"),
                "current": value(0.19, "AMP"),
                "lamp_fault": value(0, "C62"),
            },
        ),
        "pedestrian-counter": make_twin(
            "pc-3",
            "pedestrian-counter",
            {
                "count_in": value(14, "IE"),
                "count_out": value(9, "IE"),
                "battery": value(76, "P1"),
                "rssi": value(-80, "2N"),
            },
            attributes={"direction": "inbound"},
        ),
    }
