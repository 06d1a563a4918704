"""Fixtures of the fault tests: a real mosquitto (persistent, so a restart keeps the consumer's
queued messages) and the ledger consumer on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.broker import MosquittoProcess, mosquitto
from hil_tests.faults.ledger import Consumer


@pytest.fixture
async def mq(tmp_path: Path) -> AsyncIterator[MosquittoProcess]:
    store = tmp_path / "mosquitto"
    store.mkdir()
    extra = f"persistence true\npersistence_location {store}/\nautosave_interval 0\n"
    async with mosquitto(extra=extra) as proc:
        yield proc


@pytest.fixture
async def consumer(mq: MosquittoProcess) -> AsyncIterator[Consumer]:
    async with Consumer(mq.port) as c:
        yield c
