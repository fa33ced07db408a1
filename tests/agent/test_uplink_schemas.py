"""The uplink check itself (tests/uplink_schemas.py): it must reject what the agent must never
send, in both dialects and in result bodies, and refuse to pass silently without the schemas
where they are required."""
import pytest

import uplink_schemas
from uplink_schemas import SchemaCheck, SchemaUnavailable

BASE = "rtk/v1/t/s/0000000be0c4"


@pytest.fixture
def check():
    schemas = SchemaCheck()
    if not schemas.available:
        pytest.skip(schemas.reason)
    return schemas


def _traffic_body():
    return {"analysis_summary": {"total_bytes": 10, "total_packets": 1, "avg_throughput_mbps": 0.1,
                                 "peak_throughput_mbps": None, "analysis_duration": 2},
            "interface_stats": [{"interface": "eth0", "rx_bytes": 5, "tx_bytes": 5, "rx_packets": 1,
                                 "tx_packets": 0, "rx_errors": 0, "tx_errors": 0, "utilization_percent": None}]}


def _flat_result(body, status="completed"):
    return {"schema": "cmd.qos_traffic_analysis.result/1.0", "ts": 1, "id": "c-1", "status": status,
            "result": body, "execution": {"duration_ms": 2000}, "error": None}


def _enveloped_result(body, status="completed", meta=None):
    message = {"schema": "cmd.qos_traffic_analysis.result/1.0", "ts": 1, "device_id": "0000000be0c4",
               "payload": {"id": "c-1", "status": status, "result": body, "error": None}}
    if meta:
        message["meta"] = meta
    return message


def test_flat_replies_are_checked(check):
    ack = {"schema": "cmd.ack/1.0", "ts": 1, "id": "c-1", "accepted": True, "reason": None,
           "estimated_duration_ms": 2500}
    assert check.check(f"{BASE}/cmd/ack", ack) == ["flat:cmd.ack"]
    # reply_to sends replies to any topic: they are recognised by their schema, not the topic.
    assert check.check("my/replies", ack) == ["flat:cmd.ack"]
    for bad in ({**ack, "accepted": "yes"}, {**ack, "extra": 1}, {k: v for k, v in ack.items() if k != "ts"}):
        with pytest.raises(check.jsonschema.ValidationError):
            check.check(f"{BASE}/cmd/ack", bad)
    error = {"schema": "cmd.error/1.0", "ts": 1, "id": "c-1", "status": "failed", "error": "E_INVALID_COMMAND: x",
             "error_code": 1001, "error_details": "", "execution": None}
    assert check.check(f"{BASE}/cmd/res", error) == ["flat:cmd.error"]
    with pytest.raises(check.jsonschema.ValidationError):
        check.check(f"{BASE}/cmd/res", {**error, "error_code": "E_INVALID_COMMAND"})


def test_result_bodies_are_checked_against_the_op_shape(check):
    assert check.check(f"{BASE}/cmd/res", _flat_result(_traffic_body())) == [
        "flat:cmd.result", "result:qos_traffic_analysis"]
    assert check.check(f"{BASE}/cmd/res", _enveloped_result(_traffic_body())) == [
        "cmd-result.json", "result:qos_traffic_analysis"]
    missing = _traffic_body()
    del missing["analysis_summary"]["total_packets"]
    for message in (_flat_result(missing), _enveloped_result(missing)):
        with pytest.raises(check.jsonschema.ValidationError, match="total_packets"):
            check.check(f"{BASE}/cmd/res", message)
    # A cancelled run returns what it measured: the envelope is checked, the body need not be whole.
    assert check.check(f"{BASE}/cmd/res", _flat_result({}, "cancelled")) == ["flat:cmd.result"]
    assert check.check(f"{BASE}/cmd/res", _enveloped_result({}, "failed", {"status": "cancelled"})) == [
        "cmd-result.json"]


def test_an_uplink_message_no_schema_describes_is_an_error(check):
    with pytest.raises(ValueError, match="no schema"):
        check.check(f"{BASE}/diagnostics", {"schema": "diag.x/1.0"})
    assert check.check(f"{BASE}/cmd/req", {"anything": 1}) == []  # downlink


def test_missing_schemas_fail_on_ci_and_where_shared_exists(tmp_path, monkeypatch):
    absent = tmp_path / "no-schemas"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(SchemaUnavailable, match="CI is set"):
        SchemaCheck(absent)
    monkeypatch.delenv("CI")
    monkeypatch.setattr(uplink_schemas, "SHARED", tmp_path)  # a checkout with ../shared beside it
    with pytest.raises(SchemaUnavailable, match="exists"):
        SchemaCheck(absent)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "base.json").write_text("{")
    with pytest.raises(SchemaUnavailable):
        SchemaCheck(tmp_path / "broken")
    # A user's fresh clone: no ../shared, no CI. The checks skip and say why.
    monkeypatch.setattr(uplink_schemas, "SHARED", tmp_path / "no-shared")
    fresh = SchemaCheck(absent)
    assert not fresh.available and "skipped" in fresh.reason and str(absent) in fresh.reason
    assert fresh.check(f"{BASE}/cmd/ack", {"schema": "cmd.ack/1.0"}) == []
