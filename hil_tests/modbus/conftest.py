"""Modbus HIL fixtures: an emulated sonde by default, a real serial line by option.

``pytest hil_tests/modbus --modbus-port /dev/ttyUSB0 [--modbus-unit 1]`` runs the tests marked
``hardware`` against a sonde on that RS-485 adapter (it must speak the ``sonde-modbus`` register
map, or the map given by ``--modbus-profile``); without the option they are skipped. Fault tests
need the emulator's knobs and always run against it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from hil_tests.emulators.modbus_sonde import ModbusSonde


@dataclass
class Line:
    """Where the sonde under test answers; ``sonde`` is None on real hardware."""

    port: str
    unit: int
    profile: str
    sonde: ModbusSonde | None

    def spec(self, query: str = "") -> str:
        sep = "&" if query else ""
        return f"modbus:{self.port}?unit={self.unit}{sep}{query}"


@pytest.fixture
async def sonde() -> AsyncIterator[ModbusSonde]:
    async with ModbusSonde(seed=7) as s:
        yield s


@pytest.fixture(params=["emulated", pytest.param("hardware", marks=pytest.mark.hardware)])
async def line(request: pytest.FixtureRequest) -> AsyncIterator[Line]:
    """The same test body against the emulator and, when given, a real port."""
    config = request.config
    profile = config.getoption("--modbus-profile")
    if request.param == "hardware":
        port = config.getoption("--modbus-port")
        if not port:
            pytest.skip("no --modbus-port given")
        yield Line(port, config.getoption("--modbus-unit"), profile, None)
        return
    async with ModbusSonde(seed=3, device_id=5, profile=profile) as s:
        yield Line(s.port_path, 5, profile, s)
