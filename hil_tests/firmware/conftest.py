"""Firmware HIL options: ``--node-port /dev/ttyUSB0`` runs the tests marked ``hardware``
against a real twinedge water-quality node (flashed with ``twinedge firmware deploy``) on that
serial port; without it they are skipped. Everything else runs on the MicroPython unix port."""

from __future__ import annotations

import pytest


@pytest.fixture
def node_port(request: pytest.FixtureRequest) -> str:
    port: str | None = request.config.getoption("--node-port")
    if port is None:
        pytest.skip("no --node-port given: real node tests skipped")
    return f"serial:{port}?baud={request.config.getoption('--node-baud')}"
