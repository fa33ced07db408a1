"""The API's OpenAPI 3.1 description, served at /api/openapi.json (README lists the same paths)."""
from __future__ import annotations

from .sessions import CONFIG


def _json(description: str, schema: dict | None = None) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


ERRORS = {str(code): _json(text, {"$ref": "#/components/schemas/Error"}) for code, text in (
    (400, "bad input: the message names the field, the value and what was expected"),
    (401, "no bearer token (writes)"), (403, "wrong bearer token"), (404, "unknown device, series, session or command"),
    (409, "conflict: a session already runs on the device, a session not active, a command id reused"),
    (413, "body above 64 KiB"))}
TIME = {"type": "integer", "description": "Unix time, ms"}


def _param(name: str, where: str, description: str, schema: dict | None = None, required: bool = False) -> dict:
    return {"name": name, "in": where, "description": description, "required": required or where == "path",
            "schema": schema or {"type": "string"}}


def _session_schema() -> dict:
    props = {name: {"description": f"{spec.describe()}. {spec.doc}".strip()} for name, spec in CONFIG.fields.items()}
    return {"type": "object", "properties": props, "additionalProperties": False,
            "required": [n for n, s in CONFIG.fields.items() if s.required]}


DEVICE = _param("device_id", "path", "12 lower-case hex digits")
SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "rtk-qos controller", "version": "1.0",
             "description": "Fleet, QoS monitoring sessions, alerts and commands over RTK MQTT v1. "
                            "Writes need `Authorization: Bearer <token>`."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
            "status": {"type": "integer"}, "message": {"type": "string"}}}}},
                    "SessionConfig": _session_schema()}},
    "paths": {
        "/api/status": {"get": {"summary": "the controller's own counters: MQTT connection, inbox, messages by "
                                           "kind, commands, alerts, sessions, live-stream clients",
                                "responses": {"200": _json("status")}}},
        "/api/qos/overview": {"get": {"summary": "active sessions, devices monitored, alerts of the last 24 h, "
                                                 "performance summary of the last 15 min (from stored samples)",
                                      "responses": {"200": _json("overview")}}},
        "/api/devices": {"get": {"summary": "every device seen", "responses": {"200": _json("devices")}}},
        "/api/devices/{device_id}": {"get": {"summary": "one device with its series, sessions and open alerts",
                                             "parameters": [DEVICE], "responses": {"200": _json("device"), **ERRORS}}},
        "/api/devices/{device_id}/series/{name}": {"get": {
            "summary": "a metric series in buckets of `step` over [start, end) from the raw, per-minute or per-hour tier",
            "parameters": [DEVICE, _param("name", "path", "series name, e.g. probe.gateway.latency_ms"),
                           _param("start", "query", "default end - 1 h", TIME), _param("end", "query", "default now", TIME),
                           _param("step", "query", "bucket width, ms (>= 1000, default 60000, at most 10,000 points)",
                                  {"type": "integer"})],
            "responses": {"200": _json("points: ts, mean, min, max, count"), **ERRORS}}},
        "/api/alerts": {"get": {"summary": "alerts (controller episodes and agents' own), newest first", "parameters": [
            _param("device_id", "query", "filter"), _param("severity", "query", "info, warning, error, critical"),
            _param("state", "query", "open or closed"), _param("since", "query", "opened or still open since", TIME),
            _param("session_id", "query", "filter"), _param("limit", "query", "default 500", {"type": "integer"})],
            "responses": {"200": _json("alerts"), **ERRORS}}},
        "/api/sessions": {
            "get": {"summary": "monitoring sessions", "parameters": [
                _param("status", "query", "active, completed or stopped"), _param("device_id", "query", "filter")],
                "responses": {"200": _json("sessions"), **ERRORS}},
            "post": {"summary": "StartMonitoring(device, config); a second session on a device is refused (409)",
                     "security": [{"bearer": []}],
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/SessionConfig"}}}},
                     "responses": {"201": _json("the session"), **ERRORS}}},
        "/api/sessions/{session_id}": {"get": {"summary": "one session with its alerts",
                                               "parameters": [_param("session_id", "path", "id")],
                                               "responses": {"200": _json("session"), **ERRORS}}},
        "/api/sessions/{session_id}/stop": {"post": {"summary": "stop an active session", "security": [{"bearer": []}],
                                                     "parameters": [_param("session_id", "path", "id")],
                                                     "responses": {"200": _json("the stopped session"), **ERRORS}}},
        "/api/commands": {"post": {
            "summary": "send an op to a device (device_id) or a group (group, tenant, site); args are checked against "
                       "the protocol's table before anything is sent; wait_s waits for the result",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "properties": {
                "device_id": {"type": "string"}, "group": {"type": "string"}, "tenant": {"type": "string"},
                "site": {"type": "string"}, "op": {"type": "string"}, "args": {"type": "object"},
                "timeout_ms": {"type": "integer", "minimum": 1000, "maximum": 600000},
                "dialect": {"enum": ["flat", "enveloped"]}, "id": {"type": "string"},
                "wait_s": {"type": "number", "minimum": 0, "maximum": 600}}, "required": ["op"]}}}},
            "responses": {"200": _json("finished command with replies"), "202": _json("sent, not finished"), **ERRORS}}},
        "/api/commands/{command_id}": {"get": {"summary": "a command, its status and every device's ack and result",
                                               "parameters": [_param("command_id", "path", "id")],
                                               "responses": {"200": _json("command"), **ERRORS}}},
        "/api/events": {"get": {"summary": "server-sent events: alert, event, device, session, command, "
                                           "command_progress", "responses": {"200": {
                                               "description": "text/event-stream",
                                               "content": {"text/event-stream": {"schema": {"type": "string"}}}}}}},
        "/metrics": {"get": {"summary": "Prometheus exposition", "responses": {"200": {
            "description": "text/plain; version=0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    },
}
