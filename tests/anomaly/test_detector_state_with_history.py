"""The agent's detectors keep learning across a restart (their state is saved with the history),
and they see the router's local time of day."""
import math
import random
import time

import pytest

from rtk_qos._core import Detector
from rtk_qos.agent.recorder import DETECTOR_SETTINGS, HistoryRecorder
from rtk_qos.agent.config import load
from rtk_qos.history import HistoryStore

T0 = 1_750_000_000
NAME = "probe.gateway.latency_ms"


@pytest.fixture
def india(monkeypatch):
    """A fixed local zone 5 h 30 min east of UTC, for this process only."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield 19800
    monkeypatch.undo()
    time.tzset()


def _recorder(tmp_path):
    config = load(None, environ={"RTK_QOS_DEVICE_ID": "aabbccddeeff", "RTK_QOS_STATE_DIR": str(tmp_path)})
    return HistoryRecorder(config, probe_targets=1)


def _latency(k, rng):
    return 2.0 + rng.gauss(0, 0.1) + (8.0 if 2500 <= k < 2510 else 0.0)


def _scores(recorder, last):
    return [b[3] for b in recorder.store.series[NAME].read(0, T0, T0 + last)]


def test_a_restart_keeps_the_detectors_learning(tmp_path, india):
    rng = random.Random(2)
    values = [_latency(k, rng) for k in range(3000)]
    whole = _recorder(tmp_path / "whole")
    for k, v in enumerate(values):
        whole.push(NAME, T0 + k, v)

    first = _recorder(tmp_path / "restarted")
    for k, v in enumerate(values[:1700]):
        first.push(NAME, T0 + k, v)
    first.save()
    second = _recorder(tmp_path / "restarted")
    assert second.problem is None and second.detectors[NAME].samples == 1700
    for k, v in enumerate(values[1700:], start=1700):
        second.push(NAME, T0 + k, v)
    restarted = _scores(second, 2999)
    assert restarted[1700:] == _scores(whole, 2999)[1700:]
    assert max(restarted[2500:2510]) >= 5 / 13  # the step still alarms after the restart

    # A state this build cannot restore is dropped: that series' detector starts afresh.
    store, _ = HistoryStore.load(second.path)
    store.detector_states[NAME] = b"not a detector"
    store.save(second.path)
    third = _recorder(tmp_path / "restarted")
    assert NAME in third.store.series and NAME not in third.detectors


def test_detectors_see_the_local_time_of_day(tmp_path, india):
    recorder = _recorder(tmp_path)
    rng = random.Random(3)
    values = [_latency(k, rng) for k in range(600)]
    for k, v in enumerate(values):
        recorder.push(NAME, T0 + k, v)
    local, utc = Detector(**DETECTOR_SETTINGS), Detector(**DETECTOR_SETTINGS)
    local.run([T0 + india + k for k in range(600)], values)
    utc.run([T0 + k for k in range(600)], values)
    assert recorder.detectors[NAME].state() == local.state() != utc.state()
    assert not any(math.isnan(s) for s in _scores(recorder, 599))
