"""What every uplink message the tests receive is checked against.

- Enveloped messages: the published RTK MQTT v1 schemas (../shared/protocol/schemas).
- Flat replies: the published schemas describe only the enveloped dialect, so the flat forms
  are written here from ../shared/protocol/RTK_MQTT_V1.md (ack, result, error), with the
  agent's documented decisions (error_code, error_details, execution).
- Result bodies, in both dialects: the published command schemas (cmd-qos-*.json) describe the
  requests only; the result shape of each op is the QoS guide's (../shared/seeds), written
  here as the sections and fields it lists. A completed result must have them all.

When the schemas are missing or cannot be loaded: on CI (CI=true) or where ../shared exists
that is a failure (SchemaUnavailable); on a user's fresh clone without ../shared the checks are
skipped, and `SchemaCheck.reason` says why.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SCHEMAS = Path(os.environ.get("RTK_QOS_SCHEMAS", SHARED / "protocol" / "schemas"))
PUBLISHED = ("base.json", "lwt.json", "attr.json", "state.json", "telemetry.json", "telemetry-network.json",
             "event.json", "evt-threshold.json", "cmd-ack.json", "cmd-error.json", "cmd-result.json")


class SchemaUnavailable(RuntimeError):
    """The schemas are required here and could not be loaded."""


def schemas_required() -> str | None:
    """Why missing schemas must fail the tests, or None on a fresh clone."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return "CI is set"
    if SHARED.is_dir():
        return f"{SHARED} exists"
    return None


def _inline(schema, schemas: dict):
    """Replace {"$ref": "x.json"} with the referenced schema (the refs are file names)."""
    if isinstance(schema, dict):
        if set(schema) == {"$ref"}:
            if schema["$ref"] not in schemas:
                raise KeyError(f"$ref {schema['$ref']} is not among the loaded schemas")
            target = copy.deepcopy(schemas[schema["$ref"]])
            target.pop("$id", None)
            target.pop("$schema", None)
            return _inline(target, schemas)
        return {k: _inline(v, schemas) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, schemas) for v in schema]
    return schema


def _load(directory: Path) -> dict:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    raw = {p.name: json.loads(p.read_text()) for p in directory.glob("*.json")}
    missing = [name for name in PUBLISHED if name not in raw]
    if missing:
        raise FileNotFoundError(f"{directory} lacks {', '.join(missing)}")
    schemas = {name: _inline(s, raw) for name, s in raw.items()}
    # RTK_MQTT_V1.md, inconsistency 3: the base pattern cannot match cmd.<op>.result/1.0;
    # results keep that name, so they are checked against base without its schema pattern.
    relaxed = copy.deepcopy(raw)
    del relaxed["base.json"]["properties"]["schema"]["pattern"]
    schemas["cmd-result.json"] = _inline(raw["cmd-result.json"], relaxed)
    return schemas


# ---- flat replies (RTK_MQTT_V1.md, "Ack", "Result", "Errors") -------------------------------------

# As in the published enveloped replies: any string. A rejected request's id may break the
# request's 1-128 rule, and the reply still echoes it so the controller can match it.
_ID = {"type": "string"}
_TS = {"type": "integer", "minimum": 0}
_TRACE = {"type": "object"}
_EXECUTION = {"type": "object", "properties": {"duration_ms": {"type": "integer", "minimum": 0}},
              "required": ["duration_ms"], "additionalProperties": False}

FLAT = {
    "flat:cmd.ack": {
        "type": "object",
        "properties": {"schema": {"const": "cmd.ack/1.0"}, "ts": _TS, "id": _ID, "trace": _TRACE,
                       "accepted": {"type": "boolean"}, "reason": {"type": ["string", "null"]},
                       "estimated_duration_ms": {"type": ["integer", "null"], "minimum": 0}},
        "required": ["schema", "ts", "id", "accepted", "reason", "estimated_duration_ms"],
        "additionalProperties": False,
    },
    "flat:cmd.result": {
        "type": "object",
        "properties": {"schema": {"type": "string", "pattern": r"^cmd\.[a-z_]+\.result/\d+\.\d+$"}, "ts": _TS,
                       "id": _ID, "trace": _TRACE,
                       "status": {"enum": ["completed", "failed", "partial", "timeout", "cancelled"]},
                       "result": {"type": "object"}, "execution": _EXECUTION, "error": {"type": ["string", "null"]}},
        "required": ["schema", "ts", "id", "status", "result", "execution", "error"],
        "additionalProperties": False,
    },
    "flat:cmd.error": {
        "type": "object",
        "properties": {"schema": {"const": "cmd.error/1.0"}, "ts": _TS, "id": _ID, "trace": _TRACE,
                       "status": {"const": "failed"}, "error": {"type": "string", "minLength": 1, "maxLength": 200},
                       "error_code": {"type": "integer", "minimum": 1000, "maximum": 9999},
                       "error_details": {"type": "string", "maxLength": 500},
                       "execution": {"anyOf": [_EXECUTION, {"type": "null"}]}},
        "required": ["schema", "ts", "id", "status", "error", "error_code"],
        "additionalProperties": False,
    },
}


# ---- result bodies (the QoS guide's "結果格式" of each op) ---------------------------------------

def _obj(*required, **properties) -> dict:
    return {"type": "object", "required": list(required), "properties": properties}


_NUMBER = {"type": ["number", "null"]}  # a figure that cannot be measured is null with its reason
_STRINGS = {"type": "array", "items": {"type": "string"}}

# A dry run, an apply that found the tree already as planned, or a pending change with its deadline.
_EXECUTION = {"anyOf": [
    _obj("status", "changes", status={"const": "simulated"}),
    _obj("changed", "note", changed={"const": False}),
    _obj("changed", "transaction", "state", "steps", "apply_ms", "confirm_timeout_s", "confirm_by_ms", "confirm_with",
         changed={"const": True}, state={"const": "pending"}, steps=_STRINGS, confirm_by_ms={"type": "integer"},
         confirm_with=_obj("op", "args", op={"const": "qos_shaping_confirm"}))]}

RESULT_SHAPES = {
    "qos_traffic_analysis": _obj(
        "analysis_summary", "interface_stats",
        analysis_summary=_obj("total_bytes", "total_packets", "avg_throughput_mbps", "peak_throughput_mbps",
                              "analysis_duration",
                              total_bytes={"type": "integer"}, total_packets={"type": "integer"},
                              avg_throughput_mbps=_NUMBER, peak_throughput_mbps=_NUMBER),
        interface_stats={"type": "array", "items": _obj(
            "interface", "rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors",
            "utilization_percent", interface={"type": "string"}, utilization_percent=_NUMBER)},
        protocol_distribution=_obj("tcp", "udp", "icmp", "other", tcp=_NUMBER, udp=_NUMBER, icmp=_NUMBER,
                                   other=_NUMBER),
        traffic_patterns=_obj("peak_hours", "avg_packet_size", "burst_frequency", "flow_count",
                              peak_hours={"type": ["array", "null"], "items": {"type": "string"}}),
        qos_metrics=_obj("avg_latency_ms", "jitter_ms", "packet_loss_percent", "out_of_order_percent",
                         avg_latency_ms=_NUMBER, jitter_ms=_NUMBER, packet_loss_percent=_NUMBER,
                         out_of_order_percent=_NUMBER)),
    "qos_performance_monitor": _obj(
        "monitoring_summary", "performance_metrics", "alerts", "recommendations",
        monitoring_summary=_obj("duration", "total_measurements", "alerts_triggered", "overall_health_score"),
        performance_metrics={"type": "object"},
        alerts={"type": "array", "items": _obj("timestamp", "metric", "value", "threshold", "severity",
                                               "duration_s")},
        recommendations=_STRINGS),
    "qos_auto_optimization": _obj(
        "current_state", "identified_issues", "optimization_plan", "execution_result", "estimated_improvement",
        current_state={"type": "object"},
        identified_issues={"type": "array", "items": _obj("type", "severity", "details")},
        optimization_plan={"type": "object"}, execution_result=_EXECUTION,
        estimated_improvement={"type": "object"}),
    "qos_anomaly_detection": _obj(
        "detection_summary", "anomalies", "current_metrics_summary", "recommendations",
        detection_summary=_obj("total_anomalies", "detection_methods", "severity_distribution", "affected_metrics",
                               total_anomalies={"type": "integer"}, detection_methods=_STRINGS,
                               severity_distribution=_obj("critical", "high", "medium", "low"),
                               affected_metrics=_STRINGS),
        anomalies={"type": "array", "items": {"type": "object"}},
        current_metrics_summary={"type": "object"},
        recommendations=_STRINGS),
}


def _op_of(schema: str) -> str:
    return schema[len("cmd."):schema.rindex(".result/")]


class SchemaCheck:
    def __init__(self, directory: Path = SCHEMAS):
        import jsonschema
        self.jsonschema = jsonschema
        self.reason = ""
        try:
            self.schemas = {**_load(directory), **FLAT}
        except (OSError, ValueError, KeyError) as exc:
            required = schemas_required()
            if required:
                raise SchemaUnavailable(f"the published schemas are required ({required}) and cannot be "
                                        f"loaded: {exc}") from exc
            self.schemas = {}
            self.reason = (f"uplink schema checks skipped: {exc} (a fresh clone without ../shared; "
                           "CI and development checkouts have it)")
        self.available = bool(self.schemas)

    @staticmethod
    def schema_for(topic: str, message: dict) -> str | None:
        """The schema an uplink message must satisfy; None for downlink requests. Replies are
        recognised by their `schema`, whatever the topic (reply_to sends them anywhere)."""
        schema = message.get("schema", "")
        reply = ("cmd.ack" if schema == "cmd.ack/1.0" else "cmd.error" if schema == "cmd.error/1.0"
                 else "cmd.result" if isinstance(schema, str) and ".result/" in schema else None)
        if reply:
            return f"{reply.replace('.', '-')}.json" if "payload" in message else f"flat:{reply}"
        if topic.endswith("/cmd/req") or not topic.startswith("rtk/v1/"):
            return None  # downlink (the tests' own requests, hostile ones included), or not RTK at all
        kind = topic.split("/", 5)[5] if topic.count("/") >= 5 else ""
        named = {"lwt": "lwt.json", "attr": "attr.json", "state": "state.json",
                 "telemetry/network": "telemetry-network.json", "evt/threshold": "evt-threshold.json"}
        if kind in named:
            return named[kind]
        if kind.startswith("telemetry/"):
            return "telemetry.json"  # telemetry/qos: the generic telemetry schema (telemetry.<kind>/1.0)
        if kind.startswith("evt/"):
            return "event.json"
        return "unknown"

    def check(self, topic: str, message: dict) -> list[str]:
        """The names of the schemas the message was checked against; raises the validation error,
        or ValueError for an uplink message no schema describes."""
        if not self.available:
            return []
        name = self.schema_for(topic, message)
        if name is None:
            return []
        if name == "unknown":
            raise ValueError(f"no schema describes an uplink message on {topic}")
        self.jsonschema.validate(message, self.schemas[name])
        names = [name]
        if name.endswith("result.json") or name == "flat:cmd.result":
            op = _op_of(message["schema"])
            if "payload" in message:
                # cancelled and partial travel as failed/completed with the real status in meta
                body = message["payload"]["result"]
                status = message.get("meta", {}).get("status", message["payload"]["status"])
            else:
                body, status = message["result"], message["status"]
            shape = RESULT_SHAPES.get(op)
            # A completed result has every section; a cancelled or timed-out one holds what was measured.
            if shape is not None and status == "completed":
                self.jsonschema.validate(body, shape)
                names.append(f"result:{op}")
        return names
