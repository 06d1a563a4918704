"""The docs are tested: their runnable examples run, their command lines match the CLI, and the
deploy files they describe are valid.

A fenced block whose info string is ``console test`` is runnable: each ``$ `` line is a command,
the lines after it (up to the next command) are expected output. Every expected line must occur,
in order, inside the command's output lines; ``...`` skips freely. Commands of one block run in
one shell, in a fresh folder that sees the repository's ``examples/``; background jobs (``&``)
get SIGTERM when the block ends. ``127.0.0.1:8080`` in a block is replaced by a free port, and
``TWINEDGE_URL`` points there, so blocks can use the defaults the docs show.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "docs" / n for n in ("quickstart.md", "technician-guide.md", "operations.md")]
BLOCK = re.compile(r"^```console test\n(.*?)^```", re.M | re.S)
MARK = "@@twinedge-docs-step"


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


def blocks(doc: Path) -> list[list[Step]]:
    out = []
    for m in BLOCK.finditer(doc.read_text(encoding="utf-8")):
        steps: list[Step] = []
        for line in m.group(1).splitlines():
            if line.startswith("$ "):
                steps.append(Step(line[2:]))
            elif line.strip():
                assert steps, f"{doc.name}: output before the first command: {line!r}"
                steps[-1].expected.append(line.strip())
        out.append(steps)
    return out


CASES = [
    pytest.param(doc, i, steps, id=f"{doc.stem}-{i}")
    for doc in DOCS
    for i, steps in enumerate(blocks(doc))
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def script(steps: list[Step], port: int) -> str:
    # background jobs are stopped by the pids recorded as they start, not by a subshell's view
    # of the job table (`$(jobs -p)`)
    lines = [
        "bg=()",
        """trap '[ ${#bg[@]} -eq 0 ] || { kill "${bg[@]}" 2>/dev/null; wait; }' EXIT""",
    ]
    for i, step in enumerate(steps):
        command = step.command.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        lines.append(f"echo '{MARK} {i}'")
        if command.rstrip().endswith("&"):
            lines.append(f"{command}\nbg+=($!)")
        else:
            lines.append(f'{command}\necho "{MARK}-rc $?"')
    return "\n".join(lines) + "\n"


def check_output(step: Step, output: str) -> None:
    got = [line.strip() for line in output.splitlines()]
    at = 0
    for want in step.expected:
        if want == "...":
            continue
        for j in range(at, len(got)):
            if want in got[j]:
                at = j + 1
                break
        else:
            raise AssertionError(f"$ {step.command}\nexpected a line with {want!r} in:\n{output}")


@pytest.mark.parametrize(("doc", "index", "steps"), CASES)
def test_console_examples_run(doc: Path, index: int, steps: list[Step], tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(REPO / "examples")
    port = free_port()
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "COLUMNS": "160",
        "TWINEDGE_URL": f"http://127.0.0.1:{port}",
    }
    with subprocess.Popen(
        ["bash", "-c", script(steps, port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a timeout stops the block's background jobs too
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(f"{doc.name} block {index} still running after 90 s:\n{stdout}\n{stderr}")
    parts = re.split(rf"^{MARK} (\d+)\n", stdout, flags=re.M)
    outputs = dict(zip(map(int, parts[1::2]), parts[2::2], strict=True))
    for i, step in enumerate(steps):
        assert i in outputs, f"$ {step.command}: never ran; stderr:\n{stderr}"
        text = outputs[i]
        rc = re.search(rf"^{MARK}-rc (\d+)$", text, re.M)
        body = re.sub(rf"^{MARK}-rc \d+\n?", "", text, flags=re.M)
        if rc is not None:
            assert rc.group(1) == "0", f"$ {step.command}: exit {rc.group(1)}\n{body}{stderr}"
        check_output(step, body)


def test_every_doc_has_runnable_examples() -> None:
    for doc in DOCS:
        assert blocks(doc), f"{doc.name} has no ```console test block"


# -- the docs and the CLI agree -------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_lines(text: str) -> list[list[str]]:
    """The argument lists of ``twinedge ...`` in the docs' code blocks and inline code."""
    found = []
    shell = "\n".join(re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S))
    for m in re.finditer(r"(?:^\$ |`|/bin/)twinedge( [^`\n|&>]*)", text, re.M):
        found.append(shlex.split(m.group(1).split("#")[0], posix=True))
    for m in re.finditer(r"^twinedge( [^`\n|&>]*)", shell, re.M):
        tokens = shlex.split(m.group(1).split("#")[0], posix=True)
        found.append(tokens)
    return found


def test_options_in_the_docs_exist() -> None:
    top = build_parser()
    problems = []
    for doc in DOCS:
        for tokens in _command_lines(doc.read_text(encoding="utf-8")):
            parser, where = top, "twinedge"
            for token in tokens:
                if token.startswith("--"):
                    option = token.split("=")[0]
                    if option not in parser._option_string_actions:
                        problems.append(f"{doc.name}: {where} has no {option}")
                elif (sub := _subparsers(parser)) and token in sub:
                    parser, where = sub[token], f"{where} {token}"
            if where == "twinedge" and tokens and not tokens[0].startswith("-"):
                problems.append(f"{doc.name}: unknown command twinedge {tokens[0]}")
    assert not problems, "\n".join(problems)


# -- the deploy files ------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (REPO / "deploy" / "twinedge.service").read_text(encoding="utf-8")
    assert "ExecStart=/opt/twinedge/venv/bin/twinedge --log-format json run" in unit
    # the unit's command lines must parse with the real CLI
    for line in unit.splitlines():
        if line.startswith(("ExecStart=", "ExecStartPre=")):
            args = shlex.split(line.split("=", 1)[1])[1:]
            build_parser().parse_args(args)
    local = unit.replace(
        "/opt/twinedge/venv/bin/twinedge", str(Path(sys.executable).parent / "twinedge")
    )
    path = tmp_path / "twinedge.service"
    path.write_text(local, encoding="utf-8")
    run = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "twinedge.service" not in run.stderr, run.stderr


UDEV_KEY = re.compile(
    r"^(SUBSYSTEM|KERNEL|ACTION|ATTRS?\{\w+\}|ENV\{\w+\}|GROUP|MODE|SYMLINK|OWNER)"
    r'(==|!=|\+=|=)"[^"]*"$'
)


def test_udev_rules_are_well_formed() -> None:
    rules = [
        line
        for line in (REPO / "deploy" / "99-twinedge.rules").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert rules
    for rule in rules:
        pairs = [p.strip() for p in rule.split(", ")]
        assert all(UDEV_KEY.match(p) for p in pairs), rule
        assert any(p.startswith(("GROUP=", "ENV{")) for p in pairs), rule
    tty = [r for r in rules if 'SUBSYSTEM=="tty"' in r and "GROUP=" in r]
    assert all('GROUP="dialout"' in r and 'MODE="0660"' in r for r in tty)
