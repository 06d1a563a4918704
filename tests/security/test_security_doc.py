"""docs/security.md is tested: its console examples run and print what it shows, and every
``twinedge keys`` command line in it parses with the real CLI."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import build_parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
TEXT = DOC.read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```console test\n(.*?)^```", TEXT, re.M | re.S)


def steps(block: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif line.strip():
            out[-1][1].append(line.strip())
    return out


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block-{i}" for i in range(len(BLOCKS))])
def test_console_examples_run(block: str, tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    for command, expected in steps(block):
        run = subprocess.run(
            command,
            shell=True,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)},
        )
        assert run.returncode == 0, f"$ {command}\n{run.stdout}{run.stderr}"
        lines = run.stdout.splitlines()
        at = 0
        for want in expected:
            hits = [i for i in range(at, len(lines)) if want in lines[i]]
            assert hits, f"$ {command}: expected {want!r} in\n{run.stdout}"
            at = hits[0] + 1


def test_every_keys_command_line_parses() -> None:
    parser = build_parser()
    lines = re.findall(r"^(?:\$ )?twinedge (keys [^\n>]*)", TEXT, re.M)
    lines += re.findall(r"`twinedge (keys [^`]*)`", TEXT)
    assert len(lines) >= 8
    for line in lines:
        args = shlex.split(line)
        if args[1:2] == ["new"] and len(args) == 2:
            args.append("NAME")
        try:
            parser.parse_args(args)
        except SystemExit as e:
            raise AssertionError(f"twinedge {line}: does not parse") from e
