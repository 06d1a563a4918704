"""docs/rehearsal.md agrees with the code: its commands parse, its TOML examples validate."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

from gateway.cli import build_parser
from gateway.rehearse import load_scenario, load_side
from tests.rehearse.conftest import ROOT, write_site

DOC = (ROOT / "docs" / "rehearsal.md").read_text(encoding="utf-8")
TOML = re.compile(r"^ *```toml\n(.*?)^ *```", re.M | re.S)


def test_command_lines_parse() -> None:
    lines = [ln[2:] for ln in DOC.splitlines() if ln.startswith("$ twinedge rehearse")]
    assert len(lines) == 3
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.func.__name__ == "cmd_rehearse"


def test_toml_examples_validate(tmp_path: Path) -> None:
    examples = [tomllib.loads(_dedent(b)) for b in TOML.findall(DOC)]
    scenario = next(e for e in examples if "scenario" in e)
    detect = next(e for e in examples if "detect" in e)
    recording = next(e for e in examples if "recording" in e)
    block = next(b for b in TOML.findall(DOC) if "[scenario]" in b)
    (tmp_path / "s.toml").write_text(_dedent(block), encoding="utf-8")
    assert load_scenario(tmp_path / "s.toml").events[0].kind == scenario["events"][0]["kind"]
    d = next(b for b in TOML.findall(DOC) if "[detect]" in b)
    site = write_site(tmp_path / "site.toml", detect=_dedent(d))
    side = load_side(site, "current")
    assert side.thresholds == detect["detect"]["thresholds"] and side.modes == {
        "pedestrian-counter": "shadow"
    }
    assert recording["recording"] == {"enabled": False, "max_bytes": "8MB",
                                      "path": "var/recording.jsonl.gz"}  # fmt: skip


def _dedent(block: str) -> str:
    return "\n".join(ln.strip() for ln in block.splitlines()) + "\n"
