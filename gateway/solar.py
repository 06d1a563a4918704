"""Solar geometry for dusk-to-dawn logic: pure math, no dependencies (the emulators use it too)."""

from __future__ import annotations

import math

__all__ = ["DAY", "sun_times"]

DAY = 86400.0


def sun_times(t: float, lat: float, lon: float) -> tuple[float, float]:
    """Sunrise and sunset (epoch s) of the UTC day containing ``t`` (NOAA approximation)."""
    day0 = (t // DAY) * DAY
    gamma = 2.0 * math.pi / 365.0 * (((day0 + DAY / 2) / DAY) % 365.2425 % 365.0)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma)
        + 0.00148 * math.sin(3 * gamma)
    )
    phi = math.radians(lat)
    cos_ha = math.cos(math.radians(90.833)) / (math.cos(phi) * math.cos(decl)) - math.tan(
        phi
    ) * math.tan(decl)
    noon = 720.0 - 4.0 * lon - eqtime
    if cos_ha <= -1.0:
        return day0, day0 + DAY
    if cos_ha >= 1.0:
        return day0 + noon * 60.0, day0 + noon * 60.0
    ha = math.degrees(math.acos(cos_ha))
    return day0 + (noon - 4.0 * ha) * 60.0, day0 + (noon + 4.0 * ha) * 60.0
