"""A UART link to the gateway: non-blocking writes, reads through an asyncio StreamReader.

On a board ``UartLink(machine.UART(1, 115200))`` reads with MicroPython's
``asyncio.StreamReader(uart)``, which waits on the UART with ``select.poll`` (no busy loop).
Under CPython (emulators) pass ``reader=``: any object with ``async read(n) -> bytes``.
"""

import asyncio


class UartLink:
    def __init__(self, uart, reader=None, chunk=128):
        self.uart = uart
        self.reader = reader if reader is not None else asyncio.StreamReader(uart)
        self.chunk = chunk
        self.bytes_in = 0
        self.bytes_out = 0
        self.write_errors = 0

    def write(self, data):
        """Queue ``data`` for sending; a full or absent line drops it (counted) like a UART."""
        try:
            n = self.uart.write(data)
        except OSError:
            self.write_errors += 1
            return 0
        n = len(data) if n is None else n
        self.bytes_out += n
        return n

    async def read(self):
        """Wait for bytes from the gateway; raises OSError when the line is closed."""
        data = await self.reader.read(self.chunk)
        if not data:
            raise OSError("UART closed")
        self.bytes_in += len(data)
        return data
