"""Alert episodes: hysteresis and a minimum duration, so a noisy metric gives one episode, not one per sample."""
from rtk_qos.commands.performance_monitor import CLOSE_AFTER, OPEN_AFTER, Episode


def feed(episode, values, start_ms=0):
    changes = []
    for i, value in enumerate(values):
        change = episode.evaluate(value, start_ms + i * 1000)
        if change:
            changes.append((i, change))
    return changes


def test_one_episode_for_a_noisy_excursion():
    episode = Episode("latency", "gw", 100.0, "max", "ms")
    # Three samples above open it; dips that stay inside the 10 % hysteresis band (above 90) do
    # not close it; three samples at or below 90 do.
    values = [50, 120, 130, 125, 99, 140, 95, 92, 80, 85, 70, 60]
    assert (OPEN_AFTER, CLOSE_AFTER) == (3, 3)
    assert feed(episode, values) == [(3, "open"), (10, "close")]
    alert = episode.closed[0]
    assert alert["timestamp"] == 1000 and alert["ended_at"] == 8000 and alert["duration_s"] == 7
    assert alert["value"] == 140 and alert["severity"] == "warning" and alert["ongoing"] is False


def test_a_short_spike_is_not_an_episode():
    episode = Episode("latency", "gw", 100.0, "max", "ms")
    assert feed(episode, [50] + [300] * (OPEN_AFTER - 1) + [50] * 5) == []
    assert episode.closed == []


def test_min_thresholds_and_severity_grades():
    episode = Episode("throughput", "wan0", 10.0, "min", "Mbps")
    changes = feed(episode, [20, 6, 5, 4, 3, 12, 12, 12, 20])
    assert changes == [(OPEN_AFTER, "open"), (OPEN_AFTER + CLOSE_AFTER + 1, "close")]
    assert episode.closed[0]["value"] == 3 and episode.closed[0]["severity"] == "critical"  # 10/3 > 3x
    assert Episode("jitter", "h", 10.0, "max", "ms", peak=14.9).severity() == "warning"
    assert Episode("jitter", "h", 10.0, "max", "ms", peak=15.0).severity() == "error"
    assert Episode("jitter", "h", 10.0, "max", "ms", peak=30.0).severity() == "critical"


def test_an_episode_open_at_the_end_is_reported_ongoing():
    episode = Episode("packet_loss", "gw", 1.0, "max", "percent")
    feed(episode, [5, 5, 5, 5])
    alert = episode.close(10_000, ongoing=True)
    assert alert["ongoing"] is True and alert["ended_at"] is None and alert["duration_s"] == 10
