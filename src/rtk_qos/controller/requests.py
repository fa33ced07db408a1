"""Commands to devices: send an op (to one device or a group) and correlate its ack and result.

A command is a row (`commands`) and one reply row per answering device (`replies`),
matched by the command id alone, as the reference controller does. Both dialects come
back: flat (`accepted`, `status`, `error` string) and enveloped (`payload.status`,
`payload.error` object, `meta.status` for cancelled). The first ack and the first result
of a device count; repeats (at-least-once delivery) are counted as `duplicates`. An
answer after the deadline is still recorded, marked `late`, within `late_grace_s`;
afterwards it is only counted. Runs in the ingest thread only.
"""
from __future__ import annotations

import json
import re
import uuid
from typing import Callable, Optional

from ..protocol import messages, validate
from ..protocol.topics import NAME, PREFIX

GROUP = re.compile(NAME.pattern)
FINAL = ("completed", "failed", "partial", "timeout", "cancelled")


class RequestError(ValueError):
    """A request the controller refuses before sending: names the field."""


class Requests:
    def __init__(self, store, publish: Callable[[str, bytes, int], None], notify: Callable[[str, dict], None],
                 default_timeout_ms: int, late_grace_s: float, shared: bool = False):
        """`shared`: other instances send commands and hear replies too (scaleout.py)."""
        self.store = store
        self.shared = shared
        self.publish = publish
        self.notify = notify
        self.default_timeout_ms = default_timeout_ms
        self.late_grace_ms = int(late_grace_s * 1000)
        self.open: dict[str, dict] = {}  # id -> command, until its deadline plus the grace
        self.counts = {"sent": 0, "acks": 0, "results": 0, "duplicates": 0, "late": 0, "unknown": 0, "timeouts": 0}

    # ---- sending ------------------------------------------------------------------------------

    def send(self, target: dict, op: str, args, timeout_ms: Optional[int], dialect: str,
             command_id: Optional[str], now_ms: int) -> dict:
        """target: {"device_id", "tenant", "site"} or {"group", "tenant", "site"}. Raises RequestError
        or the protocol's CommandError (bad op or args) before anything is stored or sent."""
        if dialect not in (messages.FLAT, messages.ENVELOPED):
            raise RequestError(f"dialect: {dialect!r} is not flat or enveloped")
        args = validate(op, args)
        timeout_ms = self.default_timeout_ms if timeout_ms is None else timeout_ms
        low, high = messages.TIMEOUT_MS
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or not low <= timeout_ms <= high:
            raise RequestError(f"timeout_ms: {timeout_ms!r} is not an integer in {low}-{high}")
        command_id = f"rqc-{uuid.uuid4().hex[:16]}" if command_id is None else command_id
        if not isinstance(command_id, str) or not 1 <= len(command_id) <= messages.ID_MAX:
            raise RequestError(f"id: expected 1-{messages.ID_MAX} characters")
        if command_id in self.open or self.store.command(command_id) is not None:
            raise RequestError(f"id: {command_id!r} was already used")
        base = f"{PREFIX}/{target['tenant']}/{target['site']}"
        if "group" in target:
            if not GROUP.match(target["group"]):
                raise RequestError(f"group: {target['group']!r} does not match {NAME.pattern}")
            topic, label = f"{base}/group/{target['group']}/cmd/req", f"group:{target['group']}"
        else:
            topic, label = f"{base}/{target['device_id']}/cmd/req", f"device:{target['device_id']}"
        body = {"id": command_id, "op": op, "args": args, "timeout_ms": timeout_ms, "expect": "result"}
        if dialect == messages.FLAT:
            request = {"schema": f"cmd.{op}/1.0", "ts": now_ms, **body}
        else:
            request = {"schema": f"cmd.{op}/1.0", "ts": now_ms, "payload": body}
            if "device_id" in target:
                request["device_id"] = target["device_id"]
        command = {"id": command_id, "target": label, "op": op, "args": args, "dialect": dialect, "sent_ms": now_ms,
                   "deadline_ms": now_ms + timeout_ms, "status": "sent", "updated_ms": now_ms,
                   "group": "group" in target, "replies": {}}
        self.store.save_command(command)
        self.open[command_id] = command
        self.publish(topic, json.dumps(request, separators=(",", ":")).encode(), 1)
        self.counts["sent"] += 1
        return command

    # ---- replies ------------------------------------------------------------------------------

    def _reply(self, command: dict, device_id: str) -> dict:
        reply = command["replies"].get(device_id)
        if reply is None:
            reply = command["replies"][device_id] = {"command_id": command["id"], "device_id": device_id,
                                                     "duplicates": 0, "late": 0}
        return reply

    def _match(self, device_id: str, message: dict, now_ms: int):
        """(enveloped, body, command, reply) for a reply to one of our commands, None otherwise."""
        enveloped = isinstance(message.get("payload"), dict)
        body = message["payload"] if enveloped else message
        command_id = body.get("id")
        command = self.open.get(command_id) if isinstance(command_id, str) else None
        if command is None and isinstance(command_id, str) and self.shared:
            command = self._adopt(command_id, now_ms)
        if command is None:
            self.counts["unknown"] += 1  # another controller's, or past its grace
            return None
        return enveloped, body, command, self._reply(command, device_id)

    def _adopt(self, command_id: str, now_ms: int) -> Optional[dict]:
        """Several instances: a command another instance sent, answered by a device of ours."""
        row = self.store.command(command_id)
        if row is None or row["deadline_ms"] + self.late_grace_ms < now_ms:
            return None
        replies = {r["device_id"]: r for r in row.pop("replies")}
        command = self.open[command_id] = {**row, "group": row["target"].startswith("group:"), "replies": replies}
        return command

    def on_ack(self, device_id: str, message: dict, now_ms: int) -> None:
        matched = self._match(device_id, message, now_ms)
        if matched is None:
            return
        enveloped, body, command, reply = matched
        if reply.get("acked_ms") is not None:
            reply["duplicates"] += 1
            self.counts["duplicates"] += 1
        else:
            accepted = body.get("status") == "accepted" if enveloped else bool(body.get("accepted"))
            reply.update(accepted=int(accepted), ack=message, acked_ms=now_ms)
            self.counts["acks"] += 1
            if command["status"] == "sent" and not command["group"]:
                command["status"] = "accepted" if accepted else "rejected"
            self._late(command, reply, now_ms)
        self._save(command, reply, now_ms)

    def on_result(self, device_id: str, message: dict, now_ms: int) -> None:
        matched = self._match(device_id, message, now_ms)
        if matched is None:
            return
        enveloped, body, command, reply = matched
        if reply.get("finished_ms") is not None:
            reply["duplicates"] += 1
            self.counts["duplicates"] += 1
            self._save(command, reply, now_ms)
            return
        status = ((message.get("meta") or {}).get("status") if enveloped else None) or body.get("status")
        error = body.get("error")
        # The reference controller marks a command failed on a non-empty error string.
        if message.get("schema") == "cmd.error/1.0" or (status == "completed" and isinstance(error, str) and error):
            status = "failed"
        if status not in FINAL:
            status = "failed"
        reply.update(status=status, result=message, finished_ms=now_ms)
        self.counts["results"] += 1
        self._late(command, reply, now_ms)
        if not command["group"]:
            command["status"] = status
        self._save(command, reply, now_ms)

    def _late(self, command: dict, reply: dict, now_ms: int) -> None:
        if now_ms > command["deadline_ms"]:
            reply["late"] = 1
            self.counts["late"] += 1

    def _save(self, command: dict, reply: dict, now_ms: int) -> None:
        command["updated_ms"] = now_ms
        self.store.save_reply(reply)
        self.store.save_command(command)
        self.notify("command", {"id": command["id"], "device_id": reply["device_id"], "status": command["status"],
                                "late": bool(reply["late"]), "duplicates": reply["duplicates"]})

    def on_progress(self, device_id: str, payload: dict) -> None:
        if payload.get("id") in self.open:
            self.notify("command_progress", {"id": payload["id"], "device_id": device_id,
                                             "progress": payload.get("progress")})

    def expire(self, now_ms: int) -> None:
        """Past the deadline without a result: timeout (groups: done with whoever answered)."""
        for command_id, command in list(self.open.items()):
            if now_ms > command["deadline_ms"] and command["status"] in ("sent", "accepted") and self.shared:
                # Its result may have reached another instance (the device's owner) meanwhile.
                stored = self.store.command(command_id)
                command["status"] = stored["status"] if stored else command["status"]
            if now_ms > command["deadline_ms"] and command["status"] in ("sent", "accepted"):
                command["status"] = "finished" if command["group"] else "timeout"
                command["updated_ms"] = now_ms
                self.store.save_command(command)
                self.counts["timeouts"] += not command["group"]
                self.notify("command", {"id": command_id, "status": command["status"]})
            if now_ms > command["deadline_ms"] + self.late_grace_ms:
                del self.open[command_id]

    def resume(self, now_ms: int) -> None:
        """After a restart: commands still within their deadline plus grace are correlated again."""
        for row in self.store.recent_commands(now_ms - self.late_grace_ms):
            replies = {r["device_id"]: r for r in row.pop("replies")}
            self.open[row["id"]] = {**row, "group": row["target"].startswith("group:"), "replies": replies}

