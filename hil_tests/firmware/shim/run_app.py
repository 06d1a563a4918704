"""Start the firmware app found on MICROPYPATH (``app.py``) on the unix port; reports heap use."""

import asyncio
import gc

import board
import machine

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
    node = app.build(board, machine)
    gc.collect()
    print(f"heap built live={gc.mem_alloc()}")
    print("node", node.node_id, "started")
    await asyncio.gather(node.run(), heap_report())


asyncio.run(main())
