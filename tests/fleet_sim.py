"""Devices on a real broker, publishing what an agent publishes (retained lwt and state, telemetry/qos
batches, events) in the agent's own envelopes (protocol/messages.py), and answering commands with
results of a given shape. For the dashboard's tests and benchmark, where one process stands in for
many agents, or for an op no agent on this branch implements yet."""
from __future__ import annotations

import json
import threading
from typing import Callable, Optional

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from rtk_qos.protocol import messages
from rtk_qos.protocol.topics import PREFIX

MAX_BATCH = 60  # samples per telemetry/qos message, as the agent's QosBatch


def device_ids(count: int, first: int = 0xA0_00_00_00_00_00) -> list[str]:
    return [f"{first + i:012x}" for i in range(count)]


class FleetSim:
    def __init__(self, port: int, tenant: str = "lab", site: str = "bench"):
        self.base = f"{PREFIX}/{tenant}/{site}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-sim-{id(self)}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.handlers: dict[str, Callable[[str, dict], Optional[dict]]] = {}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, device_id: str, kind: str, schema: str, payload: dict, retain: bool = False,
                ts: Optional[int] = None) -> None:
        message = messages.envelope(schema, device_id, payload)
        if ts is not None:
            message["ts"] = ts
        self.client.publish(f"{self.base}/{device_id}/{kind}", messages.encode(message), qos=1,
                            retain=retain).wait_for_publish(10)

    def online(self, device_id: str, status: str = "online", health: str = "ok") -> None:
        self.publish(device_id, "lwt", "lwt/1.0", {"status": status}, retain=True)
        if status == "online":
            self.publish(device_id, "state", "state/1.0", {"health": health, "connection_status": "connected",
                                                            "health_reasons": []}, retain=True)

    def telemetry(self, device_id: str, start_ms: int, step_ms: int, series: dict[str, list],
                  uplink: Optional[str] = None) -> None:
        """Every series sampled on the same grid, sent in the agent's batches of at most MAX_BATCH."""
        count = len(next(iter(series.values())))
        for first in range(0, count, MAX_BATCH):
            payload = {"start_ms": start_ms + first * step_ms, "step_ms": step_ms,
                       "series": {name: values[first:first + MAX_BATCH] for name, values in series.items()}}
            if uplink:
                payload["uplink"] = uplink
            self.publish(device_id, "telemetry/qos", "telemetry.qos/1.0", payload)

    def event(self, device_id: str, event_type: str, payload: dict) -> None:
        self.publish(device_id, f"evt/{event_type}", f"evt.{event_type}/1.0", {"event_type": event_type, **payload})

    # ---- answering commands -------------------------------------------------------------------

    def answer(self, op: str, handler: Callable[[str, dict], Optional[dict]]) -> None:
        """handler(device_id, args) -> result body (None: answer nothing)."""
        if not self.handlers:
            subscribed = threading.Event()
            self.client.on_message = self._on_request
            self.client.on_subscribe = lambda *_: subscribed.set()
            self.client.subscribe(f"{self.base}/+/cmd/req", qos=1)
            assert subscribed.wait(10), "the broker did not confirm the subscription"
        self.handlers[op] = handler

    def _on_request(self, _client, _userdata, msg) -> None:
        device_id = msg.topic.split("/")[-3]
        request = json.loads(msg.payload)
        body = request.get("payload", request)
        handler = self.handlers.get(body.get("op"))
        if handler is None:
            return
        # Off paho's network thread: the handler may publish and wait.
        threading.Thread(target=self._reply, args=(device_id, request, body, handler), daemon=True).start()

    def _reply(self, device_id: str, request: dict, body: dict, handler) -> None:
        parsed = messages.parse_request(json.dumps(request).encode(), device_id, 65536)
        self.client.publish(f"{self.base}/{device_id}/cmd/ack",
                            messages.encode(messages.ack(parsed, device_id, True)), qos=1)
        result = handler(device_id, body.get("args") or {})
        if result is not None:
            message = messages.result(parsed, device_id, body["op"], "completed", result, 10)
            self.client.publish(f"{self.base}/{device_id}/cmd/res", messages.encode(message), qos=1)
