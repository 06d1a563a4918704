"""A UART stream without a file descriptor, to measure what that costs an idle node.

``machine.UART`` returns this wrapper when ``TWINEDGE_NO_FILENO=1``: it answers the poll ioctl
but not MP_STREAM_GET_FILENO (10), so ``asyncio.StreamReader`` cannot wait in poll(2) on an fd
and spins instead (docs/firmware.md, Figures).
"""

import io
import select

_MP_STREAM_POLL = 3


class SpinUart(io.IOBase):
    def __init__(self, sock):
        self.sock = sock

    def read(self, n=-1):
        return self.sock.read(n)

    def write(self, data):
        return self.sock.write(data)

    def ioctl(self, req, arg):
        if req == _MP_STREAM_POLL:  # readable when a poll of the socket says so
            p = select.poll()
            p.register(self.sock, select.POLLIN)
            return arg & 1 if p.poll(0) else 0
        return -1
