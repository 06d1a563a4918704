"""Run the edge_node unit tests under MicroPython: ``micropython tests/edge_node/mp_runner.py``.

Run from the repository root. Prints one line per test and exits 1 if any failed.
"""

import asyncio
import sys

MODULES = (
    "test_node_protocol",
    "test_node_buffer_config",
    "test_node_runtime",
    "test_node_ble_counter",
)


def _run(fn):
    result = fn()
    if result is not None and hasattr(result, "send"):  # a coroutine
        asyncio.run(result)


def main():
    for path in ("", "tests/edge_node"):
        if path not in sys.path:
            sys.path.insert(0, path)
    failed = 0
    total = 0
    for name in MODULES:
        mod = __import__(name)
        for attr in sorted(dir(mod)):
            if not attr.startswith("test_"):
                continue
            total += 1
            try:
                _run(getattr(mod, attr))
                print("ok", name, attr)
            except Exception as e:  # report every failure, keep going
                failed += 1
                print("FAIL", name, attr, repr(e))
                sys.print_exception(e)
    print("%d passed, %d failed" % (total - failed, failed))
    sys.exit(1 if failed else 0)


main()
