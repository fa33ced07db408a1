"""`rtk-qos ctl`: send one command to an agent through the broker and print its ack and result.

Finds the device by the retained `lwt` messages when there is one online agent
and no --device-id is given, so a new user can try every op from a second
terminal with nothing but the broker address.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid

from .opflags import add_op_parsers, op_args
from .protocol import argspec
from .protocol.topics import PREFIX

DISCOVERY_S = 1.0


def add_parser(commands) -> None:
    p = commands.add_parser("ctl", help="send a command to an agent and print its ack and result")
    p.add_argument("--broker-host", default="localhost")
    p.add_argument("--broker-port", type=int, default=1883)
    p.add_argument("--mqtt5", action="store_true", help="MQTT 5: replies come to a Response Topic")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--ca-file", help="TLS: CA certificate to verify the broker with")
    p.add_argument("--cert-file", help="TLS: client certificate")
    p.add_argument("--key-file", help="TLS: client key")
    p.add_argument("--device-id", help="default: the one agent whose retained lwt says online")
    p.add_argument("--tenant")
    p.add_argument("--site")
    p.add_argument("--dialect", choices=("flat", "enveloped"), default="flat")
    p.add_argument("--id", dest="command_id", help="command id (default: a new unique one)")
    p.add_argument("--timeout-ms", type=int, help="the command's timeout_ms")
    p.add_argument("--expect", choices=("ack", "result", "none"), default="result")
    p.add_argument("--reply-to", help="ask for replies on this topic")
    p.add_argument("--wait", type=float, default=None,
                   help="seconds to wait for the result (default: the command's estimate + 30)")
    ops = {op: "(agent's own control op)" if op == "qos_cancel" else "QoS command" for op in argspec.ARGS}
    add_op_parsers(p, ops)
    p.set_defaults(handler=run)


class _Client:
    def __init__(self, ns):
        # paho is imported here, not at module level: `rtk-qos run` must work without it.
        from paho.mqtt import client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        self.mqtt5 = ns.mqtt5
        kwargs = {"protocol": mqtt.MQTTv5} if ns.mqtt5 else {"protocol": mqtt.MQTTv311, "clean_session": True}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"rtk-qos-ctl-{uuid.uuid4().hex[:8]}",
                                  **kwargs)
        if ns.username:
            self.client.username_pw_set(ns.username, ns.password)
        if ns.ca_file:
            self.client.tls_set(ca_certs=ns.ca_file, certfile=ns.cert_file, keyfile=ns.key_file)
        self.inbox: list = []
        self.cond = threading.Condition()
        self.client.on_message = self._message
        self.client.connect(ns.broker_host, ns.broker_port, 30)
        self.client.loop_start()

    def _message(self, _c, _u, msg) -> None:
        with self.cond:
            self.inbox.append(msg)
            self.cond.notify_all()

    def subscribe(self, *topics: str) -> None:
        for topic in topics:
            result, mid = self.client.subscribe(topic, qos=1)
        time.sleep(0.2)  # let SUBACKs arrive before anything is published

    def take(self, until: float, match) -> list:
        """Messages matching `match` until the monotonic deadline or until match says stop."""
        with self.cond:
            while True:
                for msg in list(self.inbox):
                    self.inbox.remove(msg)
                    verdict = match(msg)
                    if verdict == "stop":
                        return [msg]
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return []
                self.cond.wait(remaining)


def _discover(client: _Client, ns) -> tuple[str, str, str]:
    found: dict = {}
    client.subscribe(f"{PREFIX}/+/+/+/lwt")
    deadline = time.monotonic() + DISCOVERY_S

    def note(msg):
        parts = msg.topic.split("/")
        try:
            status = json.loads(msg.payload)["payload"]["status"]
        except (ValueError, KeyError, TypeError):
            return None
        found[parts[4]] = (parts[2], parts[3], status)
        return None

    client.take(deadline, note)
    if ns.device_id:
        if ns.device_id in found:
            tenant, site, _ = found[ns.device_id]
            return ns.tenant or tenant, ns.site or site, ns.device_id
        return ns.tenant or "default", ns.site or "home", ns.device_id
    online = [(d, t, s) for d, (t, s, status) in found.items() if status == "online"
              and (not ns.tenant or t == ns.tenant) and (not ns.site or s == ns.site)]
    if len(online) != 1:
        names = ", ".join(d for d, *_ in online) or "none"
        raise SystemExit(f"error: {len(online)} agents online ({names}); name one with --device-id")
    device_id, tenant, site = online[0]
    return tenant, site, device_id


def run(ns: argparse.Namespace) -> int:
    args = op_args(ns)
    try:
        client = _Client(ns)
    except OSError as exc:
        print(f"error: cannot reach the broker at {ns.broker_host}:{ns.broker_port}: {exc}", file=sys.stderr)
        return 1
    tenant, site, device_id = _discover(client, ns)
    base = f"{PREFIX}/{tenant}/{site}/{device_id}"
    command_id = ns.command_id or f"ctl-{uuid.uuid4().hex[:12]}"
    reply_topic = ns.reply_to or (f"rtk-qos-ctl/{command_id}/reply" if ns.mqtt5 else None)
    client.subscribe(*([reply_topic] if reply_topic else [f"{base}/cmd/ack", f"{base}/cmd/res"]),
                     f"{base}/evt/command_progress")
    body = {"id": command_id, "op": ns.op, "args": args, "expect": ns.expect}
    if ns.timeout_ms:
        body["timeout_ms"] = ns.timeout_ms
    if ns.reply_to:
        body["reply_to"] = ns.reply_to
    if ns.dialect == "flat":
        request = {"schema": f"cmd.{ns.op}/1.0", "ts": time.time_ns() // 1_000_000, **body}
    else:
        request = {"schema": f"cmd.{ns.op}/1.0", "ts": time.time_ns() // 1_000_000, "device_id": device_id,
                   "payload": body}
    props = None
    if ns.mqtt5 and not ns.reply_to:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_topic
        props.CorrelationData = command_id.encode()
    indent = None if ns.compact else 2
    client.client.publish(f"{base}/cmd/req", json.dumps(request), qos=1, properties=props)
    print(f"sent {ns.op} {command_id} to {base}", file=sys.stderr)
    wait = ns.wait if ns.wait is not None else (args.get("duration") or args.get("monitor_duration") or 0) + 30
    outcome = {"code": 1}

    def show(msg):
        try:
            message = json.loads(msg.payload)
        except ValueError:
            return None
        body = message.get("payload", message) if isinstance(message.get("payload"), dict) else message
        if body.get("id") != command_id:
            return None
        schema = message.get("schema", "")
        stream = sys.stderr if schema.startswith(("cmd.ack", "evt.")) else sys.stdout
        print(json.dumps(message, indent=None if schema.startswith("evt.") else indent), file=stream, flush=True)
        if schema.startswith("cmd.") and not schema.startswith("cmd.ack"):
            # The enveloped dialect carries cancelled/partial in meta.status.
            status = (message.get("meta") or {}).get("status") or body.get("status")
            outcome["code"] = 0 if status in ("completed", "partial", "cancelled") else 1
            return "stop"
        return None

    if not client.take(time.monotonic() + wait, show):
        print(f"error: no result within {wait:.0f} s", file=sys.stderr)
    client.client.loop_stop()
    client.client.disconnect()
    return outcome["code"]
