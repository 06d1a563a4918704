"""Sensor drivers for the node apps. Hardware objects (ADC, I2C, Pin) are passed in."""

import asyncio

from edge_node.compat import ticks_diff, ticks_ms


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


class BeamCounter:
    """Counts people crossing two break beams (or PIR zones) A then B ("in") or B then A ("out").

    Pin interrupts only stamp the time; direction is decided in ``read_in``/``read_out`` so the
    ISR stays tiny. A beam blocked for longer than ``blocked_ms`` raises OSError (tamper).
    """

    def __init__(self, pin_a, pin_b, trigger, window_ms=800, blocked_ms=30000):
        self.pin_a = pin_a
        self.pin_b = pin_b
        self.window_ms = window_ms
        self.blocked_ms = blocked_ms
        self.count_in = 0
        self.count_out = 0
        self._a = None
        self._b = None
        pin_a.irq(trigger=trigger, handler=self._on_a)
        pin_b.irq(trigger=trigger, handler=self._on_b)

    def _on_a(self, pin):
        now = ticks_ms()
        if self._b is not None and ticks_diff(now, self._b) <= self.window_ms:
            self.count_out += 1
            self._b = None
        else:
            self._a = now

    def _on_b(self, pin):
        now = ticks_ms()
        if self._a is not None and ticks_diff(now, self._a) <= self.window_ms:
            self.count_in += 1
            self._a = None
        else:
            self._b = now

    def read_in(self):
        n, self.count_in = self.count_in, 0
        return n

    def read_out(self):
        n, self.count_out = self.count_out, 0
        return n


class PowerMeter:
    """Lamp power from a voltage divider and a current-sense ADC channel (RMS over a window)."""

    def __init__(self, v_adc, i_adc, v_scale, i_scale, vref=3.3, samples=32):
        self.v_adc = v_adc
        self.i_adc = i_adc
        self.v_scale = v_scale
        self.i_scale = i_scale
        self.vref = vref
        self.samples = samples
        self.voltage = 0.0
        self.current = 0.0

    def measure(self):
        vs = 0.0
        cs = 0.0
        k = self.vref / 65535
        for _ in range(self.samples):
            vs += self.v_adc.read_u16() * k
            cs += self.i_adc.read_u16() * k
        self.voltage = vs / self.samples * self.v_scale
        self.current = cs / self.samples * self.i_scale
        return self.voltage

    def read_voltage(self):
        return self.measure()

    def read_current(self):
        return self.current

    def read_power(self):
        return self.voltage * self.current


async def blink(pin, seconds, half_period_ms=250):
    """Identify the node: blink ``pin`` for ``seconds``."""
    end = ticks_ms() + seconds * 1000
    on = 0
    while ticks_diff(end, ticks_ms()) > 0:
        on ^= 1
        pin.value(on)
        await asyncio.sleep_ms(half_period_ms)
    pin.value(0)
