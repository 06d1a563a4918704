"""A short coverage-guided run of each atheris target, seeded with the repo's corpus (skipped
when atheris is not installed; it is an optional, Linux-only test dependency)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.checks import CORPUS

pytest.importorskip("atheris")

TARGETS = Path(__file__).resolve().parent / "atheris_targets.py"
RUNS = os.environ.get("TWINEDGE_ATHERIS_RUNS", "10000")


@pytest.mark.parametrize("target", ["frames", "adverts", "downlink"])
def test_atheris_target_finds_no_crash(target: str, tmp_path: Path) -> None:
    seeds = tmp_path / "corpus"
    shutil.copytree(CORPUS / ("streams" if target == "frames" else target), seeds)
    run = subprocess.run(
        [sys.executable, str(TARGETS), target, str(seeds), f"-runs={RUNS}", "-max_len=4096",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Done {RUNS} runs" in run.stderr
    assert not list(tmp_path.glob("crash-*"))
