"""The streetlight firmware on the real MicroPython unix port, its GATT server bridged to bumble:
the gateway's real ``ble`` source connects through bleak, reads, subscribes and writes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from edge_node import ble_payload as bp
from gateway.profiles import load_profile
from gateway.readings import Quality
from gateway.sources import SourceContext
from hil_tests.emulators.ble import BleRadio
from hil_tests.firmware.blenode import MicroPythonBleNode
from hil_tests.firmware.collect import Collector, collecting
from hil_tests.firmware.mpnode import MICROPYTHON, adc_raw

pytestmark = pytest.mark.skipif(not MICROPYTHON.exists(), reason="micropython not installed")

NODE = "sl-hil"
PWM_PIN = 25  # the HIL board's dimmer (shim/blehw.py)
#: mains at 230 V behind a 1:100 divider, 0.4 A through a 1 V/A current sense
HW = {"adc": {"39": adc_raw(230.0, 100.0, 0.0), "35": adc_raw(0.4, 1.0, 0.0)}}


@pytest.fixture
async def radio() -> AsyncIterator[BleRadio]:
    async with BleRadio() as r:
        yield r


def ctx(radio: BleRadio) -> SourceContext:
    return SourceContext(NODE, load_profile("streetlight-ble"), options=dict(radio.options))


def latest(c: Collector, quantity: str) -> float | None:
    values = [r.value for r in c.readings if r.quantity == quantity]
    return values[-1] if values else None


async def test_gateway_reads_subscribes_and_dims_the_firmware_lamp(radio: BleRadio) -> None:
    config = {"node_id": NODE, "period_s": 0.2}
    async with MicroPythonBleNode(radio, "streetlight", config=config, hw=HW) as node:
        adv = await node.wait_advert(lambda a: True)
        assert adv.connectable and bp.STREETLIGHT_SERVICE[:8] in bytes(reversed(adv.data)).hex()
        async with collecting(f"ble:{node.address}", ctx(radio)) as c:
            await c.wait_for(lambda c: len(c.seqs("voltage")) >= 5)  # read, then notified
            assert latest(c, "voltage") == pytest.approx(230.0, abs=0.1)
            assert latest(c, "current") == pytest.approx(0.4, abs=0.002)
            assert latest(c, "power") == pytest.approx(92.0, abs=0.5)
            assert latest(c, "dim_level") == 100 and latest(c, "power_state") == 1
            assert all(r.quality is Quality.GOOD for r in c.readings)
            await c.source.command("dim", {"level": 40})
            await node.wait_duty(PWM_PIN, 40 * 65535 // 100)  # the firmware's PWM shim
            await c.wait_for(lambda c: latest(c, "dim_level") == 40)  # reported back at once
            assert node.notified > 0  # values came by notification after the first reads
            await c.source.command("power", {"on": False})
            await c.wait_for(lambda c: latest(c, "power_state") == 0)
        assert c.ctx.counters.frames_bad == 0
        assert "pin 26 0" in node.events()  # the relay opened
    assert [v for _, v in node.writes] == [bytes([40]), bytes([0])]


async def test_firmware_advertises_again_after_the_gateway_disconnects(radio: BleRadio) -> None:
    async with MicroPythonBleNode(radio, "streetlight", config={"node_id": NODE}, hw=HW) as node:
        for n in (1, 2):  # connect, go away, and connect again to the re-advertised light
            async with collecting(f"ble:{node.address}", ctx(radio)) as c:
                await c.wait_for(lambda c: latest(c, "voltage") is not None)
                before = len(node.adverts)  # advertising stopped while connected
            assert node.connections == n
            await node.wait_adverts(before + 1)  # the firmware's IRQ handler re-advertised
        assert len(node.adverts) == 3 and len({a.data for a in node.adverts}) == 1
