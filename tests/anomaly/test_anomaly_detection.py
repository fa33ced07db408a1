"""qos_anomaly_detection over a history with known content: per-minute series written into the
real native history, the command run as the agent runs it, and once through a live agent."""
import random
import time

import pytest

from mqtt_harness import flat_request, online
from rtk_qos.commands.base import Clock, Context
from rtk_qos.commands.runner import execute, prepare
from rtk_qos.history import HistoryStore

DAY = 86400
# A fixed "now": 20:30 UTC, so a one-hour window holds the evening peak (19:00-21:00).
NOW = 1_790_000_000 // DAY * DAY + 20 * 3600 + 30 * 60


class FixedClock(Clock):
    """The wall clock the command reads, stopped at NOW (the history is written around it)."""

    @staticmethod
    def wall_ms() -> int:
        return NOW * 1000


def _evening(t: int) -> float:
    minute = t % DAY // 60
    return 40.0 if 19 * 60 <= minute < 21 * 60 else 0.0


def _history(days: float, incident=None, seed: int = 1) -> HistoryStore:
    """Per-minute traffic with a daily evening peak and gateway latency; `incident(t)` returns
    extra (Mbit/s, ms) for the minutes it covers."""
    rng = random.Random(seed)
    store = HistoryStore()
    for k in range(int(days * 1440), -1, -1):
        t = NOW - k * 60
        extra_mbps, extra_ms = incident(t) if incident else (0.0, 0.0)
        rx = 10 + _evening(t) + rng.gauss(0, 1) + extra_mbps
        store.push("eth0.rx_mbps", t, rx)
        store.push("eth0.tx_mbps", t, rx / 4 + rng.gauss(0, 0.2))
        store.push("eth0.error_rate", t, 0.0)
        store.push("probe.gateway.latency_ms", t, 2 + abs(rng.gauss(0, 0.1)) + extra_ms)
    return store


def _detect(store, settings=None, events=None, **args):
    args = {"detection_window": 3600, "metrics": ["throughput", "latency"], **args}
    spec, valid = prepare("qos_anomaly_detection", args)
    ctx = Context(clock=FixedClock(), history=store, settings=settings or {},
                  event=lambda kind, payload: events.append((kind, payload)) if events is not None else None)
    outcome = execute(spec, valid, ctx)
    assert outcome.error is None and outcome.status == "completed"
    return outcome.result


def test_time_of_day_baseline_expects_the_evening_peak_a_plain_baseline_flags():
    store = _history(days=3.1)
    # One day of baseline: too short for a time-of-day baseline, the peak stands out.
    plain = _detect(store, baseline_period=DAY, detection_methods=["statistical"])
    assert plain["detection_summary"]["baseline"]["time_of_day"] is False
    flagged = [a for a in plain["anomalies"] if "throughput" in a["metrics"]]
    assert flagged and max(a["peak"]["z_score"] for a in flagged) > 5
    # Three days: each half-hour is judged against the same half-hour of earlier days.
    seasonal = _detect(store, baseline_period=3 * DAY, detection_methods=["statistical"])
    summary = seasonal["detection_summary"]
    assert summary["baseline"]["time_of_day"] is True and summary["status"] == "ok"
    assert not [a for a in seasonal["anomalies"] if a["severity"] in ("high", "critical")]
    usual = seasonal["current_metrics_summary"]["throughput"]["eth0.rx_mbps"]
    assert usual["mean"] > 45  # the window really is the peak


def _bufferbloat(t: int):
    # Five minutes of a saturated uplink with queueing delay, 20 minutes before NOW.
    return (35.0, 30.0) if NOW - 25 * 60 <= t < NOW - 20 * 60 else (0.0, 0.0)


@pytest.mark.parametrize("backend", ["native", "sklearn"])
def test_an_injected_incident_is_found_by_both_methods(backend):
    store = _history(days=3.1, incident=_bufferbloat)
    result = _detect(store, settings={"ml_backend": backend}, baseline_period=3 * DAY)
    assert result["detection_summary"]["methods"]["ml_based"]["backend"] == backend
    # The incident is the one critical episode; 2.5 sigma over three series for an hour also
    # lets a few ordinary minutes through as medium ones.
    episodes = [a for a in result["anomalies"] if a["severity"] != "medium"]
    assert len(episodes) == 1, result["anomalies"]
    incident = episodes[0]
    assert set(incident["metrics"]) == {"latency", "throughput"}
    assert incident["methods"][:2] == ["ml_based", "statistical"]
    start = (NOW - 25 * 60) * 1000
    assert start - 60_000 <= incident["start"] <= start and incident["duration_s"] >= 5 * 60
    assert incident["severity"] == "critical" and incident["ongoing"] is False
    # The peak is the series furthest from its usual in scales: traffic +35 Mbit/s on a scale of
    # 1 Mbit/s (its noise) beats latency +30 ms on the latency's least scale of 1 ms.
    assert incident["peak"]["series"] == "eth0.rx_mbps" and incident["peak"]["value"] > 40
    assert any("queueing" in r for r in result["recommendations"])


def test_an_episode_still_open_is_published_as_an_event():
    store = _history(days=2.5, incident=lambda t: (0.0, 25.0) if t >= NOW - 4 * 60 else (0.0, 0.0))
    events = []
    result = _detect(store, events=events, baseline_period=2 * DAY, metrics=["latency"],
                     detection_methods=["statistical"])
    open_episodes = [a for a in result["anomalies"] if a["ongoing"]]
    assert len(open_episodes) == 1 and open_episodes[0]["metrics"] == ["latency"]
    assert [kind for kind, _ in events] == ["qos_anomaly"]
    payload = events[0][1]
    assert payload["state"] == "open" and payload["severity"] == "critical"
    assert payload["start"] == open_episodes[0]["start"]


def _clean_links(loss_at) -> HistoryStore:
    """Two days of an error rate of 0 %, every second of the last hour (the rest per minute);
    `loss_at(t)` gives a second's error rate."""
    store = HistoryStore()
    for t in range(NOW - 2 * DAY, NOW - 3600, 60):
        store.push("eth0.error_rate", t, 0.0)
    for t in range(NOW - 3600, NOW + 1):
        store.push("eth0.error_rate", t, loss_at(t))
    return store


def test_one_dropped_packet_after_a_clean_day_is_not_an_anomaly():
    # One second with 1 of 100 packets dropped: the minute's max is 1 %. Against a scale of
    # 1e-6 that was a critical z of 10^6; against the error rate's least scale (0.5 %) it is 2.
    store = _clean_links(lambda t: 1.0 if t == NOW - 600 else 0.0)
    result = _detect(store, baseline_period=DAY, metrics=["error_rate"], sensitivity="high",
                     detection_methods=["statistical"])
    assert result["detection_summary"]["status"] == "ok" and result["anomalies"] == []
    assert result["current_metrics_summary"]["error_rate"]["eth0.error_rate"]["max"] == 1.0
    # Five minutes of 5 % loss is ten of those scales: critical.
    store = _clean_links(lambda t: 5.0 if NOW - 900 <= t < NOW - 600 else 0.0)
    result = _detect(store, baseline_period=DAY, metrics=["error_rate"], detection_methods=["statistical"])
    [episode] = result["anomalies"]
    assert episode["severity"] == "critical" and episode["duration_s"] == 300
    assert episode["peak"]["z_score"] == 10.0 and episode["peak"]["expected"] == 0.0


def test_a_baseline_needs_a_positive_least_scale():
    from rtk_qos._core import TimeOfDayBaseline
    flat = TimeOfDayBaseline([0.0] * 100, 0, 60, 0.5)
    assert flat.overall == (0.0, 0.5, 100)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="min_scale"):
            TimeOfDayBaseline([0.0] * 100, 0, 60, bad)


def test_not_enough_history_is_a_clear_status_and_a_partial_one_is_used():
    empty = _detect(HistoryStore(), baseline_period=DAY)
    summary = empty["detection_summary"]
    assert summary["status"] == "insufficient_history" and empty["anomalies"] == []
    assert summary["baseline"]["available_s"] == 0 and summary["baseline"]["needed_s"] == 1800
    assert summary["methods"]["statistical"]["status"] == "insufficient_history"
    assert "Not enough history" in empty["recommendations"][0]
    assert summary["metrics_without_data"] == ["throughput", "latency"]
    # A young agent: 100 minutes recorded, one hour of it in the window, 40 min of baseline.
    young = _detect(_history(days=100 / 1440), baseline_period=DAY)
    baseline = young["detection_summary"]["baseline"]
    assert young["detection_summary"]["status"] == "ok"
    assert 35 * 60 <= baseline["available_s"] <= 41 * 60 and "covers" in baseline["note"]
    assert young["detection_summary"]["methods"]["ml_based"]["status"] == "insufficient_history"


def test_arguments_are_checked_against_the_protocol():
    from rtk_qos.protocol.errors import CommandError
    for bad, field in (({"detection_window": 10, "metrics": ["latency"]}, "detection_window"),
                       ({"detection_window": 600, "metrics": ["cpu"]}, "metrics"),
                       ({"detection_window": 600}, "metrics"),
                       ({"detection_window": 600, "metrics": ["latency"], "baseline_period": 10 ** 7},
                        "baseline_period")):
        with pytest.raises(CommandError) as info:
            prepare("qos_anomaly_detection", bad)
        assert field in info.value.message


def test_a_live_agent_answers_from_its_own_history(start_agent, controller):
    agent = start_agent()
    ctl = controller()
    ctl.subscribe(f"{agent.base}/cmd/ack", f"{agent.base}/cmd/res", f"{agent.base}/lwt")
    online(ctl, agent)
    time.sleep(2)
    request = flat_request("qos_anomaly_detection", {"detection_window": 300, "metrics": ["throughput"]})
    ctl.publish(f"{agent.base}/cmd/req", request)
    result = ctl.wait_reply(request["id"], "result", timeout=20).json["result"]
    summary = result["detection_summary"]
    # Seconds of history: the agent says how much baseline it has and how much it needs.
    assert summary["status"] == "insufficient_history"
    assert summary["baseline"]["needed_s"] == 1800 and summary["baseline"]["requested_s"] == 86400
    assert summary["metrics_without_data"] == []  # its interfaces' throughput is being recorded
    assert result["current_metrics_summary"]["throughput"]


def test_the_estimate_prices_the_work_asked_for():
    from rtk_qos.commands import anomaly_detection as command

    def estimate(series=None, **args):
        return command.estimate_ms(prepare(command.OP, {"detection_window": 3600, "metrics": ["latency"], **args})[1],
                                   series)
    week, day = estimate(baseline_period=7 * DAY), estimate(baseline_period=DAY)
    assert week > 5 * day  # (1 h + 7 d) against (1 h + 1 d) of minutes
    assert estimate(detection_methods=["statistical", "ml_based"]) > estimate(detection_methods=["statistical"])
    # By default the most series the history can hold for the metrics: all four cost the most.
    assert estimate(metrics=["throughput", "error_rate", "latency", "jitter"]) > estimate()
    assert estimate(series=command.MAX_SERIES["latency"]) == estimate()
