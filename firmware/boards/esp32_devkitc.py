"""ESP32-DevKitC (ESP32-WROOM-32): pins and the sensors fitted on the twinedge carrier board.

Board files are data: the apps build machine objects from them at start-up (never at import).
ADC channels use 11 dB attenuation (0-3.3 V full scale); probes sit behind their amplifier boards.
"""

NAME = "esp32-devkitc"
PORT = "esp32"
LED = 2  # on-board blue LED: identify
UART = {"id": 2, "tx": 17, "rx": 16, "baud": 115200}  # to the gateway (RS-232/USB adapter)
I2C = {"id": 0, "scl": 22, "sda": 21, "freq": 100000}
WDT = True
CLOCK = False  # no RTC battery and no network on the water node: the gateway stamps time

# water-quality node: quantity -> ("adc", pin, scale, offset) or ("i2c", address, register,
# scale, offset); engineering value = volts * scale + offset (or raw * scale + offset for I2C)
WATER_SENSORS = {
    "temperature": ("i2c", 0x48, 0x00, 0.0078125, 0.0),  # TMP117, 7.8125 m°C per LSB
    "ph": ("adc", 34, -5.70, 21.34),  # pH amplifier: 2.5 V at pH 7.0
    "conductivity": ("adc", 35, 1000.0, 0.0),  # EC transmitter, 0-3.3 V = 0-3300 µS/cm
    "dissolved_oxygen": ("adc", 32, 6.06, 0.0),  # galvanic DO probe after gain
    "turbidity": ("adc", 33, 303.0, 0.0),  # 0-3.3 V = 0-1000 NTU
    "orp": ("adc", 36, 606.0, -1000.0),  # 1.65 V = 0 mV
}

# streetlight controller
RELAY = 26
PWM = {"pin": 25, "freq": 1000}
POWER_METER = {"v_pin": 39, "i_pin": 35, "v_scale": 100.0, "i_scale": 1.0}

# pedestrian counter: two break beams 15 cm apart, active low with pull-ups
BEAM_A = 18
BEAM_B = 19
BATTERY = {"pin": 34, "scale": 166.7, "offset": -250.0}  # 2:1 divider, Li-ion 3.0-4.2 V -> %
