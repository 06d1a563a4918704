"""``twinedge firmware``: staging with the real mpy-cross, the mpremote plan, the error paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.commands import firmware as fw
from gateway.errors import ConfigError, TwinedgeError


@pytest.mark.parametrize("app", ["water_quality", "streetlight", "pedestrian_counter"])
@pytest.mark.parametrize("board", ["esp32_devkitc", "rp2_pico"])
def test_stage_compiles_every_manifest_file(tmp_path: Path, app: str, board: str) -> None:
    staged = fw.stage(app, board, tmp_path)
    assert staged.files[0] in ("app.mpy", "main.py") and "board.mpy" in staged.files
    assert "main.py" in staged.files  # the boot script stays source
    for f in staged.files:
        data = (tmp_path / f).read_bytes()
        if f.endswith(".mpy"):
            assert data[0] == ord("M") and data[1] == 6  # .mpy header, format version 6
        else:
            assert data.startswith(b'"""Boot entry point')
    assert not any(f.endswith(".py") and f != "main.py" for f in staged.files)


def test_mpremote_plan_creates_dirs_copies_each_file_then_resets(tmp_path: Path) -> None:
    staged = fw.stage("water_quality", "rp2_pico", tmp_path)
    cmds = fw.mpremote_commands(staged, "/dev/ttyACM0")
    assert cmds[0][1:] == ["connect", "/dev/ttyACM0", "fs", "mkdir", ":edge_node"]
    copies = [c for c in cmds if "cp" in c]
    assert [c[-1] for c in copies] == [f":{f}" for f in staged.files]
    assert all(Path(c[-2]).is_file() and c[3] == "resume" for c in copies)
    assert cmds[-1][1:] == ["connect", "/dev/ttyACM0", "resume", "reset"]
    assert Path(cmds[0][0]).name == "mpremote"


def test_mpremote_failure_is_a_clear_error() -> None:
    with pytest.raises(TwinedgeError, match="mpremote failed"):
        fw._run_mpremote([fw.tool("mpremote"), "connect", "/dev/twinedge-no-such-port", "ls"])


def test_mpy_cross_rejection_names_the_file(tmp_path: Path) -> None:
    src = tmp_path / "broken.py"
    src.write_text("def f(:\n    pass\n")
    with pytest.raises(TwinedgeError, match=r"(?s)mpy-cross rejected .*broken\.py: .*SyntaxError"):
        fw._compile(fw.tool("mpy-cross"), src, tmp_path / "broken.mpy", "broken.py")
    assert not (tmp_path / "broken.mpy").exists()


def test_unknown_app_or_board_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="app"):
        fw.stage("toaster", "rp2_pico", tmp_path)
    with pytest.raises(ConfigError, match="board"):
        fw.stage("water_quality", "arduino_uno", tmp_path)
    assert main(["firmware", "deploy", "toaster", "--board", "rp2_pico", "--port", "x"]) == 2


def test_deploy_to_a_missing_port_fails_before_copying(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["firmware", "deploy", "streetlight", "--board", "esp32_devkitc"]
    assert main([*argv, "--port", "/dev/twinedge-missing"]) == 1
    assert "no such serial port" in capsys.readouterr().err
    assert main([*argv, "--port", "/dev/ttyUSB0", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    files = len(fw.load_manifest("streetlight")["files"]) + 1  # and the board file
    assert len(out) == 1 + files + 1  # mkdir edge_node, one cp per file, reset
    assert out[-1].endswith("/dev/ttyUSB0 resume reset")


def test_firmware_check_passes_on_the_tree() -> None:
    """The CI check itself: compile, type-check against both board stubs, MicroPython tests."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "firmware", "check"],
        capture_output=True,
        text=True,
        cwd=fw.ROOT,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [ln.split()[-1] for ln in done.stdout.splitlines()] == ["compile", "types", "unit"]
