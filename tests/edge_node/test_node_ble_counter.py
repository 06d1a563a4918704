"""Counter adverts against the shared vectors, and the node's copies of protocol constants
(both interpreters)."""

import json

from edge_node import ble_counter, node, wire
from edge_node import protocol as P

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."


def _vectors():
    with open(_HERE + "/../../edge_node/vectors.json") as f:
        return json.load(f)["ble_counter"]


def test_battery_percent_is_rounded_and_clamped():
    for gauge, byte in _vectors()["battery_percent"]:
        assert ble_counter.battery_percent(gauge) == byte, gauge


def test_counter_adverts_match_the_vectors():
    for v in _vectors()["adverts"]:
        assert ble_counter.counter_advert(*v["args"]).hex() == v["adv"]


class _Radio:
    def __init__(self):
        self.calls = []

    def active(self, on):
        pass

    def gap_advertise(self, interval_us, adv_data=None, connectable=True):
        self.calls.append((adv_data, connectable))


def test_counter_advertises_non_connectable_with_the_rounded_battery():
    radio = _Radio()
    up = ble_counter.CounterAdvertiser(radio, 42, 7)
    up.submit([["count_in", 2.0], ["battery", 80.7]], None)
    adv, connectable = radio.calls[-1]
    assert connectable is False  # no GATT service: nothing to connect to
    assert adv[20] == 81  # battery byte: rounded
    up.submit([["battery", 14.4]], None)
    assert radio.calls[-1][0][21] & ble_counter.FLAG_LOW_BATTERY


def test_node_side_constants_agree_with_the_protocol():
    assert (node.E_BAD_COMMAND, node.E_BAD_VALUE, node.E_SENSOR) == (
        P.E_BAD_COMMAND,
        P.E_BAD_VALUE,
        P.E_SENSOR,
    )
    assert node.MAX_NAME == P.MAX_NAME
    assert [P.TYPES[i] for i in range(1, 6)] == list(wire.TYPE_NAMES)
