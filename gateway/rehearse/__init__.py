"""Digital rehearsal: try a config or model change on scripted scenarios or recordings first.

::

    current = load_side("site.toml", "current")
    candidate = load_candidate("new.toml", current)        # a site file or a model bundle dir
    result = rehearse(current, candidate, scenario=load_scenario("scenarios/heatwave.toml"))
    result.as_dict()                                        # both sides, side by side

Scenarios (:mod:`~gateway.rehearse.scenario`) drive the physics emulators with scripted events
and carry their labels; recordings (:mod:`~gateway.rehearse.recording`) are bounded captures of
a running gateway's raw readings. Each side runs the real detector and the feed's encoding
(:mod:`~gateway.rehearse.runner`; on columns where it can, :mod:`~gateway.rehearse.columnar`);
:mod:`~gateway.rehearse.report` renders a terminal table, JSON, or a self-contained HTML page
with SVG plots. See docs/rehearsal.md.
"""

from __future__ import annotations

from gateway.rehearse.compare import Rehearsal, rehearse
from gateway.rehearse.recording import Recorder, load_recording
from gateway.rehearse.scenario import Scenario, Series, generate, load_scenario
from gateway.rehearse.sides import Side, load_candidate, load_side

__all__ = [
    "Recorder",
    "Rehearsal",
    "Scenario",
    "Series",
    "Side",
    "generate",
    "load_candidate",
    "load_recording",
    "load_scenario",
    "load_side",
    "rehearse",
]
