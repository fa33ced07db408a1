"""Devices on a real broker, publishing what an agent publishes (retained lwt and state, telemetry/qos
batches, events) in the agent's own envelopes (protocol/messages.py). For the dashboard's and the
controller's tests and benchmarks, where one process stands in for many agents."""
from __future__ import annotations

import collections
import json
import threading
import time
import urllib.request
from typing import Iterator, Optional

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


class Stream(threading.Thread):
    """Devices streaming at `hz` each, at QoS 1: every tick one telemetry/qos message per device (one
    sample of `latency_ms` probe latency, a ts of its own), and every `event_every` ticks an
    evt/link_flap of its own (a distinct digest). `published` counts what the broker acknowledged
    (PUBACK), per device and kind: what the controllers must have stored, each exactly once."""

    def __init__(self, port: int, devices: list[str], hz: float, event_every: int = 0, tenant: str = "lab",
                 site: str = "bench", client_id: str = ""):
        super().__init__(daemon=True)
        self.base = f"{PREFIX}/{tenant}/{site}"
        self.devices = devices
        self.period = 1.0 / hz
        self.event_every = event_every
        self.latency_ms = dict.fromkeys(devices, 20.0)  # what each device reports; a test raises it for alerts
        self.published: collections.Counter = collections.Counter()  # (device, "telemetry" | "event") -> acked
        self.ticks = 0
        self.stopping = threading.Event()
        self._pending: collections.deque = collections.deque()  # (device, kind, MQTTMessageInfo), oldest first
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"fleet-stream-{id(self)}")
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _send(self, device_id: str, kind: str, schema: str, payload: dict, counted: str) -> None:
        raw = messages.encode(messages.envelope(schema, device_id, payload))
        self._pending.append((device_id, counted, self.client.publish(f"{self.base}/{device_id}/{kind}", raw, qos=1)))

    def _count_acknowledged(self) -> None:
        # PUBACKs come in order: the front of the queue is all there is to look at.
        while self._pending and self._pending[0][2].is_published():
            device_id, counted, _ = self._pending.popleft()
            self.published[(device_id, counted)] += 1

    def run(self) -> None:
        began = time.monotonic()
        ts = 0
        while not self.stopping.is_set():
            tick = self.ticks
            ts = max(int(time.time() * 1000), ts + 1)  # a distinct ms per tick: every sample a row of its own
            for device_id in self.devices:
                self._send(device_id, "telemetry/qos", "telemetry.qos/1.0",
                           {"start_ms": ts, "step_ms": 1000,
                            "series": {"probe.gateway.latency_ms": [self.latency_ms[device_id]]}}, "telemetry")
                if self.event_every and tick % self.event_every == 0:
                    self._send(device_id, "evt/link_flap", "evt.link_flap/1.0",
                               {"event_type": "link_flap", "severity": "info", "seq": tick}, "event")
            self.ticks += 1
            self._count_acknowledged()
            self.stopping.wait(max(0.0, began + self.ticks * self.period - time.monotonic()))

    def finish(self, timeout: float = 30) -> None:
        """Stop, and wait until the broker has acknowledged everything sent."""
        self.stopping.set()
        self.join(timeout)
        deadline = time.monotonic() + timeout
        self._count_acknowledged()
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.05)
            self._count_acknowledged()
        assert not self._pending, f"{len(self._pending)} messages never acknowledged by the broker"
        self.client.disconnect()
        self.client.loop_stop()

    def total(self, counted: str) -> int:
        return sum(n for (_, kind), n in self.published.items() if kind == counted)


def sse(url: str, ready: threading.Event, timeout: float = 600) -> Iterator[tuple[str, dict]]:
    """A controller's /api/events as (kind, data), `ready` set once the stream is open."""
    with urllib.request.urlopen(url + "/api/events", timeout=timeout) as stream:
        ready.set()
        kind = None
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                yield kind, json.loads(line[6:])
