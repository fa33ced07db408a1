"""The shared vocabulary: one severity scale, threshold episodes, units."""
import ast
import json
import pathlib

import pytest

from rtk_qos.vocab import units
from rtk_qos.vocab.episodes import Change, Direction, EpisodeRules, ThresholdEpisode
from rtk_qos.vocab.severity import WIRE_NAMES, Severity, distribution, grade, worst

VOCAB = pathlib.Path(__file__).resolve().parents[2] / "src" / "rtk_qos" / "vocab"
SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "protocol" / "schemas"


def feed(episode, values, start_ms=0):
    return [(i, change) for i, value in enumerate(values)
            if (change := episode.observe(value, start_ms + i * 1000))]


def _find(node, key):
    """The first value under `key` anywhere in a JSON document."""
    if isinstance(node, dict):
        if key in node:
            return node[key]
        node = list(node.values())
    for child in node if isinstance(node, list) else ():
        if (found := _find(child, key)) is not None:
            return found
    return None


def test_severity_names_are_the_event_schemas_and_ranked():
    enum = _find(json.loads((SCHEMAS / "event.json").read_text()), "severity")["enum"]
    assert list(WIRE_NAMES) == enum == ["info", "warning", "error", "critical"]
    assert Severity.INFO < Severity.WARNING < Severity.ERROR < Severity.CRITICAL
    assert Severity.parse("error") is Severity.ERROR and Severity.ERROR.wire == "error"
    with pytest.raises(ValueError, match="'high' is not one of info, warning, error, critical"):
        Severity.parse("high")


def test_grade_worst_and_distribution():
    assert [grade(r, 1.5, 3.0) for r in (1.0, 1.49, 1.5, 2.99, 3.0)] == [
        Severity.WARNING, Severity.WARNING, Severity.ERROR, Severity.ERROR, Severity.CRITICAL]
    with pytest.raises(ValueError, match="error_at <= critical_at"):
        grade(2.0, 3.0, 1.5)
    assert worst([Severity.WARNING, Severity.CRITICAL, Severity.ERROR]) is Severity.CRITICAL
    assert worst([]) is Severity.INFO
    assert distribution([Severity.ERROR, Severity.ERROR, Severity.WARNING]) == {
        "critical": 0, "error": 2, "warning": 1, "info": 0}
    # The QoS guide's result shapes name the same grades their own way.
    assert distribution([Severity.ERROR, Severity.WARNING], guide=True) == {
        "critical": 0, "high": 1, "medium": 1, "low": 0}
    assert Severity.from_guide("high") is Severity.ERROR and Severity.CRITICAL.guide == "critical"


def test_one_episode_for_a_noisy_excursion():
    episode = ThresholdEpisode(100.0, Direction.ABOVE)
    # Three samples above open it; dips inside the 10 % hysteresis band (above 90) don't close
    # it; three at or below 90 do, and the episode ends at the first of them.
    assert feed(episode, [50, 120, 130, 125, 99, 140, 95, 92, 80, 85, 70, 60]) == [
        (3, Change.OPENED), (10, Change.CLOSED)]
    [record] = episode.finish(20_000)
    assert (record.start_ms, record.end_ms, record.duration_s, record.peak) == (1000, 8000, 7, 140)
    assert record.severity is Severity.WARNING and record.ongoing is False


def test_a_short_spike_is_not_an_episode():
    episode = ThresholdEpisode(100.0, Direction.ABOVE)
    assert feed(episode, [50, 300, 300, 50, 50, None, 50]) == []
    assert episode.finish(10_000) == []


def test_below_thresholds_grade_by_inverse_ratio():
    episode = ThresholdEpisode(10.0, Direction.BELOW)
    assert feed(episode, [20, 6, 5, 4, 3, 12, 12, 12, 20]) == [(3, Change.OPENED), (7, Change.CLOSED)]
    assert episode.closed[0].peak == 3 and episode.closed[0].severity is Severity.CRITICAL  # 10/3 > 3


def test_an_open_episode_is_reported_ongoing_at_the_end():
    episode = ThresholdEpisode(1.0, "max", EpisodeRules(open_after=2, close_after=1))
    assert feed(episode, [5, 5, 5]) == [(1, Change.OPENED)]
    assert episode.current(2000).ongoing and episode.current(2000).duration_s == 2
    [record] = episode.finish(10_000)
    assert record.ongoing and record.end_ms == 10_000 and record.duration_s == 10
    assert not episode.is_open
    with pytest.raises(ValueError, match="no episode is open"):
        episode.current(11_000)


def test_rules_reject_nonsense():
    with pytest.raises(ValueError, match="open_after"):
        EpisodeRules(open_after=0)
    with pytest.raises(ValueError, match="hysteresis"):
        EpisodeRules(hysteresis=1.0)
    with pytest.raises(ValueError, match="cut points"):
        EpisodeRules(error_at=0.5)


def test_units_and_the_one_mad_constant():
    from rtk_qos import _core
    assert units.mbps(125_000) == 1.0
    assert units.MAD_TO_SIGMA == pytest.approx(1 / 0.6744897501960817, abs=1e-4)
    assert _core.MAD_TO_SIGMA == units.MAD_TO_SIGMA  # the native core's copy (native/stats.h)


def test_vocab_imports_nothing_of_ours():
    for path in VOCAB.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not node.module.startswith("rtk_qos"), f"{path.name} imports {node.module}"
            if isinstance(node, ast.ImportFrom) and node.level > 1:
                pytest.fail(f"{path.name} imports from outside vocab/")
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("rtk_qos") for a in node.names), path.name
