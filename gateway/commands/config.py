"""``twinedge config check SITE.toml``: validate a site file (exit 0 valid, 2 invalid)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("config", help="check site files")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser("check", help="validate a site file and its profiles")
    c.add_argument("site", nargs="+", help="site file(s) (TOML)")
    c.set_defaults(func=check)


def check(args: argparse.Namespace) -> int:
    from gateway.config import load_site
    from gateway.errors import ConfigError

    code = 0
    for path in args.site:
        try:
            site = load_site(path)
        except ConfigError as e:
            print(f"{e}", file=sys.stderr)
            code = 2
            continue
        print(
            f"{path}: ok — gateway {site.gateway_id}, site {site.site}, {len(site.assets)} assets"
        )
    return code
