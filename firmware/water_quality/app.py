"""Water-quality node: ADC and I2C probes, framed readings to the gateway over a UART."""

import asyncio

from sensors import AdcProbe, I2cRegister, blink

from edge_node.config import Config
from edge_node.node import Node, Sensor
from edge_node.uart_link import UartLink
from edge_node.uplink import SerialUplink

FIRMWARE = "water-quality/0.1.0"
UNITS = {
    "temperature": "CEL",
    "ph": "C62",
    "conductivity": "G42",
    "dissolved_oxygen": "M1",
    "turbidity": "NTU",
    "orp": "2Z",
}


def make_probe(machine, board, i2c, spec):
    if spec[0] == "i2c":
        return I2cRegister(i2c, spec[1], spec[2], spec[3], spec[4])
    adc = machine.ADC(machine.Pin(spec[1]))
    if hasattr(machine.ADC, "ATTN_11DB"):  # ESP32: full 0-3.3 V range
        adc.atten(machine.ADC.ATTN_11DB)
    return AdcProbe(adc, spec[2], spec[3])


def build(board, machine, config_path="config.json"):
    """Create the hardware from the board file and return the Node (not yet running)."""
    uid = machine.unique_id()
    config = Config(config_path, {"node_id": "wq-%02x%02x" % (uid[-2], uid[-1])})
    i2c = None
    if any(spec[0] == "i2c" for spec in board.WATER_SENSORS.values()):
        c = board.I2C
        i2c = machine.I2C(c["id"], scl=machine.Pin(c["scl"]), sda=machine.Pin(c["sda"]))
    sensors = []
    for name, spec in board.WATER_SENSORS.items():
        sensors.append(Sensor(name, UNITS[name], make_probe(machine, board, i2c, spec).read))
    u = board.UART
    uart = machine.UART(u["id"], baudrate=u["baud"], tx=u["tx"], rx=u["rx"], timeout=0)
    led = machine.Pin(board.LED, machine.Pin.OUT)
    wdt = machine.WDT(timeout=config.get("wdt_ms")) if board.WDT else None
    clock = None
    if board.CLOCK:
        import time

        clock = time.time
    uplink = SerialUplink(UartLink(uart), config)

    async def identify(seconds):
        await blink(led, seconds)

    return Node(
        config, sensors, uplink, FIRMWARE, clock=clock, wdt=wdt,
        identify=identify, reset=machine.reset,
    )  # fmt: skip


def main():
    import board
    import machine

    asyncio.run(build(board, machine).run())
