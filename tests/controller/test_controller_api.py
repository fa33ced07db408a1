"""The API's answers to bad input: precise 4xx, and nothing stored."""
import json
import time

from mqtt_harness import Controller

DEVICE = "0a0b0c0d0e0f"


def _announce(port: int, device_id: str = DEVICE) -> Controller:
    """A device that exists only as its retained lwt, published by the test."""
    device = Controller(port)
    now = int(time.time() * 1000)
    device.client.publish(f"rtk/v1/lab/bench/{device_id}/lwt", json.dumps({
        "schema": "lwt/1.0", "ts": now, "device_id": device_id, "payload": {"status": "online", "last_seen": now}}),
        qos=1, retain=True).wait_for_publish(5)
    return device


def _stored(ctl) -> tuple:
    with ctl.db() as db:
        return tuple(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("sessions", "commands", "alerts"))


def test_bad_input_gets_a_precise_error_and_stores_nothing(broker, start_controller, backend):
    ctl = start_controller(store={"url": backend.url})
    http = ctl.http
    device = _announce(broker.plain_port)
    http.wait("/api/devices", lambda b: b["devices"])
    before = _stored(ctl)
    session = {"device_id": DEVICE, "duration": 60, "metrics": ["latency"]}
    cases = [
        ("GET", "/api/devices/aaaaaaaaaaaa", None, 404, "device aaaaaaaaaaaa is not known"),
        ("GET", "/api/devices/nothex", None, 400, "device_id: 'nothex' is not 12 lower-case hex digits"),
        ("GET", f"/api/devices/{DEVICE}/series/probe.gateway.latency_ms", None, 404, "has no such series"),
        ("GET", "/api/alerts?severity=bad", None, 400, "severity: 'bad' is not one of info, warning, error, critical"),
        ("GET", "/api/alerts?state=gone", None, 400, "state: 'gone' is not one of open, closed"),
        ("GET", "/api/alerts?since=yesterday", None, 400, "since: 'yesterday' is not an integer (Unix time, ms)"),
        ("GET", "/api/sessions/ses-none", None, 404, "session 'ses-none' does not exist"),
        ("GET", "/api/commands/none", None, 404, "command 'none' does not exist"),
        ("POST", "/api/sessions", session, 401, "a bearer token is required", None),
        ("POST", "/api/sessions", session, 403, "the bearer token is not valid", "wrong"),
        ("POST", "/api/sessions", b'{"device_id": ', 400, "body: not valid JSON at line 1 column 15"),
        ("POST", "/api/sessions", b"[1, 2]", 400, "body: expected a JSON object, got list"),
        ("POST", "/api/sessions", {**session, "device_id": "aaaaaaaaaaaa"}, 404, "device aaaaaaaaaaaa is not known"),
        ("POST", "/api/sessions", {**session, "duration": 5}, 400, "body.duration: 5 is below the minimum 10"),
        ("POST", "/api/sessions", {**session, "metrics": ["bandwidth"]}, 400, "body.metrics[0]: 'bandwidth' is not one of"),
        ("POST", "/api/sessions", {**session, "thresholds": {"latency_ms": -1}}, 400,
         "body.thresholds.latency_ms: -1 is below the minimum 0"),
        ("POST", "/api/sessions", {**session, "extra": 1}, 400, "body.extra: unknown argument"),
        ("POST", "/api/sessions/ses-none/stop", {}, 404, "session 'ses-none' does not exist"),
        ("POST", "/api/commands", {"device_id": DEVICE, "op": "qos_traffic_analysis", "args": {"duration": 0}}, 400,
         "E_INVALID_COMMAND: args.duration: 0 is below the minimum 1"),
        ("POST", "/api/commands", {"device_id": DEVICE, "op": "reboot", "args": {}}, 400,
         "E_UNSUPPORTED_OPERATION: op: 'reboot' is not a supported operation"),
        ("POST", "/api/commands", {"device_id": "aaaaaaaaaaaa", "op": "qos_cancel", "args": {"id": "x"}}, 404,
         "device aaaaaaaaaaaa is not known"),
        ("POST", "/api/commands", {"op": "qos_cancel", "args": {"id": "x"}}, 400, "name exactly one of device_id or group"),
        ("POST", "/api/commands", {"device_id": DEVICE, "op": "qos_cancel", "args": {"id": "x"}, "timeout_ms": 5}, 400,
         "timeout_ms: 5 is not an integer in 1000-600000"),
        ("POST", "/api/commands", {"device_id": DEVICE, "op": "qos_cancel", "args": {"id": "x"}, "dialect": "xml"},
         400, "dialect: 'xml' is not flat or enveloped"),
    ]
    for method, path, body, status, text, *token in cases:
        raw = body if isinstance(body, bytes) else None
        got, answer = http.call(method, path, None if raw else body, raw=raw, **({"token": token[0]} if token else {}))
        assert (got, text in answer["error"]["message"]) == (status, True), (method, path, body, got, answer)
        assert answer["error"]["status"] == got
    assert _stored(ctl) == before == (0, 0, 0)

    # A series over a bad range, once the device has one.
    now = int(time.time() * 1000)
    device.client.publish(f"rtk/v1/lab/bench/{DEVICE}/telemetry/qos", json.dumps({
        "schema": "telemetry.qos/1.0", "ts": now, "device_id": DEVICE, "payload": {
            "start_ms": now - 2000, "step_ms": 1000, "series": {"probe.gateway.latency_ms": [1.0, 2.0]}}}), qos=1)
    path = f"/api/devices/{DEVICE}/series/probe.gateway.latency_ms"
    http.wait(f"/api/devices/{DEVICE}", lambda d: d["series"])
    for query, text in ((f"?start={now}&end={now - 1}", f"range: start {now} is not before end {now - 1}"),
                        ("?step=0", "step: 0 is below the minimum 1000"),
                        (f"?start=0&end={now}&step=1000", "above the maximum 10000; use a larger step")):
        got, answer = http.call("GET", path + query)
        assert got == 400 and text in answer["error"]["message"], (query, answer)
    points = http.get(f"{path}?start={now - 5000}&end={now + 1000}&step=1000")["points"]
    assert [(p["ts"], p["mean"]) for p in points] == [(now - 2000, 1.0), (now - 1000, 2.0)]
    assert http.get("/api/openapi.json")["paths"]["/api/qos/overview"]
    device.close()
