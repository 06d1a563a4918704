"""Start a BLE firmware app (``app.py`` on MICROPYPATH) on the unix port with the bluetooth shim.

The app gets the HIL board and interrupt-capable pins (blehw.py) and the ``bluetooth`` shim whose
radio is bridged to the test, which also drives the pins over it. Reports heap use like run_app.py.
"""

import asyncio
import gc

import blehw
import bluetooth

HEAP_EVERY_S = 1


async def heap_report():
    peak = 0
    while True:
        used = gc.mem_alloc()
        gc.collect()
        live = gc.mem_alloc()
        peak = max(peak, used)
        print(f"heap live={live} peak={peak} free={gc.mem_free()}")
        await asyncio.sleep(HEAP_EVERY_S)


async def main():
    gc.collect()
    print(f"heap boot live={gc.mem_alloc()}")
    import app

    gc.collect()
    print(f"heap imported live={gc.mem_alloc()}")
    node = app.build(blehw.board, blehw.machine, bluetooth)
    gc.collect()
    print(f"heap built live={gc.mem_alloc()}")
    print("node", node.node_id, "started")
    await asyncio.gather(node.run(), bluetooth.serve(blehw.on_message), heap_report())


asyncio.run(main())
