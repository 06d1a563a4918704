"""Shared fixtures of the system tests: a real mosquitto on a free loopback port per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.broker import MosquittoProcess, mosquitto


@pytest.fixture
async def broker() -> AsyncIterator[MosquittoProcess]:
    """A real mosquitto started for this test on a free 127.0.0.1 port, stopped afterwards."""
    async with mosquitto() as proc:
        yield proc


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "hil_tests" in str(item.path):
            item.add_marker(pytest.mark.hil)
