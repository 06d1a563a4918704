"""twinedge node framework: runs on MicroPython boards and, unchanged, under CPython.

Modules: ``protocol`` (the wire contract), ``node`` (sampling scheduler, buffer, commands,
watchdog), ``config`` (settings on flash), ``uart_link`` and ``ble_link`` (links to the gateway).
No hardware object is created at import: boards pass UARTs, pins, ADCs and the watchdog in.
"""

__version__ = "0.1.0"
