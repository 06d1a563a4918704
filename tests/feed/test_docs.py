"""docs/feed.md and docs/asyncapi.yaml agree with the schemas and the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.cli import build_parser
from gateway.sync import schemas

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLE = re.compile(r"<!-- feed-example: (\w+) -->\n```json\n(.*?)\n```", re.S)


def test_every_example_in_feed_md_validates() -> None:
    found: dict[str, int] = {}
    for kind, text in EXAMPLE.findall((DOCS / "feed.md").read_text(encoding="utf-8")):
        schemas.validator(kind).validate(json.loads(text))
        found[kind] = found.get(kind, 0) + 1
    assert set(found) == {*schemas.UPLINK_KINDS, *schemas.DOWNLINK_KINDS}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], pointer: str) -> Any:
    node: Any = doc
    for part in pointer.lstrip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_asyncapi_parses_and_references_existing_schemas() -> None:
    doc = yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert doc["asyncapi"].startswith("3.")
    files = set()
    for ref in _refs(doc):
        path, _, pointer = ref.partition("#")
        if path:
            target = (DOCS / path).resolve()
            assert target.is_file(), ref
            json.loads(target.read_text(encoding="utf-8"))
            files.add(target.stem)
        else:
            assert _resolve(doc, pointer) is not None, ref
    assert files == {*schemas.UPLINK_KINDS, *schemas.DOWNLINK_KINDS}
    # every channel address matches the topic layout of gateway/sync/messages.py
    for channel in doc["channels"].values():
        assert channel["address"].startswith("twinedge/v1/{site}/{gateway}/")
        assert set(re.findall(r"{(\w+)}", channel["address"])) == set(channel["parameters"])
    for op in doc["operations"].values():
        assert op["action"] in ("send", "receive")


def test_cli_usage_in_feed_md_matches_the_parser() -> None:
    text = (DOCS / "feed.md").read_text(encoding="utf-8")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    feed = sub.choices["feed"]  # type: ignore[index]
    cmds = next(a for a in feed._actions if a.dest == "feed_command")
    for name, p in cmds.choices.items():  # type: ignore[union-attr]
        line = next(x for x in text.splitlines() if x.startswith(f"twinedge feed {name}"))
        for action in p._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help":
                    assert opt in line, f"{opt} of feed {name} is not in docs/feed.md"
