"""Pedestrian counter: two break beams (or PIR zones) on pin interrupts, BLE advertising."""

import asyncio
from random import getrandbits

from counting import BeamCounter
from sensors import AdcProbe, blink

from edge_node.ble_counter import CounterAdvertiser, device_id, parse_device_id
from edge_node.config import Config
from edge_node.node import Node, Sensor

FIRMWARE = "pedestrian-counter/0.1.0"


def build(board, machine, bluetooth, config_path="config.json"):
    uid = machine.unique_id()
    default_id = device_id((uid[-2] << 8) | uid[-1])
    config = Config(config_path, {"node_id": default_id, "period_s": 1.0})
    node_number = parse_device_id(config.get("node_id"))
    pull = machine.Pin.PULL_UP
    beams = BeamCounter(
        machine.Pin(board.BEAM_A, machine.Pin.IN, pull),
        machine.Pin(board.BEAM_B, machine.Pin.IN, pull),
        machine.Pin.IRQ_FALLING,
    )
    sensors = [Sensor("count_in", "IE", beams.read_in), Sensor("count_out", "IE", beams.read_out)]
    if getattr(board, "BATTERY", None):
        b = board.BATTERY
        probe = AdcProbe(machine.ADC(machine.Pin(b["pin"])), b["scale"], b["offset"])
        sensors.append(Sensor("battery", "P1", probe.read))
    uplink = CounterAdvertiser(bluetooth.BLE(), node_number, getrandbits(8))
    led = machine.Pin(board.LED, machine.Pin.OUT)
    wdt = machine.WDT(timeout=config.get("wdt_ms")) if board.WDT else None

    async def identify(seconds):
        await blink(led, seconds)

    return Node(config, sensors, uplink, FIRMWARE, wdt=wdt, identify=identify, reset=machine.reset)


def main():
    import bluetooth
    import board
    import machine

    asyncio.run(build(board, machine, bluetooth).run())
