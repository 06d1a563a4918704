"""Eclipse Ditto projection: twin messages as Ditto protocol commands. Pure code, no I/O.

A full twin becomes a ``things/twin/commands/modify`` of the whole Thing; a delta becomes a
``things/twin/commands/merge`` whose value is an RFC 7396 merge patch of the Thing (``null``
deletes). The Thing id is ``<namespace>:<asset>``. Static identity (category, name, location,
attributes) and the twin ``revision`` go to ``attributes``; each quantity is a feature whose
properties are the value, unit, quality and times; liveness, device, anomalies, buffer and config
are features too.

Ordering: every command carries the revision in ``attributes.revision``, in the
``twinedge-revision`` header and in a Ditto ``condition`` header
(``lt(attributes/revision,N)``), so Ditto itself refuses a command older than what it holds and a
consumer can order the stream. A gap (revision jumps by more than one) should be answered with a
rebirth request on the native feed, whose full twin then resynchronises the Thing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from gateway.errors import ConfigError

__all__ = ["DittoProjection", "thing_patch"]

_IDENTITY = ("category", "name", "location", "attributes")
_FEATURE_GROUPS = ("liveness", "device", "anomalies", "buffer", "config")
_NAMESPACE = re.compile(r"^[a-zA-Z]\w*(\.[a-zA-Z]\w*)*$")


def _feature(props: Any) -> Any:
    """A twin sub-object as a Ditto feature; ``None`` (delete) stays ``None``."""
    return None if props is None else {"properties": props}


def thing_patch(patch: Mapping[str, Any]) -> dict[str, Any]:
    """Map a merge patch of the twin object onto the same merge patch of the Ditto Thing.

    RFC 7396 semantics are kept: a key absent is unchanged, ``null`` deletes, an object merges.
    """
    attributes: dict[str, Any] = {}
    features: dict[str, Any] = {}
    for key in _IDENTITY:
        if key in patch:
            attributes[key] = patch[key]
    if "revision" in patch:
        attributes["revision"] = patch["revision"]
    # (a null ``state`` cannot occur: twins always have one, quantities are deleted one by one)
    for quantity, value in (patch.get("state") or {}).items():
        features[quantity] = _feature(value)
    for group in _FEATURE_GROUPS:
        if group in patch:
            features[group] = _feature(patch[group])
    out: dict[str, Any] = {}
    if attributes:
        out["attributes"] = attributes
    if features:
        out["features"] = features
    return out


@dataclass(frozen=True, slots=True)
class DittoProjection:
    """Turns native twin and delta messages into Ditto protocol messages for one site."""

    namespace: str
    topic_prefix: str = "twinedge/ditto/v1"

    @classmethod
    def from_config(cls, site: str, table: Mapping[str, Any], file: str = "site.toml") -> Self:
        """From the ``[projection]`` table: ``namespace`` (default ``twinedge.<site>``)."""
        default = "twinedge." + re.sub(r"\W", "_", site)
        namespace = table.get("namespace", default)
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise ConfigError(
                file, "projection.namespace", "a Ditto namespace such as 'city.water'", namespace
            )
        prefix = table.get("topic_prefix", "twinedge/ditto/v1")
        if not isinstance(prefix, str) or not prefix or "#" in prefix or "+" in prefix:
            raise ConfigError(file, "projection.topic_prefix", "an MQTT topic prefix", prefix)
        return cls(namespace, prefix.rstrip("/"))

    def thing_id(self, asset: str) -> str:
        return f"{self.namespace}:{asset}"

    def command(self, message: Mapping[str, Any]) -> dict[str, Any] | None:
        """The Ditto protocol message for a twin or delta message, else None."""
        kind = message.get("kind")
        if kind not in ("twin", "delta"):
            return None
        asset = str(message["asset"])
        revision = int(message["revision"])
        name = self.thing_id(asset).replace(":", "/", 1)
        headers = {
            "correlation-id": str(message["key"]),
            "twinedge-revision": revision,
            "condition": f"or(not(exists(attributes/revision)),lt(attributes/revision,{revision}))",
            "response-required": False,
        }
        if kind == "twin":
            twin = dict(message["twin"])
            twin["revision"] = revision
            value: dict[str, Any] = {"thingId": self.thing_id(asset), **thing_patch(twin)}
            return {
                "topic": f"{name}/things/twin/commands/modify",
                "headers": {**headers, "content-type": "application/json"},
                "path": "/",
                "value": value,
            }
        patch = dict(message["patch"])
        patch["revision"] = revision
        return {
            "topic": f"{name}/things/twin/commands/merge",
            "headers": {**headers, "content-type": "application/merge-patch+json"},
            "path": "/",
            "value": thing_patch(patch),
        }

    def to_messages(self, message: Mapping[str, Any]) -> list[tuple[str, bytes]]:
        """MQTT delivery: ``(topic, payload)``, topic ``{prefix}/{namespace}/{asset}``."""
        cmd = self.command(message)
        if cmd is None:
            return []
        topic = f"{self.topic_prefix}/{self.namespace}/{message['asset']}"
        return [(topic, json.dumps(cmd, separators=(",", ":"), allow_nan=False).encode())]
