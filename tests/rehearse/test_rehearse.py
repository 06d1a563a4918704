"""Rehearsals with the shipped models on the shipped scenarios: what each side raises and misses."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.errors import ConfigError
from gateway.rehearse import load_candidate, load_scenario, load_side, rehearse
from gateway.rehearse.report import html_report
from tests.rehearse.conftest import MODELS, SCENARIOS, write_site


def _run(site: Path, candidate: Path, scenario: str) -> dict[str, dict[str, object]]:
    current = load_side(site, "current")
    cand = load_candidate(candidate, current)
    doc = rehearse(current, cand, scenario=load_scenario(SCENARIOS / scenario)).as_dict()
    return doc["sides"]  # type: ignore[no-any-return]


def test_too_tight_threshold_raises_more_false_alarms(site: Path, tmp_path: Path) -> None:
    tight = write_site(
        tmp_path / "tight.toml", detect='[detect]\nthresholds = { "water-quality" = 0.05 }'
    )
    sides = _run(site, tight, "sewage-overflow.toml")
    cur, cand = sides["current"]["detection"], sides["candidate"]["detection"]
    assert isinstance(cur, dict) and isinstance(cand, dict)
    assert cand["false_positive_rows"] > cur["false_positive_rows"] + 10
    assert cand["precision"] < cur["precision"]
    assert sides["candidate"]["alerts"] > sides["current"]["alerts"]  # type: ignore[operator]
    assert cur["missed_events"] == 0 and cur["recall"] > 0.9  # the shipped threshold catches it


def test_candidate_model_catches_the_scripted_fault(
    tmp_path: Path, only_streetlight_models: Path
) -> None:
    """The current site has no water-quality model; the candidate bundle adds it."""
    site = write_site(tmp_path / "site.toml", gateway_extra=f'models = "{only_streetlight_models}"')
    sides = _run(site, MODELS / "water-quality", "heatwave.toml")
    cur, cand = sides["current"]["detection"], sides["candidate"]["detection"]
    assert isinstance(cur, dict) and isinstance(cand, dict)
    assert cur["events"] == cand["events"] == 1
    assert cur["missed_events"] == 1 and cur["recall"] == 0.0
    assert cand["missed_events"] == 0 and cand["recall"] > 0.5 and cand["precision"] > 0.95
    heated = sides["candidate"]["assets"]["wq-canal-1"]  # type: ignore[index]
    assert heated["alerts"] >= 1 and heated["detection"]["missed_events"] == 0


def test_invalid_candidate_is_refused_before_any_run(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A year at 1 Hz would take far longer than the test's timeout if it were generated."""
    year = tmp_path / "year.toml"
    text = (SCENARIOS / "heatwave.toml").read_text(encoding="utf-8")
    year.write_text(text.replace('duration = "1d"', 'duration = "365d"')
                    .replace('period = "60s"', 'period = "1s"'), encoding="utf-8")  # fmt: skip
    bad = write_site(tmp_path / "bad.toml", detect='[detect]\nmode = { "water-quality" = "loud" }')
    html = tmp_path / "report.html"
    code = main(["rehearse", "--site", str(site), "--candidate", str(bad),
                 "--scenario", str(year), "--html", str(html)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}: detect.mode.water-quality: expected one of ['active', 'shadow']" in err
    assert not html.exists()


def test_invalid_site_field_and_tampered_bundle_are_refused(site: Path, tmp_path: Path) -> None:
    bad = write_site(tmp_path / "bad.toml", asset_extra='period = "soon"')
    with pytest.raises(ConfigError) as e:
        load_candidate(bad, load_side(site, "current"))
    assert (e.value.file, e.value.key) == (str(bad), "assets[0].period")
    bundle = tmp_path / "water-quality"
    shutil.copytree(MODELS / "water-quality", bundle)
    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes()[:-1] + b"\0")
    current = load_side(site, "current")
    with pytest.raises(ConfigError) as e:
        rehearse(current, load_candidate(bundle, current),
                 scenario=load_scenario(SCENARIOS / "heatwave.toml"))  # fmt: skip
    assert e.value.file == str(bundle) and "sha256" in str(e.value)


def test_shadow_mode_raises_no_alerts_and_flags_nothing(site: Path, tmp_path: Path) -> None:
    shadow = write_site(
        tmp_path / "shadow.toml", detect='[detect]\nmode = { "water-quality" = "shadow" }'
    )
    sides = _run(site, shadow, "sewage-overflow.toml")
    cand = sides["candidate"]
    assert cand["alerts"] == 0 and cand["shadow_alerts"] == sides["current"]["alerts"]
    assert cand["detection"]["missed_events"] == 1  # type: ignore[index]


def test_broker_outage_backlog_and_longer_period(site: Path, tmp_path: Path) -> None:
    slower = write_site(tmp_path / "slow.toml", asset_extra='period = "5m"')
    current = load_side(site, "current")
    festival = load_scenario(SCENARIOS / "festival-crowd.toml")
    html = html_report(rehearse(current, load_candidate(slower, current), scenario=festival))
    assert html.count("<title>broker outage</title>") == 2  # shaded on both counters' plots
    sides = _run(site, slower, "festival-crowd.toml")
    cur, cand = sides["current"], sides["candidate"]
    # two counters, four quantities each, one sample a minute for the 30 min outage
    assert cur["backlog_max_readings"] == cur["backfill_readings"] == 2 * 4 * 30
    assert 0 < cur["backfill_bytes"] < cur["published_bytes"]
    assert cand["readings"] == cur["readings"]  # the site's asset is not in this scenario
    sides = _run(site, slower, "sewage-overflow.toml")
    cur, cand = sides["current"], sides["candidate"]
    assert cand["readings"] * 5 == cur["readings"] == 6 * 1440
    assert cand["published_bytes"] < cur["published_bytes"] / 4


def test_cli_json_and_self_contained_html(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = tmp_path / "report.html"
    code = main(["rehearse", "--site", str(site), "--candidate", str(site), "--scenario",
                 str(SCENARIOS / "streetlight-circuit-failure.toml"), "--json",
                 "--html", str(html)])  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["input"]["name"] == "streetlight-circuit-failure"
    assert doc["sides"]["current"]["detection"]["events"] == 3
    assert doc["sides"]["current"]["detection"]["missed_events"] == 0
    assert doc["differences"]["alerts"] == 0 and doc["differences"]["f1"] == 0.0
    page = html.read_text(encoding="utf-8")
    assert page.count("<svg") == 4 and "<polyline" in page
    assert "<script" not in page and "href=" not in page and "src=" not in page
    assert page.count("fill='#1f77b4'") >= 3  # current's flag strips under the failed lights


def test_bundle_candidate_must_be_signed_when_the_site_trusts_keys(tmp_path: Path) -> None:
    from gateway.security import load_private_key, new_key_pair, sign_bundle

    private, public = new_key_pair()
    (tmp_path / "ops.key").write_bytes(private)
    (tmp_path / "ops.pub").write_bytes(public)
    site = write_site(tmp_path / "site.toml", detect='[security]\ntrusted_keys = ["ops.pub"]')
    current = load_side(site, "current")
    bundle = tmp_path / "water-quality"
    bundle.mkdir()
    for name in ("manifest.json", "model.onnx"):
        shutil.copy(MODELS / "water-quality" / name, bundle / name)
    with pytest.raises(ConfigError) as e:
        load_candidate(bundle, current)
    assert (e.value.file, e.value.key) == (str(bundle), "signature.json")
    sign_bundle(bundle, load_private_key(tmp_path / "ops.key"), time.time() + 3600)
    candidate = load_candidate(bundle, current)
    assert candidate.bundles == (bundle,)
    doc = rehearse(current, candidate, scenario=load_scenario(SCENARIOS / "sewage-overflow.toml"))
    assert doc.as_dict()["differences"]["alerts"] == 0  # the same model, signed
