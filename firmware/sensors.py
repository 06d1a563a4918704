"""Probe drivers and the identify blink. Hardware objects (ADC, I2C, Pin) are passed in.

One module per kind of driver (``counting``, ``metering``): a board loads only what its app
uses, and every module costs heap.
"""

import asyncio

from edge_node.compat import ticks_add, ticks_diff, ticks_ms


class AdcProbe:
    """An analogue probe: ``value = volts * scale + offset``, averaged over ``samples`` reads.

    ``vref`` is the ADC's full-scale voltage (3.3 V on RP2040 and on ESP32 with 11 dB
    attenuation). A reading at the rails means a disconnected or shorted probe: OSError.
    """

    def __init__(self, adc, scale, offset=0.0, vref=3.3, samples=4):
        self.adc = adc
        self.scale = scale
        self.offset = offset
        self.vref = vref
        self.samples = samples

    def read(self):
        total = 0
        for _ in range(self.samples):
            total += self.adc.read_u16()
        raw = total // self.samples
        if raw <= 16 or raw >= 65519:
            raise OSError("probe disconnected (ADC at the rail: %d)" % raw)
        return raw * self.vref / 65535 * self.scale + self.offset


class I2cRegister:
    """A value read from an I2C sensor register: big-endian signed 16-bit times ``scale``."""

    def __init__(self, i2c, address, register, scale=1.0, offset=0.0):
        self.i2c = i2c
        self.address = address
        self.register = register
        self.scale = scale
        self.offset = offset

    def read(self):
        data = self.i2c.readfrom_mem(self.address, self.register, 2)
        raw = (data[0] << 8) | data[1]
        if raw >= 0x8000:
            raw -= 0x10000
        return raw * self.scale + self.offset


async def blink(pin, seconds, half_period_ms=250):
    """Identify the node: blink ``pin`` for ``seconds``."""
    end = ticks_add(ticks_ms(), seconds * 1000)
    on = 0
    while ticks_diff(end, ticks_ms()) > 0:
        on ^= 1
        pin.value(on)
        await asyncio.sleep_ms(half_period_ms)
    pin.value(0)
