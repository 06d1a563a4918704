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

__all__ = ["KEYS", "KINDS", "Projection", "project"]

KINDS = ("native", "ngsi-ld", "ditto")


class Projection(Protocol):
    """What the uplink needs: the extra MQTT messages one native feed message turns into."""

    def to_messages(self, message: Mapping[str, Any]) -> list[tuple[str, bytes]]: ...


#: the keys each projection kind accepts in ``[projection]`` (``kind`` itself included)
KEYS: dict[str, frozenset[str]] = {
    "native": frozenset({"kind"}),
    "ngsi-ld": frozenset(
        {
            "kind",
            "form",
            "context",
            "topic_prefix",
            "delivery",
            "url",
            "tenant",
            "timeout",
            "batch",
            "dead_letter_file",
        }
    ),
    "ditto": frozenset({"kind", "namespace", "topic_prefix"}),
}


def project(
    kind: str, site: str, table: Mapping[str, Any], file: str = "site.toml"
) -> Projection | None:
    """The projection of ``kind`` configured by ``table``; None for the native feed alone.

    Every key of the table is checked here, so a typo fails at start-up naming the key.
    """
    if kind not in KEYS:
        raise ConfigError(file, "projection.kind", f"one of {list(KINDS)}", kind)
    for key in table:
        if key not in KEYS[kind]:
            raise ConfigError(file, f"projection.{key}", f"a key among {sorted(KEYS[kind])}", key)
    delivery = table.get("delivery", "mqtt")
    if delivery not in ("mqtt", "http"):
        raise ConfigError(file, "projection.delivery", "'mqtt' or 'http'", delivery)
    if delivery == "http" and "url" not in table:
        raise ConfigError(file, "projection.url", "the context broker URL for delivery = 'http'")
    if kind == "native":
        return None
    if kind == "ngsi-ld":
        from gateway.sync.ngsi_ld import NgsiProjection

        return NgsiProjection.from_config(site, table, file)
    if kind == "ditto":
        from gateway.sync.ditto import DittoProjection

        return DittoProjection.from_config(site, table, file)
    raise ConfigError(file, "projection.kind", f"one of {list(KINDS)}", kind)
