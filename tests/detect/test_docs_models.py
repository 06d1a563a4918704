"""docs/models.md and the CLI agree: every ``twinedge model`` command line in it parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gateway.cli import build_parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"
PLACEHOLDERS = {"MODEL": "water-quality", "FILE": "x.csv", "C": "col", "N": "2", "DIR": "d"}


def _command_lines() -> list[str]:
    lines = []
    for block in re.findall(r"^```\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.M | re.S):
        for line in block.splitlines():
            line = line.removeprefix("$ ").split("#")[0].strip()
            if line.startswith("twinedge model"):
                lines.append(line)
    return lines


def _concrete(line: str) -> list[str]:
    """Expand ``[--a|--b]`` to its first choice, drop ``...`` and fill placeholders."""
    line = re.sub(r"\[([^\]|]*)\|[^\]]*\]", r"\1", line)
    line = line.replace("[", "").replace("]", "").replace("...", "")
    return [PLACEHOLDERS.get(tok, tok) for tok in shlex.split(line)][1:]


@pytest.mark.parametrize("line", _command_lines())
def test_documented_command_parses(line: str) -> None:
    args = build_parser().parse_args(_concrete(line))
    assert args.command == "model" and callable(args.func)


def test_every_model_action_is_documented() -> None:
    documented = {_concrete(line)[1] for line in _command_lines()}
    assert documented == {"verify", "eval", "score", "bench"}
