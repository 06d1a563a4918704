"""Raspberry Pi Pico W (RP2040): pins and the sensors fitted on the twinedge carrier board.

The RP2040 has three usable ADC inputs (GP26-GP28), so the Pico water node carries temperature
on I2C and three analogue probes; the others are not fitted (the gateway profile tolerates it).
"""

NAME = "rp2-pico"
PORT = "rp2"
LED = "LED"  # the Pico W's LED sits behind the wireless chip and is named, not numbered
UART = {"id": 0, "tx": 0, "rx": 1, "baud": 115200}
I2C = {"id": 0, "scl": 5, "sda": 4, "freq": 100000}
WDT = True
CLOCK = False

WATER_SENSORS = {
    "temperature": ("i2c", 0x48, 0x00, 0.0078125, 0.0),  # TMP117
    "ph": ("adc", 26, -5.70, 21.34),
    "conductivity": ("adc", 27, 1000.0, 0.0),
    "dissolved_oxygen": ("adc", 28, 6.06, 0.0),
}

RELAY = 15
PWM = {"pin": 16, "freq": 1000}
POWER_METER = {"v_pin": 27, "i_pin": 28, "v_scale": 100.0, "i_scale": 1.0}

BEAM_A = 10
BEAM_B = 11
BATTERY = {"pin": 26, "scale": 166.7, "offset": -250.0}  # 2:1 divider, Li-ion 3.0-4.2 V -> %
