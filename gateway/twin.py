"""Twin objects: one per physical asset. Pure code, no I/O.

A twin holds the asset's identity and static attributes (from the site file), its dynamic state per
quantity (value, unit, quality, times, score), liveness, device counters, active anomalies, drop
counts and the config in force. Changes accumulate in a pending RFC 7396 merge patch;
:meth:`Twin.take_delta` turns them into one delta with the next revision, so a burst of readings
costs one delta per flush interval, not one per reading.

Liveness uses a monotonic clock given by the caller: a device that stays silent longer than
``stale_after`` goes offline and every quantity's quality becomes ``stale`` (never shown as a
constant value), whatever the wall clock does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from gateway.readings import Quality, Reading

__all__ = ["Twin", "merge_patch"]


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Apply an RFC 7396 merge patch to ``target`` in place (``None`` deletes) and return it."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping):
            cur = target.get(key)
            if not isinstance(cur, dict):
                cur = target[key] = {}
            merge_patch(cur, value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _merge_into_patch(patch: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Record ``value`` at ``path`` in a pending patch (a later change to the same path wins)."""
    node = patch
    for key in path[:-1]:
        nxt = node.get(key)
        if not isinstance(nxt, dict):
            nxt = node[key] = {}
        node = nxt
    node[path[-1]] = value


def _without_none(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` without null values at any depth (a null would delete in a merge patch)."""
    return {
        k: _without_none(v) if isinstance(v, Mapping) else v
        for k, v in doc.items()
        if v is not None
    }


class Twin:
    """The digital twin object of one asset."""

    __slots__ = ("_last_seen_mono", "_patch", "_state", "id", "revision", "stale_after")

    def __init__(
        self,
        asset_id: str,
        *,
        category: str,
        name: str,
        location: Mapping[str, Any],
        attributes: Mapping[str, Any],
        source: str,
        profile: str | None,
        stale_after: float,
        config: Mapping[str, Any],
        revision: int = 0,
    ) -> None:
        self.id = asset_id
        self.revision = revision
        self.stale_after = stale_after
        self._last_seen_mono: float | None = None
        self._state: dict[str, Any] = {
            "id": asset_id,
            "category": category,
            "name": name,
            "location": dict(location),
            "attributes": dict(attributes),
            "revision": revision,
            "liveness": {"online": False, "last_seen": None, "stale_after_s": stale_after},
            "state": {},
            "device": {"source": source, "profile": profile, "counters": {}, "info": {}},
            "anomalies": {},
            "buffer": {"dropped": 0},
            "config": dict(config),
        }
        self._patch: dict[str, Any] = {}

    # -- changes -------------------------------------------------------------------------------

    def _set(self, path: tuple[str, ...], value: Any) -> None:
        node = self._state
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if node.get(path[-1]) == value:
            return
        if value is None:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = copy.deepcopy(value)
        _merge_into_patch(self._patch, path, value)

    def observe(self, r: Reading, mono: float) -> None:
        """Take a reading into the state; the device is alive as of ``mono``."""
        self._last_seen_mono = mono
        # absent fields are left out, never null: null deletes in a merge patch
        q: dict[str, Any] = {
            "value": r.value,
            "unit": r.unit,
            "quality": str(r.quality),
            "received_at": r.received_at,
        }
        if r.observed_at is not None:
            q["observed_at"] = r.observed_at
        if r.score is not None:
            q["score"] = r.score
        self._set(("state", r.quantity), q)
        if not self._state["liveness"]["online"]:
            self._set(("liveness", "online"), True)
        self._set(("liveness", "last_seen"), r.received_at)

    def check_liveness(self, mono: float) -> bool:
        """Go offline when silent for longer than ``stale_after``; True if that just happened."""
        live = self._state["liveness"]
        if not live["online"] or self._last_seen_mono is None:
            return False
        if mono - self._last_seen_mono <= self.stale_after:
            return False
        self._set(("liveness", "online"), False)
        self._set(("liveness", "last_seen"), live["last_seen"])
        for quantity, q in self._state["state"].items():
            if q.get("quality") != Quality.STALE:
                self._set(("state", quantity, "quality"), str(Quality.STALE))
        return True

    def mark_stale(self) -> None:
        """Mark every quantity stale (used when the gateway itself restarts or stops)."""
        self._last_seen_mono = None
        self._set(("liveness", "online"), False)
        for quantity in self._state["state"]:
            self._set(("state", quantity, "quality"), str(Quality.STALE))

    def set_counters(self, counters: Mapping[str, int]) -> None:
        for key, value in counters.items():
            self._set(("device", "counters", key), value)

    def set_device_info(self, info: Mapping[str, Any]) -> None:
        for key, value in info.items():
            self._set(("device", "info", key), value)

    def set_anomaly(self, quantity: str, info: Mapping[str, Any] | None) -> None:
        self._set(("anomalies", quantity), None if info is None else dict(info))

    def set_dropped(self, dropped: int) -> None:
        self._set(("buffer", "dropped"), dropped)

    def set_config(self, key: str, value: Any) -> None:
        self._set(("config", key), value)

    def set_model(self, info: Mapping[str, Any]) -> None:
        """The anomaly model scoring this asset and its recent score distribution."""
        self._set(("model",), _without_none(info))

    # -- views ---------------------------------------------------------------------------------

    @property
    def category(self) -> str:
        return str(self._state["category"])

    @property
    def online(self) -> bool:
        return bool(self._state["liveness"]["online"])

    @property
    def config(self) -> Mapping[str, Any]:
        return self._state["config"]  # type: ignore[no-any-return]

    def snapshot(self) -> dict[str, Any]:
        """The full twin object (a copy)."""
        return copy.deepcopy(self._state)

    def take_delta(self) -> tuple[int, dict[str, Any]] | None:
        """The pending changes as ``(revision, merge patch)``, or None if nothing changed."""
        if not self._patch:
            return None
        self.revision += 1
        self._state["revision"] = self.revision
        patch, self._patch = self._patch, {}
        patch["revision"] = self.revision
        return self.revision, patch

    def restore(self, state: Mapping[str, Any]) -> None:
        """Resume from a stored snapshot: keep revision, last values (stale) and counters."""
        self.revision = int(state.get("revision", 0))
        self._state["revision"] = self.revision
        for key in ("state", "anomalies"):
            if isinstance(state.get(key), dict):
                self._state[key] = copy.deepcopy(state[key])
        counters = state.get("device", {}).get("counters")
        if isinstance(counters, dict):
            self._state["device"]["counters"] = dict(counters)
        last_seen = state.get("liveness", {}).get("last_seen")
        self._state["liveness"]["last_seen"] = last_seen
        self.mark_stale()
