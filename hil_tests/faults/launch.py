"""Run ``twinedge run SITE`` with the fault tests' ledger devices available, optionally under a
wall clock that jumps backwards.

``python -m hil_tests.faults.launch run site.toml`` is the real command line of the gateway
(:func:`gateway.cli.main`) with one addition: the ``ledger`` source scheme
(:mod:`hil_tests.faults.ledger_source`) is registered before the site file is read. With
``TWINEDGE_FAULT_CLOCK_JUMP=AFTER:BY`` the process's wall clock (``time.time``) moves ``BY``
seconds backwards ``AFTER`` seconds (monotonic) after start; the monotonic clock is untouched, as
when NTP or a technician steps the system clock. This is the only fault injected by patching.
With ``TWINEDGE_FAULT_ONE_CPU=1`` the gateway runs on one CPU (the last this process may use),
threads included, so a rate it reports is a one-core rate.
"""

from __future__ import annotations

import os
import sys
import time


def _install_clock_jump(spec: str) -> None:
    after, _, by = spec.partition(":")
    at, back = time.monotonic() + float(after), float(by)
    real = time.time

    def shifted() -> float:
        return real() - back if time.monotonic() >= at else real()

    time.time = shifted


def main() -> int:
    from gateway import cli
    from gateway.sources import SCHEMES

    if os.environ.get("TWINEDGE_FAULT_ONE_CPU") == "1":  # before any thread starts: all inherit it
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    SCHEMES["ledger"] = "hil_tests.faults.ledger_source"
    jump = os.environ.get("TWINEDGE_FAULT_CLOCK_JUMP")
    if jump:
        _install_clock_jump(jump)
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
