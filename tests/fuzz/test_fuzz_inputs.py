"""Fuzzing the northbound and operator inputs: downlink JSON through the envelope verifier and
the gateway's own downlink handler, CSV files for ``twinedge model score``, and site files."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from fuzz.checks import FUZZ, REPO, check_csv, check_guard, check_site, new_guard
from gateway.app import Gateway
from gateway.errors import ConfigError
from gateway.security import MAX_ENVELOPE_BYTES, key_id, sign

KEY = Ed25519PrivateKey.generate()
RAW = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
TRUSTED = {key_id(RAW): RAW}
TOPIC = "twinedge/v1/lab/gw-fuzz/desired/wq-1"

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(["v", "kid", "exp", "nonce", "aud", "payload", "sig", "extra"])


def envelope() -> dict[str, Any]:
    return sign({"v": 1, "id": "d-1", "period": "2s"}, KEY, aud=TOPIC, exp=time.time() + 600)


# -- downlink: the verifier --------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=2048), JSON.map(lambda d: json.dumps(d).encode())))
def test_any_downlink_bytes_open_or_raise_value_error(payload: bytes) -> None:
    for require in (True, False):
        doc = check_guard(new_guard(TRUSTED, require), payload, TOPIC)
        if require:
            assert doc is None  # nothing unsigned gets through a gateway that requires signatures


@FUZZ
@given(FIELDS, JSON)
def test_a_changed_envelope_field_is_never_accepted(field: str, value: Any) -> None:
    doc = envelope()
    if doc.get(field) == value:
        return
    doc[field] = value
    assert check_guard(new_guard(TRUSTED, True), json.dumps(doc).encode(), TOPIC) is None


def test_oversized_and_deep_downlink_are_refused() -> None:
    guard = new_guard(TRUSTED, False)
    huge = json.dumps({"v": 1, "pad": "x" * MAX_ENVELOPE_BYTES}).encode()
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for payload in (huge, deep):
        assert check_guard(guard, payload, TOPIC) is None


# -- downlink: the gateway's handler -----------------------------------------------------------

DESIRED = st.fixed_dictionaries(
    {"v": st.just(1), "id": st.text(min_size=1, max_size=10)},
    optional={
        "period": JSON | st.text(max_size=8),
        "thresholds": JSON,
        "command": st.sampled_from(["set_period", "dim", "power", "identify", "reboot"]) | JSON,
        "args": st.dictionaries(st.sampled_from(["period", "level", "on", "x"]), JSON) | JSON,
    },
)


@FUZZ
@given(
    st.sampled_from(["desired", "command"]),
    st.sampled_from(["wq-1", "nope"]),
    st.one_of(
        st.binary(max_size=512),
        JSON.map(lambda d: json.dumps(d).encode()),
        DESIRED.map(lambda d: json.dumps(d).encode()),
    ),
)
def test_gateway_downlink_handler_never_raises(
    running: tuple[asyncio.AbstractEventLoop, Gateway], kind: str, asset: str, payload: bytes
) -> None:
    loop, gw = running
    loop.run_until_complete(gw.downlink.handle(kind, asset, payload))
    period = gw.twins["wq-1"].config["period"]
    assert isinstance(period, float) and 0.1 <= period <= 86400


# -- CSV for `twinedge model score` ------------------------------------------------------------


@pytest.fixture(scope="module")
def univariate() -> Any:
    from gateway.detect.bundle import load_bundle

    return load_bundle(REPO / "models" / "univariate-stream")


CELLS = st.one_of(
    st.floats(min_value=-1e12, max_value=1e12).map(str),  # any physical reading
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["2026-01-01T00:00:00Z", "2026-13-01", "", "nan", "inf", "1e309", '"', "\x00"]),
    st.text(max_size=12),
)


@FUZZ
@given(st.lists(st.lists(CELLS, min_size=0, max_size=2), max_size=30), st.booleans())
def test_model_score_csv_raises_only_config_error(
    univariate: Any, rows: list[list[str]], header: bool
) -> None:
    lines = (["time,value"] if header else []) + [",".join(r) for r in rows]
    check_csv(univariate, "\n".join(lines).encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"time,value\n1,2,3\n", id="more-cells-than-header"),
        pytest.param(b"time,value\n0,1e211\n1,1\n", id="huge-value"),  # would overflow
        pytest.param(b"time,value\nnan,1\n2,1\n", id="nan-time"),
    ],
)
def test_model_score_csv_refuses_with_a_clear_error(univariate: Any, data: bytes) -> None:
    from gateway.detect.csvscore import score_csv

    with tempfile.TemporaryDirectory() as tmp, pytest.raises(ConfigError, match=r"row 2"):
        (Path(tmp) / "in.csv").write_bytes(data)
        score_csv(univariate, Path(tmp) / "in.csv", io.StringIO())


# -- site files --------------------------------------------------------------------------------

TOML_VALUES = st.recursive(
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=24),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
BASE_SITE: dict[str, Any] = {
    "gateway": {"id": "gw-1", "site": "lab", "stale_after": "30s"},
    "broker": {"url": "mqtt://127.0.0.1:1883", "keepalive": "30s"},
    "buffer": {"max_bytes": "64MB", "synchronous": "normal"},
    "api": {"listen": "127.0.0.1:8080"},
    "security": {"require_signed_downlink": False},
    "assets": [
        {"id": "wq-1", "category": "water-quality", "location": [4.9, 52.3],
         "source": "demo:water-quality?period=1s"},
    ],
}  # fmt: skip


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@FUZZ
@given(st.data())
def test_site_loader_raises_only_config_error(data: st.DataObject) -> None:
    site = copy.deepcopy(BASE_SITE)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(site)))
        parent = site
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = data.draw(TOML_VALUES)
    check_site(site)


@FUZZ
@given(st.dictionaries(st.text(max_size=10), TOML_VALUES, max_size=6))
def test_site_loader_on_arbitrary_tables(data: dict[str, Any]) -> None:
    check_site(data)
