"""The exceptions twinedge raises: one base class, a few subclasses that are also builtin kinds."""

from __future__ import annotations

__all__ = ["ConfigError", "FrameError", "ModelError", "SourceError", "TwinedgeError"]


class TwinedgeError(Exception):
    """Base class of every error twinedge raises on purpose."""


class ConfigError(TwinedgeError, ValueError):
    """A configuration file (site, profile, model manifest) is invalid.

    The message names the file, the key and what was expected, e.g.
    ``site.toml: assets[2].source: expected a spec such as 'serial:/dev/ttyUSB0', got 'usb0'``.
    """

    def __init__(self, file: str, key: str, expected: str, got: object = None) -> None:
        self.file = file
        self.key = key
        self.expected = expected
        self.got = got
        where = f"{file}: {key}" if key else file
        msg = f"{where}: expected {expected}"
        if got is not None:
            msg += f", got {got!r}"
        super().__init__(msg)


class FrameError(TwinedgeError, ValueError):
    """A frame or message from a device (or the downlink) could not be decoded."""

    def __init__(self, reason: str, device: str = "", data: bytes = b"") -> None:
        self.reason = reason
        self.device = device
        self.data = data[:64]
        super().__init__(f"{device}: {reason}" if device else reason)


class SourceError(TwinedgeError, OSError):
    """A device transport failed (port gone, peer vanished, timeout); the supervisor reconnects."""

    def __init__(self, device: str, reason: str) -> None:
        self.device = device
        self.reason = reason
        super().__init__(f"{device}: {reason}")


class ModelError(TwinedgeError, ValueError):
    """An anomaly model or its manifest is unusable (bad hash, wrong inputs, unreadable file)."""
