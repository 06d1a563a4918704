"""twinedge node framework: runs on MicroPython boards and, unchanged, under CPython.

Modules: ``protocol`` (the wire contract; a node loads its half, ``wire``), ``node`` (sampling
scheduler, commands, watchdog), ``config`` (settings on flash), ``uplink`` with ``uart_link`` and
``buffer`` (serial), ``ble_counter`` and ``ble_gatt`` (BLE; ``ble_payload`` for the gateway).
No hardware object is created at import: boards pass UARTs, pins, ADCs and the watchdog in.
"""

__version__ = "0.1.0"
