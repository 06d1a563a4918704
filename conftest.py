"""Command-line options of the test suite, registered at the root so they work from any folder.

The hardware-in-the-loop tests run against emulated devices by default; these options point the
same tests at real hardware instead, and the tests that need it are skipped when it is not given.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    modbus = parser.getgroup("twinedge-modbus", "Modbus sonde hardware tests")
    modbus.addoption("--modbus-port", default=None, help="serial port of a real Modbus RTU sonde")
    modbus.addoption("--modbus-unit", type=int, default=1, help="its device id (default 1)")
    modbus.addoption(
        "--modbus-profile", default="sonde-modbus", help="profile of that sonde (name or path)"
    )
    ble = parser.getgroup("twinedge-ble", "BLE hardware tests")
    ble.addoption("--ble-adapter", default=None, help="run BLE hardware tests on this adapter")
    ble.addoption("--ble-streetlight", default=None, help="address of a real BLE streetlight")
    ble.addoption("--ble-counter", default=None, help="device id of a real counter (counter-N)")
    node = parser.getgroup("twinedge-firmware", "twinedge node hardware tests")
    node.addoption("--node-port", default=None, help="serial port of a real twinedge node")
    node.addoption("--node-baud", type=int, default=115200, help="its baud rate")
