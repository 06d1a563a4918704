"""``gateway.ble_scan``: what a technician's scan shows for the emulated radio."""

from __future__ import annotations

from gateway.ble_scan import scan
from hil_tests.emulators.ble import BleRadio


async def test_scan_recognises_profiles(radio: BleRadio) -> None:
    light = await radio.add_streetlight("light-01")
    await radio.add_counter(3)
    await radio.add_counter(12)
    phone = await radio.add_phone()
    found = await scan(0.3, radio.scanner_backend)
    by_spec = {f.spec: f for f in found if f.spec}
    assert set(by_spec) == {f"ble:{light.address}", "ble-adv:counter-0003", "ble-adv:counter-0012"}
    assert by_spec[f"ble:{light.address}"].profile == "streetlight-ble"
    assert by_spec[f"ble:{light.address}"].name == "light-01"
    counter = by_spec["ble-adv:counter-0003"]
    assert counter.profile == "counter-ble-adv" and counter.name == "counter-0003"
    assert counter.extra["battery"] == radio.counters[3].battery and counter.rssi == -50
    unknown = [f for f in found if f.profile is None]
    assert [f.address for f in unknown] == [str(phone.random_address).split("/")[0]]
    assert found[-1] is unknown[0]  # recognised devices come first

    quiet = await scan(0.2, radio.scanner_backend, include_unknown=False)
    assert {f.spec for f in quiet} == set(by_spec)
