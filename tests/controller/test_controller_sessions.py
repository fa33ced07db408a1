"""A monitoring session against a real agent whose probe target delays on a schedule: the alert
episode opens and closes (one alert, surviving a controller kill -9 in the middle), a second
session is refused, the session completes, and the overview's figures match the stored samples.
On both store backends."""
import fnmatch
import signal
import time

import pytest

SLOW_FIRST, SLOW_LAST, SLOW_MS = 12, 23, 250  # probes 12-23 answered after 250 ms, the rest after 2 ms
# The session (started within a second or two of the agent's first probe): the episode, which
# closes at about its second 25, and seven seconds after it.
DURATION = 32


def _alerts(http, **query):
    path = "/api/alerts?" + "&".join(f"{k}={v}" for k, v in query.items())
    return http.get(path)["alerts"]


def test_session_alert_episode_survives_a_restart(start_agent, start_controller, reflector, backend):
    target = reflector({"base_ms": 2, "slow": [[SLOW_FIRST, SLOW_LAST, SLOW_MS]]})
    agent = start_agent(telemetry={"qos_period_s": 1.0}, history={"probe_targets": [target]})
    ctl = start_controller(store={"url": backend.url})
    http = ctl.http
    device = http.wait("/api/devices", lambda b: any(d["status"] == "online" for d in b["devices"]))["devices"][0]
    assert device["device_id"] == agent.device_id and (device["tenant"], device["site"]) == ("lab", "bench")

    session = http.post("/api/sessions", {"device_id": agent.device_id, "duration": DURATION,
                                          "sampling_interval": 1, "metrics": ["latency", "packet_loss"],
                                          "thresholds": {"latency_ms": 100, "packet_loss_percent": 50}}, expect=201)
    status, refused = http.call("POST", "/api/sessions", {"device_id": agent.device_id, "duration": 60,
                                                          "metrics": ["latency"]})
    assert status == 409 and f"device {agent.device_id} is already being monitored" in refused["error"]["message"]

    opened = http.wait(f"/api/alerts?session_id={session['id']}", lambda b: b["alerts"], timeout=45)["alerts"]
    assert [(a["target"], a["state"], a["source"]) for a in opened] == [(target, "open", "controller")]

    # kill -9 while the episode is open: the restarted controller resumes the session and the episode.
    assert ctl.stop(signal.SIGKILL) == -signal.SIGKILL
    ctl.start()
    assert http.get(f"/api/sessions/{session['id']}")["status"] == "active"
    http.wait(f"/api/alerts?session_id={session['id']}&state=closed", lambda b: b["alerts"], timeout=30)
    alerts = _alerts(http, session_id=session["id"])
    assert len(alerts) == 1, alerts  # one alert for the episode, not one per sample or per restart
    alert = alerts[0]
    assert alert["id"] == opened[0]["id"] and alert["metric"] == "latency" and alert["threshold_type"] == "max"
    # The worst second: the reflector's delay plus what a loaded machine adds to a round trip.
    assert SLOW_MS <= alert["value"] <= SLOW_MS + 60 and alert["severity"] == "error"  # 2.5x the threshold
    # 12 slow probes: the episode lasts about as long (the evaluation grid is 1 s).
    assert 10_000 <= alert["closed_ms"] - alert["opened_ms"] <= 14_000, alert

    done = http.wait(f"/api/sessions/{session['id']}", lambda s: s["status"] != "active", timeout=45)
    assert (done["status"], done["stop_reason"]) == ("completed", "duration")
    # Four series (gateway and target, latency and loss), one evaluation per second each.
    assert DURATION - 5 <= done["evaluations"] / 4 <= DURATION + 1
    # The samples behind the evaluations are stored: the slow probes among them.
    series = f"probe.{target}.latency_ms"
    points = http.get(f"/api/devices/{agent.device_id}/series/{series}?start={done['started_ms']}"
                      f"&end={done['ends_ms']}&step=1000")["points"]
    assert DURATION - 5 <= len(points) <= DURATION
    assert sum(1 for p in points if p["mean"] >= SLOW_MS) == SLOW_LAST - SLOW_FIRST + 1

    # The overview, checked against the raw samples once the agent is quiet.
    agent.stop()
    http.wait(f"/api/devices/{agent.device_id}", lambda d: d["status"] == "offline", timeout=10)
    time.sleep(1.0)
    overview = http.get("/api/qos/overview")
    window = overview["performance_summary"]["window"]
    with ctl.db() as db:  # the window's samples, matched here (GLOB is SQLite's alone)
        window_samples = db.execute(f"SELECT s.name, value FROM samples_raw JOIN series s ON s.id = series_id "
                                    f"WHERE ts >= {int(window['start_ms'])} AND ts < {int(window['end_ms'])}").fetchall()

    def mean(glob):
        matched = [value for name, value in window_samples if fnmatch.fnmatchcase(name, glob)]
        return sum(matched) / len(matched), len(matched)

    latency_avg, latency_n = mean("probe.*.latency_ms")
    loss_avg, _ = mean("probe.*.loss_pct")
    throughput_avg, _ = mean("uplink.throughput_mbps")
    summary = overview["performance_summary"]
    # Gateway and reflector, about 1 Hz each, for the session and more.
    assert summary["samples"]["latency"] == latency_n > 2 * (DURATION - 5)
    assert summary["avg_latency_ms"] == pytest.approx(latency_avg, abs=1e-3)
    assert summary["avg_packet_loss"] == pytest.approx(loss_avg, abs=1e-3)
    assert summary["avg_throughput_mbps"] == pytest.approx(throughput_avg, abs=1e-3)
    assert 0 <= summary["network_health_score"] <= 100
    assert overview["active_monitoring_sessions"] == 0 and overview["total_devices_monitored"] == 1
    assert [a["id"] for a in overview["recent_alerts"]] == [alert["id"]]
