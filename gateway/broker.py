"""Local MQTT brokers for the demo, the benchmarks and the tests.

:func:`mosquitto` starts a real mosquitto on a free loopback port with a generated config and stops
it on exit; :func:`embedded` runs amqtt (a Python broker, MQTT 3.1.1) inside this process for a
demo on a machine without mosquitto. Both yield the broker's ``mqtt://`` URL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from gateway.errors import TwinedgeError

__all__ = ["MosquittoProcess", "embedded", "free_port", "mosquitto", "wait_port"]

log = logging.getLogger("twinedge.broker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(host: str, port: int, within: float = 10.0) -> None:
    """Until ``host:port`` accepts a TCP connection."""
    async with asyncio.timeout(within):
        while True:
            try:
                _r, w = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.02)  # the port is not open yet: retry shortly
                continue
            w.close()
            await w.wait_closed()
            return


class MosquittoProcess:
    """A running mosquitto; ``stop()``/``start()`` simulate a broker outage on the same port."""

    def __init__(self, port: int, conf: Path, proc: asyncio.subprocess.Process) -> None:
        self.port, self.conf, self.proc = port, conf, proc

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self.proc.returncode is None:
            return
        self.proc = await _spawn(self.conf)
        await wait_port("127.0.0.1", self.port)

    def log(self) -> str:
        """What mosquitto printed (its errors, e.g. a persistence file it could not write)."""
        return (self.conf.parent / "mosquitto.log").read_text(encoding="utf-8", errors="replace")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


async def _spawn(conf: Path) -> asyncio.subprocess.Process:
    exe = shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if exe is None:
        raise TwinedgeError("mosquitto is not installed (Debian/Ubuntu: apt-get install mosquitto)")
    with (conf.parent / "mosquitto.log").open("ab") as log_file:  # what it says when it fails
        return await asyncio.create_subprocess_exec(
            exe, "-c", str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=log_file
        )


@asynccontextmanager
async def mosquitto(port: int | None = None, extra: str = "") -> AsyncIterator[MosquittoProcess]:
    """A real mosquitto on ``127.0.0.1:port`` (a free port by default), stopped on exit."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="twinedge-mosquitto-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # started as root, mosquitto would drop to its own user and could not write a
            # persistence file in the caller's directories (it would say so only in its log)
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "set_tcp_nodelay true\n"
            "persistence false\n"
            "max_inflight_messages 0\n"
            "max_queued_messages 100000\n"
            f"{extra}\n",
            encoding="utf-8",
        )
        broker = MosquittoProcess(port, conf, await _spawn(conf))
        try:
            await wait_port("127.0.0.1", port)
            yield broker
        finally:
            await broker.stop()


@asynccontextmanager
async def embedded(port: int | None = None) -> AsyncIterator[str]:
    """amqtt inside this process (MQTT 3.1.1); yields its URL."""
    from amqtt.broker import Broker

    port = port or free_port()
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    try:
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        await broker.shutdown()
