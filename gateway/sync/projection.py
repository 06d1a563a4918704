"""Choose the projection named in the site file's ``[projection]`` table.

``kind = "native"`` (the default) publishes the native feed only; ``"ngsi-ld"`` and ``"ditto"``
add a projection whose :meth:`to_messages` the uplink calls with every native message it
publishes (``delivery = "mqtt"``), or whose entities the HTTP upsert loop sends
(``delivery = "http"``, NGSI-LD only). See docs/feed.md for the keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from gateway.errors import ConfigError

__all__ = ["KINDS", "Projection", "project"]

KINDS = ("native", "ngsi-ld", "ditto")


class Projection(Protocol):
    """What the uplink needs: the extra MQTT messages one native feed message turns into."""

    def to_messages(self, message: Mapping[str, Any]) -> list[tuple[str, bytes]]: ...


def project(
    kind: str, site: str, table: Mapping[str, Any], file: str = "site.toml"
) -> Projection | None:
    """The projection of ``kind`` configured by ``table``; None for the native feed alone."""
    if kind == "native":
        return None
    if kind == "ngsi-ld":
        from gateway.sync.ngsi_ld import NgsiProjection

        return NgsiProjection.from_config(site, table, file)
    if kind == "ditto":
        from gateway.sync.ditto import DittoProjection

        return DittoProjection.from_config(site, table, file)
    raise ConfigError(file, "projection.kind", f"one of {list(KINDS)}", kind)
