"""JSON Schemas of the native feed (v1) and the Smart Data Models the NGSI-LD projection targets.

Every schema is resolved from this folder through a :mod:`referencing` registry: the public
``$id`` URLs (ours live under the reserved ``.invalid`` domain, the Smart Data Models' under
``smart-data-models.github.io``) are never fetched. :func:`validator` returns a cached,
ready-to-use validator per message kind; :func:`sdm_validator` one per Smart Data Model type.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

__all__ = [
    "DOWNLINK_KINDS",
    "FEED_BASE",
    "SDM_COMMON",
    "SDM_TYPES",
    "UPLINK_KINDS",
    "load",
    "registry",
    "sdm_validator",
    "validator",
]

FEED_BASE = "https://twinedge.invalid/schemas/feed/v1/"
SDM_COMMON = "https://smart-data-models.github.io/data-models/common-schema.json"
#: message kinds the gateway publishes
UPLINK_KINDS = ("birth", "death", "twin", "delta", "readings", "event", "applied")
#: message kinds the gateway accepts
DOWNLINK_KINDS = ("desired", "command", "rebirth")
#: Smart Data Model types; Device and Anomaly schemas are ours (see sdm/README.md)
SDM_TYPES = ("WaterQualityObserved", "Streetlight", "CrowdFlowObserved", "Device", "Anomaly")


def _read(*parts: str) -> Any:
    node = resources.files(__name__)
    for part in parts:
        node = node.joinpath(part)
    return json.loads(node.read_text(encoding="utf-8"))


def load(name: str) -> dict[str, Any]:
    """The feed schema ``name`` (a kind, ``common`` or ``twin-state``) as a dict."""
    doc: dict[str, Any] = _read(f"{name}.json")
    return doc


def _retrieve(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs class; never fetched


@functools.cache
def registry() -> Registry[Any]:
    """A registry holding every schema ``$id`` used here, loaded once from this package."""
    docs = [load(n) for n in (*UPLINK_KINDS, *DOWNLINK_KINDS, "common", "twin-state")]
    docs.append(_read("sdm", "common-schema.json"))
    resources_ = [(d["$id"], Resource.from_contents(d)) for d in docs]
    reg: Registry[Any] = Registry(retrieve=_retrieve)  # type: ignore[call-arg]
    return reg.with_resources(resources_).crawl()


@functools.cache
def validator(kind: str) -> Draft202012Validator:
    """A validator for one message kind (uplink or downlink), or ``twin-state``."""
    if kind not in (*UPLINK_KINDS, *DOWNLINK_KINDS, "twin-state"):
        raise KeyError(f"no feed schema for kind {kind!r}")
    return Draft202012Validator(load(kind), registry=registry())


@functools.cache
def sdm_validator(entity_type: str) -> Draft202012Validator:
    """A validator for the key-values form of one Smart Data Model type."""
    if entity_type not in SDM_TYPES:
        raise KeyError(f"no Smart Data Model schema for type {entity_type!r}")
    schema = _read("sdm", entity_type, "schema.json")
    return Draft202012Validator(
        schema, registry=registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
