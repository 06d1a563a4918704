"""Replay the seed corpus (tests/fuzz/corpus/<parser>/) through the same checks the fuzzers use.

Every input that once broke a parser, and a few well-formed ones, lives there as a file; add a
file when a fuzzer (hypothesis here, or a long local run with TWINEDGE_FUZZ_EXAMPLES set) finds
something, so it stays fixed.
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fuzz.checks import (
    CORPUS,
    REPO,
    check_advert,
    check_csv,
    check_frame,
    check_guard,
    check_registers,
    check_site,
    check_stream,
    corpus,
    new_guard,
)
from gateway.app import Gateway
from gateway.profiles import load_profile
from gateway.sources import SourceContext, parse_spec

PARSERS = ("frames", "streams", "adverts", "modbus", "downlink", "csv", "site")
FILES = [pytest.param(p, id=f"{p.parent.name}/{p.name}") for name in PARSERS for p in corpus(name)]
TOPIC = "twinedge/v1/lab/gw-fuzz/desired/wq-1"


def test_every_parser_has_a_corpus() -> None:
    assert sorted(d.name for d in CORPUS.iterdir() if d.is_dir()) == sorted(PARSERS)
    for name in PARSERS:
        assert len(corpus(name)) >= 3, name


@pytest.fixture(scope="module")
def univariate() -> Any:
    from gateway.detect.bundle import load_bundle

    return load_bundle(REPO / "models" / "univariate-stream")


@pytest.mark.parametrize("path", FILES)
def test_corpus_input(
    path: Path, univariate: Any, running: tuple[asyncio.AbstractEventLoop, Gateway]
) -> None:
    data = path.read_bytes()
    kind = path.parent.name
    if kind == "frames":
        check_frame(data)
    elif kind == "streams":
        check_stream([data[i : i + 7] for i in range(0, len(data), 7)])  # odd chunking
    elif kind == "adverts":
        check_advert(data)
    elif kind == "modbus":
        from gateway.sources.modbus import open as open_modbus

        spec = parse_spec("modbus:/dev/ttyFUZZ?unit=1")
        source = open_modbus(spec, SourceContext("wq-1", load_profile("sonde-modbus")))
        check_registers(source, json.loads(data))
    elif kind == "downlink":
        for require in (True, False):
            check_guard(new_guard({}, require), data, TOPIC)
        loop, gw = running
        for kind in ("desired", "command"):
            loop.run_until_complete(gw.downlink.handle(kind, "wq-1", data))  # never raises
    elif kind == "csv":
        check_csv(univariate, data)
    elif kind == "site":
        check_site(tomllib.loads(data.decode("utf-8")))
