"""Alerts of the performance monitor: the shared episode rules, as alert objects and events."""
from rtk_qos.commands.alerts import Alerts


def test_alerts_become_protocol_alerts_and_events():
    events = []
    alerts = Alerts(lambda kind, body: events.append((kind, body)), "cmd-1",
                    {"latency_ms": 100, "throughput_mbps": 10}, {"latency": ["gw"], "throughput": ["wan0"]})
    for i, (latency, rate) in enumerate([(50, 20), (120, 6), (130, 5), (125, 4), (140, 3), (80, 12), (85, 12),
                                         (70, 12), (60, 20)]):
        alerts.evaluate("latency", "gw", latency, i * 1000)
        alerts.evaluate("throughput", "wan0", rate, i * 1000)
        alerts.evaluate("jitter", "gw", 999, i * 1000)  # no threshold asked: never judged
    assert [(kind, body["state"], body["metric"]) for kind, body in events if kind == "qos_alert"] == [
        ("qos_alert", "open", "latency"), ("qos_alert", "open", "throughput"),
        ("qos_alert", "closed", "latency"), ("qos_alert", "closed", "throughput")]
    assert all(body["command_id"] == "cmd-1" for kind, body in events if kind == "qos_alert")
    threshold_events = [body for kind, body in events if kind == "threshold"]
    assert len(threshold_events) == 4 and threshold_events[0]["threshold_type"] == "max"
    latency, throughput = alerts.finish(20_000)
    assert latency == {"timestamp": 1000, "metric": "latency", "host": "gw", "value": 140, "threshold": 100.0,
                       "threshold_type": "max", "unit": "ms", "severity": "warning", "duration_s": 4,
                       "ended_at": 5000, "ongoing": False}
    assert throughput["threshold_type"] == "min" and throughput["severity"] == "critical"  # 10/3 > 3x
    assert throughput["value"] == 3 and throughput["unit"] == "Mbps"


def test_an_alert_open_at_the_end_is_ongoing():
    alerts = Alerts(lambda *_: None, "c", {"packet_loss_percent": 1.0}, {"packet_loss": ["gw"]})
    for i in range(4):
        alerts.evaluate("packet_loss", "gw", 5.0, i * 1000)
    assert alerts.open_count == 1
    [alert] = alerts.finish(10_000)
    assert alert["ongoing"] is True and alert["ended_at"] is None and alert["duration_s"] == 10
