"""kill -9 of the gateway at random moments under steady load, again and again.

Three ledger devices send 600 readings/s each. The gateway (`twinedge run` in a subprocess) is
killed with SIGKILL at a random moment 0.1-0.8 s after its feed starts, restarted, and killed
again, ``KILL9_CYCLES`` times (20 by default; ``benchmarks/faults_bench.py`` runs hundreds).
The devices outlive every crash and resend what the gateway had not acknowledged. At the end:
every acknowledged reading reached the consumer, no feed seq is missing, nothing was dropped,
and nothing was stored twice: a device's resend of a frame committed in the instant between the
commit and the crash is recognised by the store's record of committed frames, acknowledged
again and not stored, so after dedupe by seq every reading is there exactly once.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.broker import MosquittoProcess
from hil_tests.faults.ledger import Consumer, kill9_cycles

CYCLES = int(os.environ.get("KILL9_CYCLES", "20"))


async def test_kill9_under_load_nothing_acknowledged_lost(
    tmp_path: Path, mq: MosquittoProcess, consumer: Consumer
) -> None:
    books, figures = await kill9_cycles(tmp_path, mq.port, consumer, CYCLES)
    books.extra.update(restart_to_birth_p50_s=figures["restart_to_birth_s"]["p50"])
    books.check()
    assert figures["kills"] == CYCLES and figures["clean_stop_rc"] == 0
    assert books.extra["deaths_by_will"] == CYCLES  # every crash was announced by the will
    assert books.dropped == 0 and books.missing_acked == 0
    assert books.unique_ids == books.emitted  # every reading made was delivered
    assert figures["sessions"] == 1  # the store survived every kill
    # a reading committed but not yet acknowledged when the process died is resent by its
    # device, acknowledged again and not stored again
    assert books.device_resends == 0 and books.unique_seqs == books.emitted
