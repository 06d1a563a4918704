"""The local API of a running gateway: localhost by default, a token when exposed, and no
endpoint that changes state, with or without the token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from gateway.api.server import ApiServer
from gateway.app import Gateway
from gateway.config import ApiConfig, load_site
from gateway.errors import ConfigError

TOKEN = "t0ken-for-the-technician-7c2e"
SITE = """
[gateway]
id = "gw-api"
site = "lab"
store = "store.db"
[api]
listen = "{listen}"
{token}
[[assets]]
id = "wq-1"
category = "water-quality"
location = [4.9, 52.37]
source = "demo:water-quality?period=0.1s&seed=1"
"""
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def site_file(tmp_path: Path, listen: str, token: bool) -> Path:
    (tmp_path / "api.token").write_text(TOKEN + "\n", encoding="utf-8")
    text = SITE.format(listen=listen, token='token_file = "api.token"' if token else "")
    (tmp_path / "site.toml").write_text(text, encoding="utf-8")
    return tmp_path / "site.toml"


def routes() -> list[str]:
    """Every path the API serves, from the server's own router."""
    app = ApiServer(lambda: {}, lambda: None, "127.0.0.1", 0, None).make_app()  # type: ignore[arg-type,return-value]
    return sorted({r.canonical for r in app.router.resources()})


def test_listens_on_localhost_unless_configured(tmp_path: Path) -> None:
    assert ApiConfig().host == "127.0.0.1"
    with pytest.raises(ConfigError) as info:
        load_site(site_file(tmp_path, "0.0.0.0:8080", token=False))
    assert info.value.key == "api.token_file"
    with pytest.raises(ConfigError):
        ApiServer(lambda: {}, lambda: None, "0.0.0.0", 0, None)  # type: ignore[arg-type,return-value]
    assert load_site(site_file(tmp_path, "0.0.0.0:8080", token=True)).api.token_file


async def test_no_endpoint_changes_state_and_private_ones_need_the_token(tmp_path: Path) -> None:
    site = load_site(site_file(tmp_path, "127.0.0.1:0", token=True))
    paths = routes()
    assert "/api/status" in paths and "/metrics" in paths
    async with Gateway(site) as gw, aiohttp.ClientSession() as http:
        assert gw.api_url is not None
        base = gw.api_url.rstrip("/")
        config_before = dict(gw.twins["wq-1"].config)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for path in [*paths, "/api/desired", "/api/command"]:
            for method in WRITES:
                for headers in ({}, auth):
                    async with http.request(method, base + path, headers=headers, data=b"{}") as r:
                        assert r.status == 405, (method, path, bool(headers))
        for path in paths:
            public = path in ("/", "/app.js", "/style.css", "/healthz")
            async with http.get(base + path) as r:
                assert r.status == (200 if public else 401), path
            async with http.get(base + path, params={"token": "wrong"}) as r:
                assert r.status == (200 if public else 401), path
            async with asyncio.timeout(10), http.get(base + path, headers=auth) as r:
                assert r.status == 200, path  # SSE included: the headers arrive at once
        assert gw.twins["wq-1"].config == config_before
        async with http.get(base + "/api/status", headers=auth) as r:
            status = await r.json()
        assert TOKEN not in str(status) and TOKEN not in str(gw.status())
