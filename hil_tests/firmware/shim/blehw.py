"""The HIL board for BLE apps and the ``machine`` module as such an app sees it.

``board`` holds the counter and streetlight carriers' pins (as on the ESP32 board); ``machine``
is the machine shim with interrupt-capable pins. The test drives pin levels over the radio
bridge (``{"op": "pin", "pin": 18, "value": 0}``, handled by ``on_message``): an edge matching
the pin's ``irq`` trigger calls the app's handler, as a board's interrupt would. A PWM duty
change goes back over the bridge (``{"op": "pwm", "pin": 25, "duty": 26214}``) so the test sees
the lamp dim. Compiled to .mpy by the harness (on a board these are part of the firmware).
"""

import bluetooth
import machine as _machine

PINS = {}  # pin id -> Pin, for the test's edges


# as the ESP32 board: 2:1 divider, Li-ion 3.0-4.2 V -> %
_BATTERY = {"pin": 34, "scale": 166.7, "offset": -250.0}
_PWM = {"pin": 25, "freq": 1000}
_POWER_METER = {"v_pin": 39, "i_pin": 35, "v_scale": 100.0, "i_scale": 1.0}


class board:  # the HIL board file: the counter and streetlight carriers' pins
    NAME = "unix-hil-ble"
    LED = 2
    WDT = True
    BEAM_A = 18
    BEAM_B = 19
    BATTERY = _BATTERY
    RELAY = 26
    PWM = _PWM
    POWER_METER = _POWER_METER


class Pin(_machine.Pin):
    """A shim pin that raises its interrupt on a driven edge; pulled-up inputs idle high."""

    def __init__(self, pin, mode=-1, pull=-1, value=None):
        if value is None and pull == _machine.Pin.PULL_UP:
            value = 1
        super().__init__(pin, mode, pull, value)
        self.trigger = 0
        self.handler = None
        PINS[pin] = self

    def irq(self, trigger=0, handler=None):
        self.trigger = trigger
        self.handler = handler

    def drive(self, level):
        old = self._value
        self._value = level
        edge = 0
        if old and not level:
            edge = _machine.Pin.IRQ_FALLING
        elif level and not old:
            edge = _machine.Pin.IRQ_RISING
        if edge & self.trigger and self.handler is not None:
            self.handler(self)


class PWM:
    """The shim PWM, telling the test each duty cycle the app sets."""

    def __init__(self, pin, freq=1000, duty_u16=0):
        self.pin = pin
        self._duty = duty_u16

    def duty_u16(self, v=None):
        if v is None:
            return self._duty
        if v != self._duty:
            bluetooth.BLE()._send({"op": "pwm", "pin": self.pin.id, "duty": v})
        self._duty = v
        return None


class machine:  # the machine module as the app sees it
    Pin = Pin
    ADC = _machine.ADC
    WDT = _machine.WDT
    PWM = PWM
    unique_id = _machine.unique_id
    reset = _machine.reset


def on_message(msg):
    if msg.get("op") == "pin":
        PINS[msg["pin"]].drive(msg["value"])
