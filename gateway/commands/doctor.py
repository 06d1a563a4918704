"""``twinedge doctor``: check that this box can run a site; each failure with its remedy."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

__all__ = ["add_parser"]

_MARK = {
    "ok": "[green]ok  [/]",
    "warn": "[yellow]warn[/]",
    "fail": "[red]FAIL[/]",
    "skip": "[dim]skip[/]",
}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="check serial ports, BLE, broker, clock, disk, store and models",
        description="Check that this machine can run the site: serial-port permissions, BLE "
        "adapter, broker reachability and TLS, clock sync, disk budget, store integrity and "
        "model files. Exits 1 when any check fails; each failure comes with its remedy.",
    )
    p.add_argument(
        "--site",
        default=os.environ.get("TWINEDGE_SITE"),
        help="the site file (default: $TWINEDGE_SITE); without it only machine checks run",
    )
    p.add_argument("--json", action="store_true", help="print the results as a JSON list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.doctor import failed, run_checks

    site = None
    if args.site:
        from gateway.config import load_site

        site = load_site(args.site)  # a ConfigError names file and key; the CLI exits 2
    checks = asyncio.run(run_checks(site))
    if args.json:
        json.dump([c.as_dict() for c in checks], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False)
        for c in checks:
            console.print(
                f"{_MARK[c.status]} {c.check:<7} {escape(c.subject)}: {escape(c.detail)}",
                soft_wrap=True,
            )
            if c.remedy:
                console.print(f"       [bold]fix:[/] {escape(c.remedy)}", soft_wrap=True)
        bad = sum(c.status == "fail" for c in checks)
        console.print(f"{bad} check(s) failed" if bad else "all checks passed")
    return 1 if failed(checks) else 0
