"""The HIL "board": the unix port with the machine shim; every water probe fitted."""

NAME = "unix-hil"
PORT = "unix"
LED = 2
UART = {"id": 1, "tx": 17, "rx": 16, "baud": 115200}
I2C = {"id": 0, "scl": 22, "sda": 21, "freq": 100000}
WDT = True
CLOCK = True  # the host clock stands in for an NTP-set RTC

WATER_SENSORS = {
    "temperature": ("i2c", 0x48, 0x00, 0.0078125, 0.0),
    "ph": ("adc", 34, -5.70, 21.34),
    "conductivity": ("adc", 35, 1000.0, 0.0),
    "dissolved_oxygen": ("adc", 32, 6.06, 0.0),
    "turbidity": ("adc", 33, 303.0, 0.0),
    "orp": ("adc", 36, 606.0, -1000.0),
}
