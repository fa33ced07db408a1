"""RTK MQTT v1 messages: requests in both dialects in, acks, results, errors and uplinks out.

The wire has two request dialects (RTK_MQTT_V1.md, inconsistency 1): flat (the
reference controller, the QoS guide) and enveloped (the JSON schemas). A request
is answered in the dialect it came in. Everything that turns bytes into a
request, or a request's outcome into bytes, is in this module.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import CommandError
from .topics import TopicError, check_reply_topic

FLAT, ENVELOPED = "flat", "enveloped"
ID_MAX, OP_MAX = 128, 64
TIMEOUT_MS = (1000, 600000)
EXPECT = ("ack", "result", "none")
PRIORITY = ("low", "normal", "high", "urgent")
MAX_DEPTH = 32
FLAT_KEYS = {"id", "op", "schema", "args", "timeout_ms", "expect", "reply_to", "priority", "ts", "trace",
             "device_id"}
ENVELOPE_KEYS = {"schema", "ts", "device_id", "payload", "trace", "meta"}
PAYLOAD_KEYS = {"id", "op", "args", "timeout_ms", "expect", "reply_to", "priority"}
# Finds an id in a payload too broken to parse, so the sender still gets an error.
_ID_PATTERN = re.compile(rb'"id"\s*:\s*"([^"\\\x00-\x1f]{1,128})"')
_ID_SCAN_BYTES = 4096


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Rejected(Exception):
    """A request that gets an error reply: `request` is as much of it as could be read."""

    def __init__(self, request: "Request", error: CommandError):
        super().__init__(error.message)
        self.request = request
        self.error = error


class Dropped(Exception):
    """A message that gets no reply (no id to answer, or not for this device); logged."""


@dataclass
class Request:
    id: str
    op: str = ""
    args: Any = None
    dialect: str = FLAT
    timeout_ms: Optional[int] = None
    expect: str = "result"
    reply_to: Optional[str] = None
    priority: str = "normal"
    trace: Optional[dict] = None
    correlation_data: Optional[bytes] = None  # MQTT 5
    received: float = field(default_factory=time.monotonic)


def _recover_id(raw: bytes) -> Optional[str]:
    match = _ID_PATTERN.search(raw[:_ID_SCAN_BYTES])
    return match.group(1).decode("utf-8", "replace") if match else None


def _depth(value: Any, limit: int) -> int:
    """Nesting depth, counted iteratively so hostile input cannot exhaust the stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _reject(request_id: Optional[str], message: str, dialect: str = FLAT, details: str = "",
            kind: str = "E_INVALID_COMMAND") -> Exception:
    if not request_id:
        return Dropped(message)
    return Rejected(Request(id=request_id, dialect=dialect), CommandError(kind, message, details))


def parse_request(raw: bytes, device_id: str, max_bytes: int,
                  response_topic: Optional[str] = None, correlation_data: Optional[bytes] = None) -> Request:
    """Bytes from cmd/req -> a Request whose fields are checked (args are checked by the op's table).

    Raises Rejected (reply with an error) or Dropped (log only).
    """
    if len(raw) > max_bytes:
        raise _reject(_recover_id(raw), f"payload is {len(raw)} bytes, above the {max_bytes}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _reject(_recover_id(raw), f"payload is not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}")
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _reject(_recover_id(raw), f"payload is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        raise _reject(_recover_id(raw), f"payload nests deeper than {MAX_DEPTH} levels")
    if _depth(message, MAX_DEPTH) > MAX_DEPTH:
        raise _reject(_recover_id(raw), f"payload nests deeper than {MAX_DEPTH} levels")
    if not isinstance(message, dict):
        raise Dropped(f"payload is a JSON {type(message).__name__}, not an object")

    enveloped = isinstance(message.get("payload"), dict)
    dialect = ENVELOPED if enveloped else FLAT
    body = message["payload"] if enveloped else message
    target = message.get("device_id")
    if target is not None and target != device_id:
        raise Dropped(f"request for device {str(target)[:20]!r}, not this one")

    request_id = body.get("id")
    if not isinstance(request_id, str) or not request_id:
        raise Dropped(f"request without a usable id ({type(request_id).__name__})")
    request = Request(id=request_id, dialect=dialect, correlation_data=correlation_data)
    request.trace = message.get("trace") if isinstance(message.get("trace"), dict) else None

    def fail(text: str, kind: str = "E_INVALID_COMMAND") -> Rejected:
        return Rejected(request, CommandError(kind, text))

    if len(request_id) > ID_MAX:
        raise fail(f"id: {len(request_id)} characters, above the maximum {ID_MAX}")
    allowed, where = (PAYLOAD_KEYS, "payload.") if enveloped else (FLAT_KEYS, "")
    unknown_body = sorted(set(body) - allowed)
    unknown_envelope = sorted(set(message) - ENVELOPE_KEYS) if enveloped else []
    if unknown_body:
        raise fail(f"{where}{unknown_body[0][:40]}: unknown field")
    if unknown_envelope:
        raise fail(f"{unknown_envelope[0][:40]}: unknown field")
    op = body.get("op")
    if not isinstance(op, str) or not 1 <= len(op) <= OP_MAX:
        raise fail(f"op: expected a string of 1-{OP_MAX} characters, got {json.dumps(op)[:40]}")
    request.op = op
    schema = message.get("schema")
    if schema is not None and (not isinstance(schema, str) or not schema.startswith(f"cmd.{op}/")):
        raise fail(f"schema: {str(schema)[:60]!r} does not name op {op!r} (expected cmd.{op}/1.0)")
    if "args" not in body:
        raise fail("args: required")
    request.args = body["args"]

    timeout = body.get("timeout_ms")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int):
            raise fail(f"timeout_ms: expected an integer, got {json.dumps(timeout)[:40]}")
        if not TIMEOUT_MS[0] <= timeout <= TIMEOUT_MS[1]:
            raise fail(f"timeout_ms: {timeout} is outside {TIMEOUT_MS[0]}-{TIMEOUT_MS[1]}")
        request.timeout_ms = timeout
    expect = body.get("expect", "result")
    if expect not in EXPECT:
        raise fail(f"expect: {json.dumps(expect)[:40]} is not one of {', '.join(EXPECT)}")
    request.expect = expect
    priority = body.get("priority", "normal")
    if priority not in PRIORITY:
        raise fail(f"priority: {json.dumps(priority)[:40]} is not one of {', '.join(PRIORITY)}")
    request.priority = priority
    reply_to = response_topic if response_topic is not None else body.get("reply_to")
    if reply_to is not None:
        try:
            request.reply_to = check_reply_topic(reply_to)
        except TopicError as exc:
            raise fail(f"reply_to: {exc}")
    return request


# ---- replies -------------------------------------------------------------------------------

def _flat(schema: str, request: Request, **fields) -> dict:
    message = {"schema": schema, "ts": now_ms(), "id": request.id, **fields}
    if request.trace:
        message["trace"] = request.trace
    return message


def envelope(schema: str, device_id: str, payload: dict, trace: Optional[dict] = None,
             meta: Optional[dict] = None) -> dict:
    """Uplink envelope: schema, ts, device_id, payload, and optional trace and meta, nothing else."""
    message = {"schema": schema, "ts": now_ms(), "device_id": device_id, "payload": payload}
    if trace:
        message["trace"] = trace
    if meta:
        message["meta"] = meta
    return message


def ack(request: Request, device_id: str, accepted: bool, reason: Optional[str] = None,
        estimated_ms: Optional[int] = None) -> dict:
    if request.dialect == FLAT:
        return _flat("cmd.ack/1.0", request, accepted=accepted, reason=reason,
                     estimated_duration_ms=estimated_ms)
    payload = {"id": request.id, "status": "accepted" if accepted else "rejected"}
    if reason:
        payload["reason"] = reason
    return envelope("cmd.ack/1.0", device_id, payload, request.trace,
                    {"estimated_duration_ms": estimated_ms} if estimated_ms is not None else None)


def error(request: Request, device_id: str, err: CommandError, duration_ms: Optional[int] = None) -> dict:
    """cmd.error/1.0. Flat: `error` is the message string (the reference controller marks a
    command failed on a non-empty string) with `error_code` and `error_details` beside it."""
    payload = err.as_payload()
    execution = {"duration_ms": duration_ms} if duration_ms is not None else None
    if request.dialect == FLAT:
        return _flat("cmd.error/1.0", request, status="failed", error=payload["message"],
                     error_code=payload["code"], error_details=payload["details"], execution=execution)
    return envelope("cmd.error/1.0", device_id, {"id": request.id, "status": "failed", "error": payload},
                    request.trace, {"execution": execution} if execution else None)


# The enveloped result schema knows only completed, failed and timeout.
_ENVELOPED_STATUS = {"completed": "completed", "partial": "completed", "timeout": "timeout",
                     "cancelled": "failed", "failed": "failed"}


def result(request: Request, device_id: str, op: str, status: str, result_body: Optional[dict],
           duration_ms: int, error_text: Optional[str] = None) -> dict:
    schema = f"cmd.{op}.result/1.0"
    body = result_body if result_body is not None else {}
    if request.dialect == FLAT:
        return _flat(schema, request, status=status, result=body, execution={"duration_ms": duration_ms},
                     error=error_text)
    payload = {"id": request.id, "status": _ENVELOPED_STATUS[status], "result": body, "error": error_text}
    meta = {"execution": {"duration_ms": duration_ms}}
    if payload["status"] != status:
        meta["status"] = status  # cancelled/partial, which the enveloped schema cannot say
    return envelope(schema, device_id, payload, request.trace, meta)


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
