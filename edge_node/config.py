"""Node settings on flash: a JSON file, defaults for missing keys, validation of every value."""

import json

#: key -> (default, kind, low, high); kind is "int", "float" or "str" (low/high = length)
SCHEMA = {
    "node_id": ("node", "str", 1, 24),
    "period_s": (1.0, "float", 0.05, 86400.0),
    "buffer_frames": (64, "int", 1, 4096),
    "resend_s": (3.0, "float", 0.2, 600.0),
    "link_timeout_s": (10.0, "float", 1.0, 3600.0),
    "hello_s": (5.0, "float", 0.2, 3600.0),
    "wdt_ms": (8000, "int", 0, 60000),
}
#: per-sensor periods are stored as "period.<sensor>"
PERIOD_PREFIX = "period."


class ConfigError(ValueError):
    def __init__(self, key, expected, got):
        super().__init__(f"config key {key!r}: expected {expected}, got {got!r}")
        self.key = key


def check(key, value):
    """Validate (and normalise) one value; raises ConfigError naming the key."""
    if key.startswith(PERIOD_PREFIX) and len(key) > len(PERIOD_PREFIX):
        key_spec = "period_s"
    else:
        key_spec = key
    spec = SCHEMA.get(key_spec)
    if spec is None:
        raise ConfigError(key, f"one of {sorted(SCHEMA)} or period.<sensor>", value)
    _, kind, lo, hi = spec
    if kind == "str":
        if not isinstance(value, str) or not lo <= len(value) <= hi:
            raise ConfigError(key, f"text of {lo} to {hi} characters", value)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, "a number", value)
    if kind == "int":
        if value != int(value):
            raise ConfigError(key, "a whole number", value)
        value = int(value)
    else:
        value = float(value)
    if not lo <= value <= hi:
        raise ConfigError(key, f"a number from {lo} to {hi}", value)
    return value


class Config:
    """Settings with defaults, loaded from and saved to ``path`` (None: memory only).

    A file that cannot be read or holds bad values does not stop the node: the bad keys fall
    back to their defaults and are listed in ``problems`` (the node reports them as errors).
    """

    def __init__(self, path=None, defaults=None):
        self.path = path
        self.values = {}
        for key in SCHEMA:
            self.values[key] = SCHEMA[key][0]
        self.problems = []
        for key, value in (defaults or {}).items():
            self.values[key] = check(key, value)
        if path is not None:
            self._load()

    def _load(self):
        try:
            with open(self.path) as f:
                stored = json.load(f)
        except OSError:
            return  # no file yet: defaults
        except ValueError as e:
            self.problems.append(f"{self.path}: not valid JSON ({e})")
            return
        if not isinstance(stored, dict):
            self.problems.append(f"{self.path}: expected a JSON object")
            return
        for key, value in stored.items():
            try:
                self.values[key] = check(key, value)
            except ConfigError as e:
                self.problems.append(f"{self.path}: {e}")

    def get(self, key):
        return self.values[key]

    def period(self, sensor):
        return self.values.get(PERIOD_PREFIX + sensor, self.values["period_s"])

    def set(self, key, value, save=True):
        """Validate and set ``key``; with ``save``, write the file (atomically: a temp file
        renamed over it, so a reset mid-write leaves the old settings)."""
        self.values[key] = check(key, value)
        if save and self.path is not None:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.values, f)
            import os

            os.rename(tmp, self.path)
