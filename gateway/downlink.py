"""The downlink: desired config and commands from upstream, verified, applied and reported.

Every message is untrusted input. It is opened by the :class:`~gateway.security.DownlinkGuard`
(strict UTF-8 JSON, size and depth limits, and the Ed25519 envelope when the site trusts keys)
before anything is looked at; then it is validated and applied, and what is in force afterwards
is reported on ``applied/<asset>`` with the errors, if any. A refused message changes nothing.

``desired`` keys: ``period`` (the device's sampling period), ``thresholds`` (anomaly score
thresholds) and ``mode`` (``active`` or ``shadow`` for the asset's anomaly model). ``command``
names a device command (``dim``, ``power``, ``identify``, ``reboot``, ``set_period``...) sent
to the asset's driver, or the gateway command ``swap_model`` ``{"bundle": NAME}``, which verifies
the signed model bundle in ``<store dir>/bundles/NAME`` and hot-swaps it in; the previous model
stays if anything is wrong.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.errors import ModelError
from gateway.security import DownlinkGuard, SignatureError, verify_bundle
from gateway.sources import Commandable, Source, parse_duration
from gateway.twin import Twin

__all__ = ["Downlink"]

log = logging.getLogger("twinedge.downlink")
DESIRED_KEYS = frozenset({"v", "id", "period", "thresholds", "mode"})
_BUNDLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
Report = Callable[[str, str, Mapping[str, Any], list[str]], None]  # asset, id, config, errors


class Downlink:
    def __init__(
        self,
        *,
        guard: DownlinkGuard,
        base_topic: str,
        twins: Mapping[str, Twin],
        sources: Mapping[str, Source],
        detector: Callable[[], Any],
        trusted: Mapping[str, bytes],
        bundles_dir: Path,
        warn: Callable[[str, str], None],
        report: Report,
    ) -> None:
        self.guard = guard
        self.base_topic = base_topic
        self.twins, self.sources = twins, sources
        self.detector = detector  # the gateway's current Detector (or None)
        self.trusted = trusted
        self.bundles_dir = bundles_dir
        self.warn, self.report = warn, report
        self.refused = 0
        self.refusals: dict[str, int] = {}  # signature refusals by reason

    async def handle(self, kind: str, asset: str, payload: bytes) -> None:
        """One message from ``{base}/{kind}/{asset}``; never raises on bad input."""
        twin = self.twins.get(asset)
        try:  # strictly UTF-8 JSON; the signature checked (and its nonce spent) before any use
            doc = self.guard.open(payload, f"{self.base_topic}/{kind}/{asset}")
        except SignatureError as e:
            self._refuse(kind, asset, f"signature refused: {e}")
            self.refusals[e.reason] = self.refusals.get(e.reason, 0) + 1
            if twin is not None:
                self.report(asset, e.ref or f"refused-{e.reason}", dict(twin.config),
                            [f"refused: {e}"])  # fmt: skip
            return
        except ValueError as e:
            self._refuse(kind, asset, f"not a JSON object ({e})")
            return
        msg_id = doc.get("id")
        if twin is None or not isinstance(msg_id, str) or not msg_id or doc.get("v") != 1:
            why = "unknown asset" if twin is None else "'v': 1 and a string 'id' are required"
            self._refuse(kind, asset, why)
            return
        if kind == "desired":
            errors = await self._desired(asset, twin, doc)
            applied: dict[str, Any] = dict(twin.config)
        else:
            errors, applied = await self._command_message(asset, doc)
        for err in errors:
            self.warn(f"{kind} {msg_id}: {err}", asset)
        self.report(asset, msg_id, applied, errors)

    def _refuse(self, kind: str, asset: str, why: str) -> None:
        self.refused += 1
        self.warn(f"{kind} message refused: {why}", asset)

    # -- desired -------------------------------------------------------------------------------

    async def _desired(self, asset: str, twin: Twin, doc: Mapping[str, Any]) -> list[str]:
        errors: list[str] = []
        unknown = set(doc) - DESIRED_KEYS
        if unknown:
            errors.append(f"unknown keys {sorted(unknown)}")
        if "period" in doc:
            errors += await self._period(asset, twin, doc["period"])
        if "thresholds" in doc:
            errors += self._thresholds(asset, twin, doc["thresholds"])
        if "mode" in doc:
            errors += self._mode(twin, doc["mode"])
        return errors

    async def _period(self, asset: str, twin: Twin, value: Any) -> list[str]:
        try:
            period = parse_duration(value, file="desired", key="period")
            if not 0.1 <= period <= 86400:
                raise ValueError("period must be between 0.1 s and 1 day")
        except ValueError as e:
            return [str(e)]
        err = await self.device_command(asset, "set_period", {"period": period})
        if err:
            return [err]
        twin.set_config("period", period)
        return []

    def _thresholds(self, asset: str, twin: Twin, thresholds: Any) -> list[str]:
        if not isinstance(thresholds, dict):
            return ["thresholds: expected an object of name -> number"]
        for name, v in thresholds.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                return [f"thresholds.{name}: expected a finite number"]
        detector = self.detector()
        if detector is not None:
            for name, value in thresholds.items():
                try:
                    detector.set_threshold(asset, float(value))
                except (ValueError, KeyError) as e:
                    return [f"thresholds.{name}: {e}"]
        twin.set_config("thresholds", {**twin.config.get("thresholds", {}), **thresholds})
        return []

    def _mode(self, twin: Twin, mode: Any) -> list[str]:
        detector = self.detector()
        if detector is None:
            return ["mode: no anomaly models are loaded"]
        category = twin.category
        try:
            detector.set_mode(category, mode)
        except ModelError as e:
            return [f"mode: {e}"]
        twin.set_config("mode", mode)
        return []

    # -- commands ------------------------------------------------------------------------------

    async def _command_message(
        self, asset: str, doc: Mapping[str, Any]
    ) -> tuple[list[str], dict[str, Any]]:
        name, args = doc.get("command"), doc.get("args", {})
        applied: dict[str, Any] = {"command": name, "args": args}
        if not isinstance(name, str) or not isinstance(args, dict):
            return ["expected 'command' (string) and 'args' (object)"], applied
        if name == "swap_model":
            error, model = self._swap_model(args.get("bundle"))
            return ([error] if error else []), applied | {"model": model}
        err = await self.device_command(asset, name, args)
        return ([err] if err else []), applied

    def _swap_model(self, name: Any) -> tuple[str | None, str | None]:
        """Verify the signed bundle, then hot-swap it; the current model stays on any error."""
        detector = self.detector()
        if detector is None:
            return "swap_model: no anomaly models are loaded", None
        if not isinstance(name, str) or not _BUNDLE.match(name):
            return "swap_model: args.bundle must be a bundle directory name", None
        if not self.trusted:
            return "swap_model: the site trusts no signing keys, so no bundle can be verified", None
        bundle = self.bundles_dir / name
        try:
            verify_bundle(bundle, self.trusted)
            model: str = detector.swap(bundle)
        except ModelError as e:  # BundleError is a ModelError too
            return f"swap_model {name}: {e}", None
        log.info("anomaly model swapped in: %s from %s", model, bundle)
        return None, model

    async def device_command(self, asset: str, name: str, args: Mapping[str, Any]) -> str | None:
        """Send a command to the asset's driver; an error message, or None when it took it."""
        source = self.sources.get(asset)
        if source is None:
            return f"device {asset} is not connected" if name != "set_period" else None
        if not isinstance(source, Commandable):
            return f"device {asset} takes no commands"
        try:
            async with asyncio.timeout(10):
                await source.command(name, args)
        except (ValueError, KeyError, TypeError, AttributeError, OSError, TimeoutError) as e:
            # AttributeError too: a driver handed args of a type it did not expect (the downlink
            # is untrusted input and must never end the uplink's receiver)
            return f"command {name} failed: {e or type(e).__name__}"
        return None
