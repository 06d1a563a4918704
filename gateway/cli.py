"""The ``twinedge`` command: one argparse tree; each command group lives in gateway/commands/.

A command module exposes ``add_parser(subparsers)`` which adds its parser and sets ``func`` to a
callable taking the parsed namespace and returning an exit code. Command modules import heavy
libraries (onnxruntime, bleak, aiomqtt) inside their functions so ``twinedge --help`` stays fast.
Exit codes: 0 success, 1 failure at run time, 2 bad usage or invalid configuration.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.errors import ConfigError, TwinedgeError

#: command groups in the order ``twinedge --help`` lists them
COMMANDS = (
    "run",
    "demo",
    "config",
    "status",
    "doctor",
    "scan",
    "firmware",
    "model",
    "feed",
    "bench",
    "keys",
    "rehearse",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twinedge",
        description="Edge runtime for city digital twins: devices in, twins out over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"twinedge {__version__}")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="stderr log format"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"gateway.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"gateway.commands.{name}":
                raise
            continue  # a command group not in this build
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from gateway.logs import setup_logging

    setup_logging(args.log_format, args.verbose)
    try:
        code: int = args.func(args)
    except ConfigError as e:
        print(f"twinedge: {e}", file=sys.stderr)
        return 2
    except TwinedgeError as e:
        print(f"twinedge: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
