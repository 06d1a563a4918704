"""``twinedge firmware deploy|stage|check``: put a node app on a board, and check the firmware.

``deploy APP --port PORT --board BOARD`` stages the app (``stage``), then copies every staged
file to the board with ``mpremote`` (one ``fs cp`` per file, with a progress bar) and resets it.
``stage`` compiles the app's manifest (``firmware/APP/manifest.json``) with ``mpy-cross``:
``main.py`` stays source (the board runs it at boot), everything else becomes ``.mpy``, and
the board file becomes ``board.mpy``. ``--dry-run`` prints the exact mpremote commands.

``check`` runs the static checks CI needs and exits 1 if any fails: ``compile`` (mpy-cross on
every firmware and edge_node file), ``types`` (mypy of firmware/ and edge_node/ against the
MicroPython esp32 and rp2 board stubs, installed into ``.stubs/`` on first use) and ``unit``
(the edge_node unit tests on the real MicroPython interpreter).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, TwinedgeError

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
STUBS = ROOT / ".stubs"
#: board file -> MicroPython stubs package of its port
BOARD_STUBS = {"esp32": "micropython-esp32-stubs", "rp2": "micropython-rp2-stubs"}
CHECKS = ("compile", "types", "unit")
TOOL_TIMEOUT = 300.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("firmware", help="deploy node apps to boards; check the firmware")
    fsub = p.add_subparsers(dest="firmware_command", metavar="ACTION", required=True)

    d = fsub.add_parser("deploy", help="compile an app and copy it to a board with mpremote")
    _app_args(d)
    d.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0")
    d.add_argument("--dry-run", action="store_true", help="print the mpremote commands only")
    d.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")
    d.set_defaults(func=cmd_deploy)

    s = fsub.add_parser("stage", help="compile an app into a directory as it goes on the board")
    _app_args(s)
    s.add_argument("--out", type=Path, required=True, help="directory to fill (created)")
    s.set_defaults(func=cmd_stage)

    c = fsub.add_parser(
        "check", help="mpy-cross compile, type-check against board stubs, unit tests"
    )
    c.add_argument("--only", choices=CHECKS, action="append", help="run only this check")
    c.set_defaults(func=cmd_check)


def _app_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", help=f"one of {apps()}")
    p.add_argument("--board", required=True, help=f"one of {boards()}")


def apps() -> list[str]:
    return sorted(p.parent.name for p in FIRMWARE.glob("*/manifest.json"))


def boards() -> list[str]:
    return sorted(p.stem for p in (FIRMWARE / "boards").glob("*.py"))


def tool(name: str) -> str:
    """A tool from this environment's bin directory, else from PATH; a clear error if neither."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise TwinedgeError(
            f"{name} not found: install the test extra (pip install twinedge[test])"
        )
    return found


# --- staging ------------------------------------------------------------------------------


@dataclass
class Staged:
    app: str
    board: str
    directory: Path
    files: list[str] = field(default_factory=list)  # device paths, in copy order

    def size(self) -> int:
        return sum((self.directory / f).stat().st_size for f in self.files)


def load_manifest(app: str) -> dict[str, Any]:
    path = FIRMWARE / app / "manifest.json"
    if not path.is_file():
        raise ConfigError("<command line>", "app", f"one of {apps()}", app)
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(str(path), "", f"valid JSON ({e})") from None
    files = manifest.get("files")
    if not isinstance(files, dict) or "main.py" not in files:
        raise ConfigError(str(path), "files", "an object of device path -> repo path with main.py")
    for device, source in files.items():
        if not (ROOT / source).is_file():
            raise ConfigError(str(path), f"files.{device}", "an existing file", source)
    return manifest


def stage(app: str, board: str, out: Path) -> Staged:
    """Compile ``app`` for ``board`` into ``out`` exactly as it will sit on the board."""
    manifest = load_manifest(app)
    if board not in boards():
        raise ConfigError("<command line>", "board", f"one of {boards()}", board)
    allowed = manifest.get("boards", boards())
    if board not in allowed:
        raise ConfigError(f"firmware/{app}/manifest.json", "boards", f"to list {board}", allowed)
    files = dict(manifest["files"])
    files["board.py"] = f"firmware/boards/{board}.py"
    staged = Staged(app, board, out)
    mpy_cross = tool("mpy-cross")
    for device, source in files.items():
        target = out / device
        target.parent.mkdir(parents=True, exist_ok=True)
        if device == "main.py":
            shutil.copyfile(ROOT / source, target)
        else:
            target = target.with_suffix(".mpy")
            _compile(mpy_cross, ROOT / source, target, device)
        staged.files.append(str(target.relative_to(out)))
    return staged


def _compile(mpy_cross: str, source: Path, target: Path, device: str) -> None:
    cmd = [mpy_cross, "-s", device, "-o", str(target), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    if done.returncode != 0:
        shown = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
        raise TwinedgeError(f"mpy-cross rejected {shown}: {done.stderr.strip()}")


def mpremote_commands(staged: Staged, port: str, reset: bool = True) -> list[list[str]]:
    """The mpremote invocations that put ``staged`` on the board at ``port``, in order."""
    mpremote = tool("mpremote")
    base = [mpremote, "connect", port]
    dirs = sorted({str(Path(f).parent) for f in staged.files if "/" in f})
    cmds = [[*base, "fs", "mkdir", f":{d}"] for d in dirs]
    for f in staged.files:
        cmds.append([*base, "resume", "fs", "cp", str(staged.directory / f), f":{f}"])
    if reset:
        cmds.append([*base, "resume", "reset"])
    return cmds


def _run_mpremote(cmd: Sequence[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    if done.returncode == 0:
        return
    err = (done.stderr or done.stdout).strip()
    if "fs" in cmd and "mkdir" in cmd and ("EEXIST" in err or "exists" in err):
        return  # the directory is already on the board
    raise TwinedgeError(f"mpremote failed ({' '.join(cmd[1:])}): {err or done.returncode}")


def cmd_stage(args: argparse.Namespace) -> int:
    staged = stage(args.app, args.board, args.out)
    for f in staged.files:
        print(f"{f}\t{(staged.directory / f).stat().st_size}")
    print(f"{len(staged.files)} files, {staged.size()} bytes for {args.app} on {args.board}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with tempfile.TemporaryDirectory(prefix="twinedge-deploy-") as tmp:
        staged = stage(args.app, args.board, Path(tmp))
        cmds = mpremote_commands(staged, args.port, reset=not args.no_reset)
        if args.dry_run:
            for cmd in cmds:
                print(" ".join(cmd))
            return 0
        if not Path(args.port).exists() and "/" in args.port:
            raise TwinedgeError(f"{args.port}: no such serial port (is the board plugged in?)")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, transient=False) as progress:
            task = progress.add_task(f"{args.app} → {args.port}", total=len(cmds))
            for cmd in cmds:
                progress.update(task, description=f"{cmd[-1] if 'cp' in cmd else cmd[-2:]}")
                _run_mpremote(cmd)
                progress.advance(task)
    print(f"deployed {args.app} ({staged.size()} bytes) for {args.board} to {args.port}")
    return 0


# --- checks -------------------------------------------------------------------------------


def firmware_sources() -> list[Path]:
    return sorted([*FIRMWARE.rglob("*.py"), *(ROOT / "edge_node").glob("*.py")])


def check_compile() -> list[str]:
    """mpy-cross every firmware and edge_node file; returns the failures."""
    mpy_cross = tool("mpy-cross")
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for src in firmware_sources():
            cmd = [mpy_cross, "-o", f"{tmp}/out.mpy", str(src)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                failures.append(f"{src.relative_to(ROOT)}: {done.stderr.strip()}")
    return failures


def ensure_stubs(port: str) -> Path:
    """The board stubs for ``port`` under .stubs/, installed with pip on first use."""
    target = STUBS / port
    if (target / "machine.pyi").is_file():
        return target
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--target", str(target)]
    done = subprocess.run([*cmd, BOARD_STUBS[port]], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TwinedgeError(f"could not install {BOARD_STUBS[port]}: {done.stderr.strip()}")
    return target


def check_types() -> list[str]:
    """mypy of each app with edge_node and firmware/sensors.py, against each board's stubs."""
    failures = []
    for board in boards():
        port = _board_port(board)
        stubs = ensure_stubs(port)
        alias = STUBS / f"board-{board}"
        alias.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIRMWARE / "boards" / f"{board}.py", alias / "board.py")
        config = STUBS / f"mypy-{port}.ini"
        config.write_text(_mypy_config(stubs, alias, port), encoding="utf-8")
        common = [str(p) for p in sorted((ROOT / "edge_node").glob("*.py"))]
        common.append(str(FIRMWARE / "sensors.py"))
        for app in apps():
            files = [*common, str(FIRMWARE / app / "app.py"), str(alias / "board.py")]
            cmd = [sys.executable, "-m", "mypy", "--config-file", str(config), *files]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
            if done.returncode != 0:
                failures.append(f"{app} on {board}:\n{done.stdout.strip()}{done.stderr.strip()}")
    return failures


def _board_port(board: str) -> str:
    for line in (FIRMWARE / "boards" / f"{board}.py").read_text(encoding="utf-8").splitlines():
        if line.startswith("PORT = "):
            port = line.split("=", 1)[1].strip().strip("\"'")
            if port in BOARD_STUBS:
                return port
    raise ConfigError(f"firmware/boards/{board}.py", "PORT", f"one of {sorted(BOARD_STUBS)}")


def _mypy_config(stubs: Path, alias: Path, port: str) -> str:
    return "\n".join(
        [
            "[mypy]",
            "python_version = 3.11",
            f"custom_typeshed_dir = {stubs}",
            f"mypy_path = {stubs}:{alias}:{ROOT}:{FIRMWARE}",
            "follow_imports = silent",
            "follow_imports_for_stubs = True",
            "no_site_packages = True",
            "check_untyped_defs = True",
            "warn_unused_ignores = False",
            f"cache_dir = {STUBS}/.mypy_cache_{port}",
            "",
        ]
    )


def check_unit() -> list[str]:
    """The edge_node unit tests on the real MicroPython unix port."""
    env = dict(os.environ, MICROPYPATH=f".frozen:{ROOT}")
    cmd = [tool("micropython"), "tests/edge_node/mp_runner.py"]
    done = subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=TOOL_TIMEOUT, check=False
    )
    if done.returncode == 0:
        return []
    lines = [ln for ln in done.stdout.splitlines() if not ln.startswith("ok ")]
    return ["\n".join([*lines, done.stderr.strip()]).strip()]


def cmd_check(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=False)
    runners = {"compile": check_compile, "types": check_types, "unit": check_unit}
    failed = 0
    for name in args.only or CHECKS:
        with console.status(f"firmware check: {name}"):
            failures = runners[name]()
        if failures:
            failed += 1
            console.print(f"[red]FAIL[/red] {name}")
            for f in failures:
                console.print(f, markup=False, highlight=False)
        else:
            console.print(f"[green]ok[/green]   {name}")
    return 1 if failed else 0
