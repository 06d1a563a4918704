"""twinedge gateway: an edge runtime that keeps city digital twins in sync over MQTT."""

from importlib.metadata import PackageNotFoundError, version

from gateway.errors import ConfigError, FrameError, ModelError, SourceError, TwinedgeError
from gateway.readings import Quality, Reading

try:
    __version__ = version("twinedge")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "ConfigError",
    "FrameError",
    "ModelError",
    "Quality",
    "Reading",
    "SourceError",
    "TwinedgeError",
    "__version__",
]
