"""``twinedge rehearse``: run the current site and a candidate side by side before going live.

``--candidate`` is a site file (thresholds and model modes in an optional ``[detect]`` table,
reporting periods per asset, another models directory) or a model bundle directory. Input is a
scenario file (``--scenario``, labelled: precision, recall and delay are reported) or a recording
(``--recording``, exported from a gateway). Both sides are validated, and their models opened,
before any input is generated: an invalid candidate exits with status 2 naming the file and key.
``--save-recording FILE`` writes the current side's input as a recording file (the same format
and per-asset cap as a gateway's recorder), so a scenario can be replayed as a recording.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("rehearse", help="compare the current config with a candidate on a scenario")
    p.add_argument("--site", required=True, type=Path, help="the current site file")
    p.add_argument("--candidate", required=True, type=Path,
                   help="candidate site file or model bundle directory")  # fmt: skip
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scenario", type=Path, help="scenario file (TOML)")
    src.add_argument("--recording", type=Path, help="recording file (.jsonl.gz)")
    p.add_argument("--batch", default="5s", help="seconds of readings scored together (5s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--html", type=Path, metavar="FILE", help="also write an HTML report")
    p.add_argument("--save-recording", type=Path, metavar="FILE",
                   help="also write the current side's input as a recording file")  # fmt: skip
    p.set_defaults(func=cmd_rehearse)


def cmd_rehearse(args: argparse.Namespace) -> int:
    from gateway.rehearse import load_candidate, load_recording, load_scenario, load_side
    from gateway.rehearse import rehearse as run
    from gateway.rehearse.report import html_report, print_table
    from gateway.sources import parse_duration

    try:
        batch = parse_duration(args.batch, file="--batch", key="")
        current = load_side(args.site, "current")
        candidate = load_candidate(args.candidate, current)
        scenario = load_scenario(args.scenario) if args.scenario else None
        recording = load_recording(args.recording) if args.recording else None
        result = run(current, candidate, scenario=scenario, recording=recording,
                          batch=batch)  # fmt: skip
    except ConfigError as e:
        print(f"twinedge rehearse: {e}", file=sys.stderr)
        return 2
    doc = result.as_dict()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_table(doc)
    if args.save_recording:
        rows = save_recording(result.inputs["current"], args.save_recording)
        print(f"wrote {rows} readings to {args.save_recording}", file=sys.stderr)
    if args.html:
        args.html.write_text(html_report(result), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


def save_recording(series: list[Any], path: Path) -> int:
    """Feed ``series`` through a :class:`Recorder` (cap of 64 MiB per asset) and export it."""
    from gateway.readings import Reading
    from gateway.rehearse import Recorder

    rec = Recorder({s.asset: s.category for s in series}, max_bytes=64 << 20)
    for s in series:
        for q, values in s.values.items():
            unit = s.units[q]
            pairs = zip(s.times.tolist(), values.tolist(), strict=True)
            rec.record([Reading(s.asset, q, v, unit, t, t) for t, v in pairs])
    return rec.export(path, {s.asset: s.labels for s in series})
