"""The BLE uplinks encode what the gateway's BLE sources decode (CPython, recording radio)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from edge_node import ble_payload as B
from edge_node.ble_counter import CounterAdvertiser
from edge_node.config import Config
from edge_node.node import Node, Sensor


class RecordingRadio:
    """Stands in for ``bluetooth.BLE()``: keeps what the firmware asked the radio to do."""

    def __init__(self) -> None:
        self.adverts: list[bytes] = []
        self.connectable: list[bool] = []
        self.changed = asyncio.Event()
        self.on = False

    def active(self, on: bool) -> None:
        self.on = on

    def gap_advertise(self, interval_us: int, adv_data: bytes, connectable: bool = True) -> None:
        assert interval_us == 1_000_000
        self.adverts.append(adv_data)
        self.connectable.append(connectable)
        self.changed.set()


async def test_counter_adverts_carry_cumulative_counts_and_a_rolling_seq() -> None:
    radio = RecordingRadio()
    counts = iter([(2, 1), (0, 3), (5, 0)])
    state: dict[str, Any] = {}

    def read_in() -> int:
        state["pair"] = next(counts, (0, 0))
        return int(state["pair"][0])

    config = Config(None, {"node_id": "counter-0042", "period_s": 0.05})
    sensors = [
        Sensor("count_in", "IE", read_in),
        Sensor("count_out", "IE", lambda: state["pair"][1]),
    ]
    node = Node(config, sensors, CounterAdvertiser(radio, 42, boot=7), "t")
    task = asyncio.create_task(node.run())
    try:
        async with asyncio.timeout(5):
            while len(radio.adverts) < 4:
                radio.changed.clear()
                await radio.changed.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert radio.on
    assert not any(radio.connectable)  # no GATT service: nothing to connect to
    decoded = [B.decode_counter(B.manufacturer_data(a)[B.COMPANY_ID]) for a in radio.adverts]
    assert all(len(a) <= B.LEGACY_ADV_MAX for a in radio.adverts)
    assert decoded[0] == (42, 7, 0, 0, 0, None, 0)  # the first advert, before any report
    assert [d[2] for d in decoded[1:4]] == [1, 2, 3]
    assert [(d[3], d[4]) for d in decoded[1:4]] == [(2, 1), (2, 4), (7, 4)]
