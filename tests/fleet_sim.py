"""Devices on a real broker, publishing what an agent publishes (retained lwt and state, telemetry/qos
batches, events) in the agent's own envelopes (protocol/messages.py). For the dashboard's tests and
benchmark, where one process stands in for many agents."""
from __future__ import annotations

from typing import Optional

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
