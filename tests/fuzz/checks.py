"""One check per parser of untrusted input: feed it bytes (or data) and assert it either returns
something within its documented bounds or raises its documented error type, nothing else.

The hypothesis tests and the corpus replay (tests/fuzz/corpus/<parser>/) call the same checks.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from edge_node import ble_payload as bp
from edge_node import protocol
from gateway.errors import ConfigError
from gateway.security import MAX_ENVELOPE_BYTES, DownlinkGuard, NonceStore, SignatureError

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
#: examples per property in CI; raise with TWINEDGE_FUZZ_EXAMPLES=20000 for a long local run
EXAMPLES = int(os.environ.get("TWINEDGE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- device frames -----------------------------------------------------------------------------


def check_frame(data: bytes) -> None:
    """A COBS frame from a serial line: a message within bounds or ProtocolError."""
    try:
        msg = protocol.decode(data)
    except protocol.ProtocolError:
        return
    assert len(data) <= protocol.MAX_FRAME
    assert msg["type"] in protocol.TYPES.values()
    assert isinstance(msg["node"], str) and len(msg["node"].encode()) <= 255
    assert 0 <= msg["seq"] < 2**32
    for value in msg.get("values", []):
        assert isinstance(value[0], str) and isinstance(value[1], float)


def check_stream(chunks: list[bytes]) -> None:
    """Bytes from a serial line in arbitrary chunks: frames within the size limit, no zeros."""
    splitter = protocol.FrameSplitter()
    for chunk in chunks:
        for frame in splitter.feed(chunk):
            assert 0 < len(frame) <= protocol.MAX_FRAME and b"\x00" not in frame
            check_frame(frame)
        assert len(splitter.buf) <= protocol.MAX_FRAME


# -- BLE adverts -------------------------------------------------------------------------------


def check_advert(adv: bytes) -> None:
    """Raw advertising data: AD structures, manufacturer data, counter payloads or PayloadError."""
    try:
        found = bp.manufacturer_data(adv)
    except bp.PayloadError:
        return
    for company, payload in found.items():
        assert 0 <= company <= 0xFFFF and len(payload) <= len(adv)
        try:
            fields = bp.decode_counter(payload)
        except bp.PayloadError:
            continue
        node, boot, seq, count_in, count_out, battery, flags = fields
        assert 0 <= node < 2**32 and 0 <= boot < 256 and 0 <= seq < 65536
        assert 0 <= count_in < 65536 and 0 <= count_out < 65536 and 0 <= flags < 256
        assert battery is None or 0 <= battery <= 100


# -- Modbus ------------------------------------------------------------------------------------


def check_registers(source: Any, words: list[int]) -> list[Any]:
    """Registers of one poll, as a sonde (or an impostor on the line) answered them."""
    out = []
    for block in source.blocks:
        got = words[: block.count] + [0] * max(0, block.count - len(words))
        readings = source._decode_block(block, got, 1_700_000_000.0)
        assert len(readings) == len(block.registers)
        out += readings
    return out


# -- downlink ----------------------------------------------------------------------------------


def check_guard(guard: DownlinkGuard, payload: bytes, topic: str) -> dict[str, Any] | None:
    """Downlink bytes: the message object, or ValueError (SignatureError for signatures)."""
    try:
        doc = guard.open(payload, topic)
    except SignatureError as e:
        assert e.reason in ("malformed", "unsigned", "unknown-key", "bad-signature", "expired",
                            "wrong-audience", "replayed", "replay-store-full")  # fmt: skip
        return None
    except ValueError:
        return None
    assert len(payload) <= MAX_ENVELOPE_BYTES and isinstance(doc, dict)
    return doc


def new_guard(trusted: dict[str, bytes], require: bool) -> DownlinkGuard:
    folder = Path(tempfile.mkdtemp(prefix="twinedge-fuzz-"))
    return DownlinkGuard(trusted, require, NonceStore(folder / "nonces.json"))


# -- CSV and site files ------------------------------------------------------------------------


def check_csv(bundle: Any, data: bytes) -> None:
    """``twinedge model score`` input: scored rows or ConfigError naming the row and column."""
    from gateway.detect.csvscore import score_csv

    with tempfile.TemporaryDirectory(prefix="twinedge-fuzz-") as tmp:
        path = Path(tmp) / "in.csv"
        path.write_bytes(data)
        out = io.StringIO()
        try:
            rows, flagged = score_csv(bundle, path, out)
        except ConfigError:
            return
    assert 0 <= flagged <= rows
    assert len(out.getvalue().splitlines()) >= rows + 1  # the header and every row, scored


def check_site(data: dict[str, Any]) -> None:
    """A site file's data (anything TOML can hold): a Site or ConfigError."""
    from gateway.config import parse_site

    with tempfile.TemporaryDirectory(prefix="twinedge-fuzz-") as tmp:
        try:
            site = parse_site(data, Path(tmp) / "site.toml")
        except ConfigError as e:
            assert e.file.endswith("site.toml")
            return
    assert site.assets and all(
        math.isfinite(c) for a in site.assets for c in a.location["coordinates"]
    )


def corpus(name: str) -> list[Path]:
    return sorted(p for p in (CORPUS / name).iterdir() if p.is_file())


def json_file(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
