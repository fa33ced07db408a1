"""A simulated fleet for bench/controller_scale.py, in a process of its own: DEVICES devices
(bench/controller.py's ids and telemetry/qos shape, 5 series, one 1 Hz sample each) at QoS 1.

  announce: every device's retained lwt, state and attr (what an agent publishes at connect).
  stream:   each device one telemetry/qos message a second, spread over the second, for SECONDS;
            meanwhile ALERTS_PER_S evt/qos_alert events from devices in turn, each carrying its
            publish time (`sent_ns`, this machine's clock) for the alert-to-SSE latency.

Prints one JSON line at the end: what was sent and what the broker acknowledged (PUBACK), and
each second's first ts (the samples' ts are whole ticks: tick t of a device is `first_ts + t*1000`).
"""
from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from controller import device_id, telemetry, topic  # noqa: E402


class Publisher:
    """MQTT 3.1.1 QoS 1 publishing over a plain socket: PUBLISH packets built here and written in
    runs, PUBACKs counted by a reader thread. paho spends some 40 us of Python per publish, which at
    10,000 messages a second would take most of a core the controllers need; this a few us."""

    def __init__(self, port: int, client_id: str):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        name = client_id.encode()
        variable = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(name)) + name  # clean session, keepalive 60
        self.sock.sendall(b"\x10" + _length(len(variable)) + variable)
        if self.sock.recv(4)[:2] != b"\x20\x02":
            raise RuntimeError("the broker refused the publisher")
        self.sent = 0
        self.acked = 0
        self._next_id = 0
        self._out: list[bytes] = []
        threading.Thread(target=self._read_acks, daemon=True).start()

    def _read_acks(self) -> None:
        pending = b""
        while True:
            data = self.sock.recv(65536)
            if not data:
                return
            pending += data
            whole = len(pending) - len(pending) % 4  # all the broker sends: PUBACKs, 4 bytes each
            self.acked += whole // 4
            pending = pending[whole:]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self._next_id = self._next_id % 65535 + 1
        name = topic.encode()
        body = struct.pack("!H", len(name)) + name + struct.pack("!H", self._next_id) + payload
        self._out.append((b"\x33" if retain else b"\x32") + _length(len(body)) + body)
        self.sent += 1
        if len(self._out) >= 64:
            self.flush()

    def flush(self) -> None:
        if self._out:
            self.sock.sendall(b"".join(self._out))
            self._out = []

    def finish(self, timeout: float) -> None:
        """Wait until the broker has acknowledged everything sent, then disconnect."""
        self.flush()
        deadline = time.monotonic() + timeout
        while self.acked < self.sent and time.monotonic() < deadline:
            time.sleep(0.05)
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def announce(port: int, devices: int) -> dict:
    client = Publisher(port, "bench-fleet-announce")
    now = int(time.time() * 1000)
    for i in range(devices):
        for kind, schema, payload in (("lwt", "lwt/1.0", {"status": "online", "last_seen": now}),
                                      ("state", "state/1.0", {"health": "ok", "capabilities": {"diagnostics": []}}),
                                      ("attr", "attr/1.0", {"device_type": "router"})):
            client.publish(topic(i, kind), json.dumps({"schema": schema, "ts": now, "device_id": device_id(i),
                                                       "payload": payload}).encode(), retain=True)
    client.finish(120)
    return {"sent": client.sent, "acked": client.acked}


def stream(port: int, devices: int, seconds: int, alerts_per_s: float) -> dict:
    client = Publisher(port, "bench-fleet-stream")
    first_ts = int(time.time() * 1000) // 1000 * 1000 + 1000
    began = time.monotonic() + (first_ts / 1000 - time.time())  # tick 0 starts on a whole second
    sent = alerts = 0
    lag = 0.0
    alert_every = 1.0 / alerts_per_s if alerts_per_s else float("inf")
    next_alert = began
    for tick in range(seconds):
        start = began + tick
        ts = first_ts + tick * 1000
        for i in range(devices):
            due = start + i / devices  # spread over the second, as independent devices would be
            now = time.monotonic()
            lag = max(lag, now - due)
            if now < due:
                client.flush()
                time.sleep(due - now)
            client.publish(topic(i, "telemetry/qos"), telemetry(i, ts, tick))
            sent += 1
            if now >= next_alert:
                alerts += 1
                device = alerts % devices
                event = {"schema": "evt.qos_alert/1.0", "ts": int(time.time() * 1000), "device_id": device_id(device),
                         "payload": {"event_type": "qos_alert", "severity": "warning", "state": "open",
                                     "command_id": f"bench-scale-{alerts}", "metric": "latency", "host": "gateway",
                                     "value": 120.0, "threshold": 100.0, "threshold_type": "max", "unit": "ms",
                                     "timestamp": int(time.time() * 1000), "duration_s": 3,
                                     "sent_ns": time.time_ns()}}
                client.publish(topic(device, "evt/qos_alert"), json.dumps(event).encode())
                client.flush()  # its latency is measured from here
                next_alert += alert_every
    client.finish(120)
    return {"telemetry_sent": sent, "alerts_sent": alerts, "acked": client.acked,
            "all_acked": client.acked == client.sent,
            "first_ts": first_ts, "last_ts": first_ts + (seconds - 1) * 1000, "max_lag_ms": round(lag * 1000, 1)}


def newcomers(port: int, first: int, count: int, seconds: float, every_ms: int) -> dict:
    """Devices never seen before announce themselves (retained lwt) all at t0 and at once stream a
    telemetry/qos message each every `every_ms`, sample ts t0 + k * every_ms: the first ts stored
    says how long after its lwt a new device's messages start reaching a controller."""
    client = Publisher(port, "bench-fleet-newcomers")
    t0 = int(time.time() * 1000)
    for i in range(first, first + count):
        client.publish(topic(i, "lwt"), json.dumps({"schema": "lwt/1.0", "ts": t0, "device_id": device_id(i),
                                                    "payload": {"status": "online", "last_seen": t0}}).encode(),
                       retain=True)
    client.flush()
    began = time.monotonic()
    for k in range(int(seconds * 1000 / every_ms)):
        time.sleep(max(0.0, began + k * every_ms / 1000 - time.monotonic()))
        for i in range(first, first + count):
            client.publish(topic(i, "telemetry/qos"), telemetry(i, t0 + k * every_ms, k))
        client.flush()
    client.finish(60)
    return {"t0_ms": t0, "devices": [device_id(i) for i in range(first, first + count)], "every_ms": every_ms,
            "sent": client.sent, "acked": client.acked}


def main() -> int:
    mode, port, devices = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if mode == "announce":
        outcome = announce(port, devices)
    elif mode == "newcomers":
        outcome = newcomers(port, devices, int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
    else:
        outcome = stream(port, devices, int(sys.argv[4]), float(sys.argv[5]))
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
