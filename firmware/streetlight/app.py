"""Streetlight controller: relay and PWM dimming, power metering, BLE GATT peripheral."""

import asyncio

from metering import PowerMeter
from sensors import blink

from edge_node.ble_gatt import GattPeripheral
from edge_node.config import Config
from edge_node.node import Node, Sensor

FIRMWARE = "streetlight/0.1.0"
FAULT_CURRENT_A = 0.05  # lamp on but drawing less than this: lamp fault


class Lamp:
    """The relay and the dimmer; ``set(quantity, value)`` is what BLE writes call."""

    def __init__(self, relay, pwm, meter):
        self.relay = relay
        self.pwm = pwm
        self.meter = meter
        self.dim = 100
        self.node = None

    def set(self, quantity, value):
        if quantity == "power_state":
            self.relay.value(1 if value else 0)
        elif quantity == "dim_level":
            self.dim = max(0, min(100, int(value)))
            self.pwm.duty_u16(self.dim * 65535 // 100)
        if self.node is not None:  # report the new state at once
            for name in ("power_state", "dim_level"):
                self.node.sample(self.node.sensors[name])

    def fault(self):
        return 1 if self.relay.value() and self.meter.current < FAULT_CURRENT_A else 0


def build(board, machine, bluetooth, config_path="config.json"):
    uid = machine.unique_id()
    config = Config(config_path, {"node_id": "sl-%02x%02x" % (uid[-2], uid[-1])})
    relay = machine.Pin(board.RELAY, machine.Pin.OUT, value=1)
    pwm = machine.PWM(machine.Pin(board.PWM["pin"]), freq=board.PWM["freq"], duty_u16=65535)
    pm = board.POWER_METER
    meter = PowerMeter(
        machine.ADC(machine.Pin(pm["v_pin"])), machine.ADC(machine.Pin(pm["i_pin"])),
        pm["v_scale"], pm["i_scale"],
    )  # fmt: skip
    lamp = Lamp(relay, pwm, meter)
    sensors = [
        Sensor("power_state", "C62", relay.value),
        Sensor("dim_level", "P1", lambda: lamp.dim),
        Sensor("voltage", "VLT", meter.read_voltage),  # measures; the next two reuse it
        Sensor("current", "AMP", meter.read_current),
        Sensor("power", "WTT", meter.read_power),
        Sensor("lamp_fault", "C62", lamp.fault),
    ]
    uplink = GattPeripheral(bluetooth.BLE(), config.get("node_id"), lamp.set)
    led = machine.Pin(board.LED, machine.Pin.OUT)
    wdt = machine.WDT(timeout=config.get("wdt_ms")) if board.WDT else None

    async def identify(seconds):
        await blink(led, seconds)

    node = Node(config, sensors, uplink, FIRMWARE, wdt=wdt, identify=identify, reset=machine.reset)
    lamp.node = node
    return node


def main():
    import bluetooth
    import board
    import machine

    asyncio.run(build(board, machine, bluetooth).run())
