"""What the broker holds for the controller survives a kill -9 (persistent session, QoS 1, acks only
after the commit, idempotent ingest); replies repeated or after the deadline are recorded, not lost.
Each on both store backends (SQLite and PostgreSQL)."""
import json
import signal
import threading
import time
import urllib.request

from mqtt_harness import Controller

DEVICE = "0a0b0c0d0e01"
BASE = f"rtk/v1/lab/bench/{DEVICE}"


def _envelope(schema, payload, ts=None):
    return json.dumps({"schema": schema, "ts": ts or int(time.time() * 1000), "device_id": DEVICE,
                       "payload": payload})


def _count(ctl, sql):
    with ctl.db() as db:
        return db.execute(sql).fetchone()[0]


def test_kill_9_mid_stream_loses_nothing_the_broker_held(broker, start_controller, backend):
    ctl = start_controller(store={"url": backend.url})
    device = Controller(broker.plain_port)
    # 100 events and 100 sample batches a second: while the controller is away (about 3 s) the broker
    # queues some 600, within mosquitto's default max_queued_messages (1000); past it the broker drops.
    total, rate = 1000, 100.0
    start_ms = int(time.time() * 1000) - total * 1000

    def publish():
        began = time.monotonic()
        for seq in range(total):
            time.sleep(max(0.0, began + seq / rate - time.monotonic()))
            event = _envelope("evt.link_flap/1.0", {"event_type": "link_flap", "severity": "info", "seq": seq})
            device.client.publish(f"{BASE}/evt/link_flap", event, qos=1)
            sample = _envelope("telemetry.qos/1.0", {"start_ms": start_ms + seq * 1000, "step_ms": 1000,
                                                     "series": {"probe.gateway.latency_ms": [float(seq)]}})
            device.client.publish(f"{BASE}/telemetry/qos", sample, qos=1).wait_for_publish(10)

    publisher = threading.Thread(target=publish)
    publisher.start()
    deadline = time.monotonic() + 30
    while _count(ctl, "SELECT COUNT(*) FROM events") < total // 4:
        assert time.monotonic() < deadline, "the controller stored nothing"
        time.sleep(0.02)
    assert ctl.stop(signal.SIGKILL) == -signal.SIGKILL
    stored_at_kill = _count(ctl, "SELECT COUNT(*) FROM events")
    time.sleep(1.0)  # the broker queues for the absent controller meanwhile
    ctl.start()
    publisher.join(60)
    deadline = time.monotonic() + 60
    while _count(ctl, "SELECT COUNT(*) FROM samples_raw") < total or _count(ctl, "SELECT COUNT(*) FROM events") < total:
        assert time.monotonic() < deadline, (_count(ctl, "SELECT COUNT(*) FROM events"),
                                             _count(ctl, "SELECT COUNT(*) FROM samples_raw"))
        time.sleep(0.2)
    assert stored_at_kill < total
    assert "Outgoing messages are being dropped" not in broker.log()
    with ctl.db() as db:
        seqs = [json.loads(p)["seq"] for (p,) in db.execute("SELECT payload FROM events")]
        values = [v for (v,) in db.execute("SELECT value FROM samples_raw ORDER BY ts")]
    assert sorted(seqs) == list(range(total))  # every event once: none lost, none doubled
    assert values == [float(s) for s in range(total)]
    device.close()


def test_late_and_repeated_replies_are_recorded(broker, start_controller, backend):
    ctl = start_controller(store={"url": backend.url})
    http = ctl.http
    device = Controller(broker.plain_port)
    device.subscribe(f"{BASE}/cmd/req")
    now = int(time.time() * 1000)
    device.client.publish(f"{BASE}/lwt", _envelope("lwt/1.0", {"status": "online", "last_seen": now}), qos=1,
                          retain=True).wait_for_publish(5)
    http.wait("/api/devices", lambda b: b["devices"])

    command = http.post("/api/commands", {"device_id": DEVICE, "op": "qos_traffic_analysis", "args": {"duration": 5},
                                          "timeout_ms": 1000, "wait_s": 5})
    assert command["status"] == "timeout" and command["replies"] == []
    request = device.wait_for(lambda m: m.topic.endswith("/cmd/req"))[0].json
    assert request["id"] == command["id"] and request["args"]["analysis_type"] == "comprehensive"  # defaults filled

    result = json.dumps({"schema": "cmd.qos_traffic_analysis.result/1.0", "ts": now, "id": command["id"],
                         "status": "completed", "result": {"ok": 1}, "execution": {"duration_ms": 5000}, "error": None})
    for _ in range(2):  # at-least-once delivery: the same result twice
        device.client.publish(f"{BASE}/cmd/res", result, qos=1).wait_for_publish(5)
    late = http.wait(f"/api/commands/{command['id']}", lambda c: c["replies"] and c["replies"][0]["duplicates"])
    (reply,) = late["replies"]
    assert (late["status"], reply["status"], reply["late"], reply["duplicates"]) == ("completed", "completed", 1, 1)
    assert reply["result"]["result"] == {"ok": 1}

    # Enveloped: cancelled travels in meta.status; an error string marks a flat result failed.
    second = http.post("/api/commands", {"device_id": DEVICE, "op": "qos_traffic_analysis", "args": {"duration": 60},
                                         "dialect": "enveloped", "timeout_ms": 60000}, expect=202)
    device.client.publish(f"{BASE}/cmd/ack", _envelope("cmd.ack/1.0", {"id": second["id"], "status": "accepted"}),
                          qos=1)
    device.client.publish(f"{BASE}/cmd/res", _envelope("cmd.qos_traffic_analysis.result/1.0", {
        "id": second["id"], "status": "failed", "result": {}, "error": "cancelled by qos_cancel x"}) [:-1]
        + ',"meta":{"status":"cancelled"}}', qos=1)
    done = http.wait(f"/api/commands/{second['id']}", lambda c: c["status"] not in ("sent", "accepted"))
    assert done["status"] == "cancelled" and done["replies"][0]["accepted"] == 1 and done["replies"][0]["late"] == 0
    foreign = json.dumps({"schema": "cmd.ack/1.0", "ts": now, "id": "someone-elses", "accepted": True})
    device.client.publish(f"{BASE}/cmd/ack", foreign, qos=1).wait_for_publish(5)
    time.sleep(0.5)
    metrics = urllib.request.urlopen(http.url + "/metrics", timeout=10).read().decode()
    device.close()
    for kind, value in (("unknown", 1), ("late", 1), ("duplicates", 1), ("timeouts", 1), ("sent", 2)):
        assert f'rtk_qos_controller_commands_total{{kind="{kind}"}} {value}.0' in metrics, kind
