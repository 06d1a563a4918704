"""Run a firmware app on the real MicroPython unix port behind a pty the gateway opens.

The app is staged (.mpy) as ``twinedge firmware deploy`` would put it on a board; its
``machine.UART`` (shim/machine.py) is a TCP connection to this harness, which relays
it to a pseudo-terminal; the gateway opens the pty's tty path. The relay is the "cable": it can
be cut (``cut = True``) and can inject line noise (``noise(n)``) towards the gateway.
ADC/I2C values come from a JSON file the test rewrites with ``set_hw(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import tty
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[2]
SHIM = Path(__file__).with_name("shim")
MICROPYTHON = Path(sys.executable).with_name("micropython")


def adc_raw(value: float, scale: float, offset: float, vref: float = 3.3) -> int:
    """The raw 16-bit ADC count at which an AdcProbe reads ``value``."""
    return round((value - offset) / scale / vref * 65535)


class MicroPythonNode:
    RUNNER = "run_app"  # started with ``micropython -m``
    SHIMS: tuple[str, ...] = ("board", "machine", "spinuart", RUNNER)  # compiled beside the app

    def __init__(
        self,
        app: str = "water_quality",
        *,
        config: dict[str, Any] | None = None,
        hw: dict[str, Any] | None = None,
        heap: str = "64k",
        fileno: bool = True,
    ) -> None:
        self.app = app
        self.tmp = Path(tempfile.mkdtemp(prefix="twinedge-mp-"))
        self.path = self.tmp / "ttyNODE"
        self.hw_file = self.tmp / "hw.json"
        self.events_file = self.tmp / "events.log"
        self.config_file = self.tmp / "config.json"
        self.config_file.write_text(json.dumps(config or {}))
        self.set_hw(hw or {})
        self.heap = heap
        self.fileno = fileno
        self.cut = False
        self.proc: asyncio.subprocess.Process | None = None
        self.heap_live: list[int] = []
        self.heap_peak = 0
        self.output: list[str] = []
        self.started = asyncio.Event()
        self.changed = asyncio.Event()  # set on every line the node prints
        self._connected = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._master = self._slave = -1
        self._server: asyncio.Server | None = None

    def __str__(self) -> str:
        """The gateway's source spec for this node."""
        return f"serial:{self.path}"

    def set_hw(self, hw: dict[str, Any]) -> None:
        tmp = self.hw_file.with_suffix(".new")
        tmp.write_text(json.dumps(hw))
        tmp.replace(self.hw_file)  # atomic: the node never reads half a file

    def events(self) -> list[str]:
        if not self.events_file.exists():
            return []
        return self.events_file.read_text().splitlines()

    def stored_config(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.config_file.read_text())
        return data

    def noise(self, n: int, seed: int = 0) -> None:
        """Inject ``n`` random bytes into the line towards the gateway."""
        rng = random.Random(seed)
        os.write(self._master, bytes(rng.randrange(256) for _ in range(n)))

    async def __aenter__(self) -> Self:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path.symlink_to(os.ttyname(self._slave))
        self._server = await asyncio.start_server(self._on_uart, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        paths = [".frozen", str(self._stage())]
        env = dict(os.environ, MICROPYPATH=":".join(paths), TWINEDGE_UART=f"127.0.0.1:{port}")
        env.update(TWINEDGE_HW=str(self.hw_file), TWINEDGE_EVENTS=str(self.events_file))
        env["TWINEDGE_NO_FILENO"] = "0" if self.fileno else "1"
        self.proc = await asyncio.create_subprocess_exec(
            str(MICROPYTHON), "-X", f"heapsize={self.heap}", "-m", self.RUNNER,
            cwd=self.tmp, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._tasks.append(asyncio.create_task(self._read_output()))
        async with asyncio.timeout(10):
            await self._connected.wait()
        loop = asyncio.get_running_loop()
        loop.add_reader(self._master, self._from_gateway)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.get_running_loop().remove_reader(self._master)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._writer is not None:
            self._writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        os.close(self._master)
        os.close(self._slave)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _stage(self) -> Path:
        """Compile the app to .mpy exactly as ``twinedge firmware deploy`` would (a board has no
        room to compile sources in 64 KB of heap), and the shims beside it: the runner, and the
        board and ``machine`` modules, which on a board are the board file and firmware (C)."""
        from gateway.commands.firmware import stage, tool

        staged = stage(self.app, "esp32_devkitc", self.tmp / "flash")
        (staged.directory / "board.mpy").unlink()
        mpy_cross = tool("mpy-cross")
        for name in self.SHIMS:
            target = staged.directory / f"{name}.mpy"
            cmd = [mpy_cross, "-o", str(target), str(SHIM / f"{name}.py")]
            subprocess.run(cmd, check=True, capture_output=True, timeout=30)
        return staged.directory

    def cpu_seconds(self) -> float:
        """User + system CPU time the MicroPython process has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            self.changed.set()
            if line.startswith("heap ") and "peak=" in line:
                parts = dict(p.split("=") for p in line.split()[1:])
                self.heap_live.append(int(parts["live"]))
                self.heap_peak = max(self.heap_peak, int(parts["peak"]))
            elif line.startswith("node "):
                self.started.set()

    async def _on_uart(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._connected.set()
        with contextlib.suppress(ConnectionResetError):  # the node was killed
            while data := await reader.read(4096):
                if not self.cut:
                    with contextlib.suppress(BlockingIOError, OSError):
                        os.write(self._master, data)  # towards the gateway's tty

    def _from_gateway(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return
        if data and not self.cut and self._writer is not None:
            self._writer.write(data)
