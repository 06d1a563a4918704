"""BLE system tests: emulated peripherals on a bumble radio by default, real devices by option.

Emulated (default): every test gets a :class:`~hil_tests.emulators.ble.BleRadio` and the gateway's
sources use its bleak backends. Real hardware: ``pytest hil_tests/ble --ble-adapter hci0
--ble-streetlight AA:BB:CC:DD:EE:FF --ble-counter counter-0007`` runs the tests marked
``hardware`` through bleak's platform backend (BlueZ) on that adapter against real devices
running the twinedge firmware; they are skipped when the options are not given. Fault-knob tests
need the emulator and always run emulated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from hil_tests.emulators.ble import BleRadio


@dataclass
class Hardware:
    adapter: str
    streetlight: str | None
    counter: str | None

    @property
    def options(self) -> dict[str, Any]:
        return {"ble_adapter": self.adapter}  # bleak's platform backend (BlueZ) on it


@pytest.fixture
def hardware(request: pytest.FixtureRequest) -> Hardware:
    adapter = request.config.getoption("--ble-adapter")
    if not adapter:
        pytest.skip("no --ble-adapter given: real-hardware BLE test skipped")
    return Hardware(
        adapter,
        request.config.getoption("--ble-streetlight"),
        request.config.getoption("--ble-counter"),
    )


@pytest.fixture
async def radio() -> AsyncIterator[BleRadio]:
    """An emulated radio with 50 ms advertising so reconnects and adverts are quick."""
    async with BleRadio(adv_interval_ms=50.0) as r:
        yield r
