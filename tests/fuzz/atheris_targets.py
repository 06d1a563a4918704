"""Coverage-guided fuzzing with atheris (libFuzzer) of the byte-level parsers.

    python tests/fuzz/atheris_targets.py frames CORPUS_COPY -runs=100000
    python tests/fuzz/atheris_targets.py downlink CORPUS_COPY -max_total_time=600

Targets: ``frames`` (COBS frames and the splitter), ``adverts`` (advertising data and counter
payloads), ``downlink`` (the envelope verifier). libFuzzer writes what it finds into the first
corpus folder: give it a copy of tests/fuzz/corpus/<target>/ and move anything worth keeping
back. A crash (any exception the parser does not document) exits non-zero with the input saved.
tests/fuzz/test_atheris.py runs each target briefly when atheris is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for fuzz.checks

with atheris.instrument_imports(include=["edge_node", "gateway.security"]):
    from edge_node import ble_payload, protocol  # noqa: F401 - instrumented for coverage
    from gateway import security  # noqa: F401 - instrumented for coverage

from fuzz.checks import check_advert, check_guard, check_stream, new_guard

TOPIC = "twinedge/v1/lab/gw-fuzz/desired/wq-1"
_GUARD = new_guard({}, require=False)


def frames(data: bytes) -> None:
    cut = data[0] if data else 0
    check_stream([data[1 : 1 + cut], data[1 + cut :]])


def adverts(data: bytes) -> None:
    check_advert(data)


def downlink(data: bytes) -> None:
    check_guard(_GUARD, data, TOPIC)


TARGETS = {"frames": frames, "adverts": adverts, "downlink": downlink}


def main() -> None:
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
