"""Logging set-up: text or JSON lines on stderr, written to stderr as it is at each record."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway.logs import setup_logging


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield
    root.handlers[:] = saved
    root.setLevel(level)


def test_records_go_to_stderr_as_it_is_now(
    root_handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    setup_logging()
    logging.getLogger("twinedge.test").warning("one")
    first.close()  # whoever swapped stderr is done with it
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("twinedge.test").warning("two")  # no "I/O operation on closed file"
    assert second.getvalue().rstrip().endswith("WARNING twinedge.test: two")


def test_json_lines(root_handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    setup_logging("json")
    logging.getLogger("twinedge.test").warning("hello %s", "there", extra={"device": "d1"})
    doc = json.loads(out.getvalue())
    assert doc["level"] == "warning" and doc["msg"] == "hello there" and doc["device"] == "d1"
    assert doc["logger"] == "twinedge.test" and doc["ts"].endswith("Z")
