"""The controller's engine: one MQTT session, one ingest thread that owns every write.

Threads: paho's network thread only appends each message to the inbox (a deque);
the ingest thread takes up to `ingest.batch_max` messages at a time, parses and
applies them (fleet, samples, events, alerts, sessions, command replies) and the
API's actions (send a command, start or stop a session) in one store transaction,
and only after the commit acknowledges the QoS 1 messages (paho's manual ack)
and publishes the notifications to the live stream. So a controller killed at any
moment has either stored a message or not acknowledged it: the broker (persistent
session, stable client id, QoS 1 subscriptions) sends it again, and ingest is
idempotent (samples keyed by series and time, events by a digest of their bytes,
alerts and replies by their ids).
"""
from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import logging
import threading
import time
from typing import Callable, Optional

from paho.mqtt import client as mqtt

from ..protocol.topics import parse_uplink
from .alerts import Alerts
from .fleet import Fleet
from .link import Link, uplink_topics
from .requests import Requests
from .scaleout import LeaseLost, Scaleout
from .sessions import THROUGHPUT_SERIES, Sessions
from .store import Retention, open_store

log = logging.getLogger(__name__)
HOUSEKEEPING_S = 1.0
ROLLUP_S = 1.0
PRUNE_S = 3600.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_NUMBER = (int, float)


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number")


# JSON's NaN and Infinity are not JSON numbers: refused, so every number stored is finite.
_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def digest(raw: bytes) -> int:
    """64-bit identity of a message's bytes (signed, as SQLite stores integers)."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)


class Engine:
    def __init__(self, config: dict, on_note: Optional[Callable[[str, dict], None]] = None):
        self.config = config
        s = config["store"]
        retention = Retention(s["raw_hours"], s["minute_days"], s["hour_days"])
        self.store = open_store(s["url"], retention, s["synchronous"], writer=True)
        self.reader = open_store(s["url"], retention, s["synchronous"])  # the API's own connection
        self.on_note = on_note or (lambda kind, data: None)
        self._notes: list[tuple[str, dict]] = []
        self._batch_samples: list[tuple[str, str, int, float]] = []
        notify = lambda kind, data: self._notes.append((kind, data))  # noqa: E731 - sent after the commit
        partitioned = bool(config["scale"]["partitions"])
        self.fleet = Fleet(self.store, notify, config["fleet"]["stale_after_s"], load=not partitioned)
        self.alerts = Alerts(self.store, notify)
        self.sessions = Sessions(self.store, self.alerts, self.fleet, notify, config["fleet"]["gone_after_s"],
                                 config["sessions"]["finish_grace_s"])
        self.requests = Requests(self.store, self._publish, notify, config["commands"]["timeout_ms"],
                                 config["commands"]["late_grace_s"], shared=partitioned)
        self.inbox: collections.deque = collections.deque()
        self.actions: collections.deque = collections.deque()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.counts = collections.Counter()
        self.latest: dict[str, dict[str, float]] = {}  # device -> series -> newest value (for /metrics)
        self.scale = Scaleout(self) if partitioned else None
        if self.scale is None:  # one instance: one session with the fleet's wildcard subscriptions
            self.link = Link(self, config["broker"]["client_id"], topics=self.subscriptions)
        else:  # partitions, each its own session (scaleout.py); commands go out through the lobby's
            self.link = self.scale.lobby
        self._thread = threading.Thread(target=self._run, name="rtk-qos-ingest", daemon=True)

    # ---- MQTT ---------------------------------------------------------------------------------

    @property
    def subscriptions(self) -> list[str]:
        return uplink_topics(self.config["tenant"], self.config["site"], "+")

    def queue(self, item: tuple) -> None:
        """From a network thread: (topic, payload, qos, mid, link) for the ingest thread."""
        if item[2] == 0 and len(self.inbox) >= self.config["ingest"]["queue_max"]:
            self.counts["dropped_qos0"] += 1
        else:
            self.inbox.append(item)
        if not self.wake.is_set():  # the ingest thread clears it before it drains: nothing is missed
            self.wake.set()

    def _publish(self, topic: str, payload: bytes, qos: int) -> None:
        info = self.link.client.publish(topic, payload, qos=qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # paho queues QoS 1 messages while disconnected; anything else is worth knowing.
            log.warning("publish to %s: %s", topic, mqtt.error_string(info.rc))

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        t = now_ms()
        with self.store.transaction():
            # Several instances: each resumes the sessions of the partitions it takes (scaleout.py).
            resumed = self.sessions.resume(t) if self.scale is None else 0
            self.requests.resume(t)
            self.sessions.flush()
        self._notes.clear()
        if resumed:
            log.info("resumed %d monitoring session(s)", resumed)
        if self.scale is None:
            self.link.start()
        else:
            self.scale.start()
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self._thread.join(timeout=10)
        if self.scale is None:
            self.link.close()
        else:
            self.scale.stop()
        self.store.close()
        self.reader.close()

    def call(self, fn: Callable, *args) -> concurrent.futures.Future:
        """Run `fn(*args, now_ms)` in the ingest thread, inside its transaction (the single writer)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.actions.append((fn, args, future))
        self.wake.set()
        return future

    # ---- the ingest thread --------------------------------------------------------------------

    def _run(self) -> None:
        next_housekeeping = next_rollup = time.monotonic()
        next_prune = next_rollup + 60
        batch_max = self.config["ingest"]["batch_max"]
        while not self.stopping.is_set():
            if not self.inbox and not self.actions:
                self.wake.wait(timeout=max(0.0, min(next_housekeeping, next_rollup) - time.monotonic()))
                self.wake.clear()
            if self.scale is not None:
                self.scale.control()  # partitions acquired, released or lost since the last batch
            # What a closed link (a partition given up) had queued is neither stored nor acknowledged.
            batch = [item for item in (self.inbox.popleft() for _ in range(min(batch_max, len(self.inbox))))
                     if not item[4].closed]
            actions = [self.actions.popleft() for _ in range(len(self.actions))]
            outcomes = []
            now = time.monotonic()
            try:
                with self.store.transaction():
                    if self.scale is not None:
                        self.scale.fence()  # still the owner of every partition held, else nothing commits
                    t = now_ms()
                    for item in batch:
                        if self.scale is not None and item[4] is self.scale.lobby:
                            self.scale.discover(item[0], t)
                        else:
                            self._ingest(item, t)
                    if self._batch_samples:  # one insert for the whole batch
                        self.counts["samples_new"] += self.store.add_samples(self._batch_samples)
                        self.counts["samples"] += len(self._batch_samples)
                        self._batch_samples = []
                    for fn, args, future in actions:
                        try:
                            outcomes.append((future, fn(*args, t), None))
                        except Exception as exc:  # the API reports it; the rest of the batch goes on
                            outcomes.append((future, None, exc))
                    if now >= next_housekeeping:
                        next_housekeeping = now + HOUSEKEEPING_S
                        self.fleet.check_stale(t)
                        self.sessions.tick(t)
                        self.requests.expire(t)
                    self.fleet.flush()
                    self.sessions.flush()
            except LeaseLost as exc:
                # Another instance owns these partitions now: give them up, and redo the rest.
                self._notes.clear()
                self._batch_samples = []
                self.inbox.extendleft(reversed(batch))
                self.actions.extendleft(reversed(actions))
                self.scale.lost(exc.parts)
                continue
            except Exception as exc:
                # Nothing of the batch is stored and nothing acknowledged: the broker sends it again.
                log.exception("ingest batch of %d messages failed", len(batch))
                self.counts["batch_failures"] += 1
                self._notes.clear()
                self._batch_samples = []
                for fn, args, future in actions:
                    future.set_exception(exc)
                time.sleep(1.0)
                continue
            for _topic, _payload, qos, mid, link in batch:
                if qos:
                    link.ack(mid, qos)
            for future, value, exc in outcomes:
                if exc is None:
                    future.set_result(value)
                else:
                    future.set_exception(exc)
            self.counts["messages"] += len(batch)
            self.counts["batches"] += bool(batch)
            notes, self._notes = self._notes, []
            for kind, data in notes:
                self.on_note(kind, data)
            if now >= next_rollup:
                # A pass in progress goes on after every batch; an idle one is looked at each second.
                busy = self._maintain(self.store.rollup, "rollup")
                next_rollup = now if busy else now + ROLLUP_S
            if now >= next_prune:
                next_prune = now + PRUNE_S
                self._maintain(self.store.prune, "prune")

    def _maintain(self, job: Callable[[int], int], name: str) -> int:
        try:
            with self.store.transaction():
                rows = job(now_ms())
            self.counts[f"{name}_rows"] += rows
            return rows
        except Exception:
            log.exception("%s failed", name)
            return 0

    def _ingest(self, item, t: int) -> None:
        topic, raw, _qos, _mid, _link = item
        where = parse_uplink(topic)
        if where is None:
            self.counts["ignored"] += 1
            return
        try:
            message = _DECODER.decode(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            self.counts["invalid"] += 1
            return
        if not isinstance(message, dict):
            self.counts["invalid"] += 1
            return
        kind = where.message_type
        payload = message.get("payload") if isinstance(message.get("payload"), dict) else None
        self.counts[f"in_{kind.split('/')[0]}"] += 1
        if kind == "cmd/ack":
            self.fleet.seen(where, t)
            self.requests.on_ack(where.device_id, message, t)
        elif kind == "cmd/res":
            self.fleet.seen(where, t)
            self.requests.on_result(where.device_id, message, t)
        elif payload is None:
            self.counts["invalid"] += 1
        elif kind == "lwt":
            self.fleet.lwt(where, payload, t)
        elif kind == "state":
            self.fleet.state(where, payload, t)
        elif kind == "attr":
            self.fleet.attr(where, payload, t)
        elif kind == "telemetry/qos":
            self.fleet.seen(where, t)
            self._samples(where.device_id, payload)
        elif kind.startswith("telemetry/"):
            self.fleet.telemetry(where, payload, t)
        elif kind.startswith("evt/"):
            self.fleet.seen(where, t)
            self._event(where.device_id, kind[4:], message, payload, raw, t)
        else:
            self.counts["ignored"] += 1

    def _samples(self, device_id: str, payload: dict) -> None:
        start, step, series = payload.get("start_ms"), payload.get("step_ms"), payload.get("series")
        if type(start) is not int or type(step) is not int or step <= 0 or not isinstance(series, dict):
            self.counts["invalid"] += 1
            return
        uplink = payload.get("uplink")
        if isinstance(uplink, str) and f"{uplink}.rx_mbps" in series and f"{uplink}.tx_mbps" in series:
            rx, tx = series[f"{uplink}.rx_mbps"], series[f"{uplink}.tx_mbps"]
            if isinstance(rx, list) and isinstance(tx, list):
                series = {**series, THROUGHPUT_SERIES: [a + b if type(a) in _NUMBER and type(b) in _NUMBER else None
                                                        for a, b in zip(rx, tx)]}
        rows: list[tuple[str, int, float]] = []
        latest = self.latest.setdefault(device_id, {})
        for name, values in series.items():
            if type(name) is not str or type(values) is not list:
                continue
            # JSON without NaN or Infinity (refused at parsing): every int or float is finite.
            found = [(name, start + i * step, float(v)) for i, v in enumerate(values) if type(v) in _NUMBER]
            if found:
                rows += found
                latest[name] = found[-1][2]
        self._batch_samples.extend([(device_id, *row) for row in rows])
        if device_id in self.sessions.active:
            rows.sort(key=lambda row: row[1])
            self.sessions.on_samples(device_id, rows)

    def _event(self, device_id: str, event_type: str, message: dict, payload: dict, raw: bytes, t: int) -> None:
        ts = message.get("ts") if isinstance(message.get("ts"), int) else t
        severity = payload.get("severity") if isinstance(payload.get("severity"), str) else None
        if event_type == "command_progress":
            self.requests.on_progress(device_id, payload)
            return  # progress is live only (QoS 0, many per command): streamed, not stored
        if not self.store.add_event(device_id, event_type, ts, severity, digest(raw), payload):
            self.counts["duplicate_events"] += 1
            return
        self._notes.append(("event", {"device_id": device_id, "event_type": event_type, "ts": ts,
                                      "severity": severity, "payload": payload}))
        if event_type == "qos_alert":
            self.alerts.agent_alert(device_id, payload, t)
