"""Lamp power metering from voltage and current sense inputs."""


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
