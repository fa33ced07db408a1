"""The controller's engine: one ingest thread that owns every write, fed by a receiver process.

Processes and threads: MQTT reception and publishing run in a child process (`receiver.py`),
so paho's network thread never competes with ingest for the GIL; it forwards batches of
messages over a pipe. The ingest thread reads that pipe itself, takes up to
`ingest.batch_max` messages at a time, parses and applies them (fleet, samples, events, alerts,
sessions, command replies) and the API's actions (send a command, start or stop a session) in
one store transaction, and only after the commit asks the receiver to acknowledge the QoS 1
messages and publishes the notifications to the live stream. So a controller killed at any
moment (the receiver dies with it) has either stored a message or not acknowledged it: the
broker (persistent session, stable client id, QoS 1 subscriptions) sends it again, and ingest is
idempotent (samples keyed by series and time, events by a digest of their bytes, alerts and
replies by their ids). A receiver that dies is started again by the ingest thread.
"""
from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import logging
import os
import selectors
import threading
import time
from typing import Callable, Optional

import orjson

from ..protocol.topics import parse_uplink
from .alerts import Alerts
from .fleet import Fleet
from .receiver import FRAME_MESSAGES, Batch, Down, Receiver, ReceiverDied, Up
from .requests import Requests
from .scaleout import LOBBY, LeaseLost, Scaleout, uplink_topics
from .sessions import THROUGHPUT_SERIES, Sessions
from .store import Retention, open_store

log = logging.getLogger(__name__)
HOUSEKEEPING_S = 1.0
ROLLUP_S = 1.0
PRUNE_S = 3600.0
RESTART_PAUSE_S = 1.0
BURST_LINGER_S = 0.2
FLOOD_PAUSE_S = 0.05  # no message for this long: the flood has paused, its batch waits no longer
TOPIC_CACHE = 100_000
SESSION = "main"  # the receiver session this engine ingests from


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_NUMBER = (int, float)


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
        self._uplinks: dict[str, object] = {}  # topic -> parse_uplink(topic)
        notify = lambda kind, data: self._notes.append((kind, data))  # noqa: E731 - sent after the commit
        partitioned = bool(config["scale"]["partitions"])
        self.fleet = Fleet(self.store, notify, config["fleet"]["stale_after_s"], load=not partitioned)
        self.alerts = Alerts(self.store, notify)
        self.sessions = Sessions(self.store, self.alerts, self.fleet, notify, config["fleet"]["gone_after_s"],
                                 config["sessions"]["finish_grace_s"])
        self.requests = Requests(self.store, self._publish, notify, config["commands"]["timeout_ms"],
                                 config["commands"]["late_grace_s"], shared=partitioned)
        self.receiver = Receiver(config["log_level"])
        self.inbox: collections.deque[Batch] = collections.deque()  # received, not yet ingested
        self.backlog = 0  # messages in the inbox
        self._urgent = False  # a QoS 1 message waits in the inbox
        self.actions: collections.deque = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.counts = collections.Counter()
        self.latest: dict[str, dict[str, float]] = {}  # device -> series -> newest value (for /metrics)
        # Several instances: the fleet's partitions, each a session of its own, and the lobby's
        # session (which also carries commands out); one instance: one session with it all.
        self.scale = Scaleout(self) if partitioned else None
        self.publish_session = SESSION if self.scale is None else LOBBY
        self._thread = threading.Thread(target=self._run, name="rtk-qos-ingest", daemon=True)

    # ---- MQTT (through the receiver) ---------------------------------------------------------

    @property
    def subscriptions(self) -> list[str]:
        return uplink_topics(self.config["tenant"], self.config["site"], "+")

    def _open_session(self) -> None:
        b = self.config["broker"]
        # Stable id, persistent session: what the broker holds for us survives our crash. Receive
        # Maximum: the broker may have that many QoS 1 messages unacknowledged with us, so one store
        # transaction covers many.
        self.receiver.open(SESSION, b, b["client_id"], self.subscriptions, b["session_expiry_s"],
                           b["receive_maximum"])

    def _publish(self, topic: str, payload: bytes, qos: int) -> None:
        self.receiver.publish(topic, payload, qos, self.publish_session)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """From a thread that lives as long as the engine: the receiver dies with the thread that
        started it (PR_SET_PDEATHSIG). It connects while the store resumes: a restart's gap, when
        the broker drops our QoS 0 telemetry, is that much shorter."""
        self.receiver.start()
        self._receiver_started = time.monotonic()
        if self.scale is None:
            self._open_session()
        t = now_ms()
        with self.store.transaction():
            # Several instances: each resumes the sessions of the partitions it takes (scaleout.py).
            resumed = self.sessions.resume(t) if self.scale is None else 0
            self.requests.resume(t)
            self.sessions.flush()
        self._notes.clear()
        if resumed:
            log.info("resumed %d monitoring session(s)", resumed)
        if self.scale is not None:
            self.scale.start()  # the lobby, and this instance's share of the partitions
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._wake()
        self._thread.join(timeout=10)
        if self.scale is not None:
            self.scale.stop()  # after the receiver closed the sessions: the leases go last
        self.store.close()
        self.reader.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def call(self, fn: Callable, *args) -> concurrent.futures.Future:
        """Run `fn(*args, now_ms)` in the ingest thread, inside its transaction (the single writer)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.actions.append((fn, args, future))
        self._wake()
        return future

    # ---- the ingest thread --------------------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        selector.register(self.receiver.fileno(), selectors.EVENT_READ)
        try:
            self._ingest_loop(selector)
        finally:
            self.receiver.stop()

    def _receive(self, selector: selectors.BaseSelector, timeout: float) -> None:
        """Wait up to `timeout` for messages or actions; queue all the receiver has."""
        for key, _ in selector.select(timeout):
            if key.fd == self._wake_r:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
                continue
            while True:
                try:
                    events = self.receiver.read()
                except ReceiverDied as exc:
                    self._restart_receiver(selector, str(exc))
                    return
                if not events:
                    break
                for event in events:
                    if isinstance(event, Batch):
                        self._queue(event)
                    elif self.scale is not None and event.session != LOBBY:
                        self.scale.on_event(event)  # a partition's session up, down or subscribed
                    elif isinstance(event, Up):
                        self.connected.set()
                        log.info("connected to %s:%s", self.config["broker"]["host"], self.config["broker"]["port"])
                    elif isinstance(event, Down):
                        self.connected.clear()
                        log.info("disconnected from the broker: %s", event.reason)

    def _queue(self, batch: Batch) -> None:
        if self.backlog >= self.config["ingest"]["queue_max"]:
            # Too far behind: QoS 0 telemetry goes; QoS 1 waits its turn (the broker holds back the
            # rest of it until we acknowledge: Receive Maximum).
            kept = [m for m in batch.messages if m[2]]
            self.counts["dropped_qos0"] += len(batch.messages) - len(kept)
            batch.messages = kept
        self.inbox.append(batch)
        self.backlog += len(batch.messages)
        self._urgent = self._urgent or any(m[2] for m in batch.messages)

    def _restart_receiver(self, selector: selectors.BaseSelector, why: str) -> None:
        log.warning("%s; starting it again", why)
        self.counts["receiver_restarts"] += 1
        self.connected.clear()
        selector.unregister(self.receiver.fileno())
        if time.monotonic() - self._receiver_started < RESTART_PAUSE_S * 5:
            time.sleep(RESTART_PAUSE_S)  # dying at once again and again: do not spin
        self._receiver_started = time.monotonic()
        self.receiver.restart()
        selector.register(self.receiver.fileno(), selectors.EVENT_READ)

    def _take(self, batch_max: int) -> list[Batch]:
        batches, count = [], 0
        while self.inbox and count < batch_max:
            batches.append(self.inbox.popleft())
            count += len(batches[-1].messages)
        self.backlog -= count
        return batches

    def _ingest_loop(self, selector: selectors.BaseSelector) -> None:
        next_housekeeping = next_rollup = next_late = time.monotonic()
        next_prune = next_rollup + 60
        batch_max = self.config["ingest"]["batch_max"]
        burst = False
        while not self.stopping.is_set():
            idle = not self.inbox and not self.actions
            self._receive(selector, max(0.0, min(next_housekeeping, next_rollup) - time.monotonic()) if idle else 0)
            if burst:
                # Under a flood, gather while it flows: a transaction writes every page it touches
                # (about a leaf per series, so with every device in every batch, all the raw tier's
                # newest leaves), and one per 5,000 messages costs up to half as much per message
                # as one per 1,000 (bench/controller_stages.py). Not for QoS 1 (events, replies:
                # someone may be waiting; the broker sends no more than Receive Maximum before our
                # acks anyway), nor the API's actions, nor past a pause in the flood (its last
                # messages would wait for nothing).
                came = time.monotonic()
                until = came + BURST_LINGER_S
                self._urgent = any(m[2] for batch in self.inbox for m in batch.messages)
                while (self.backlog < batch_max and not self.actions and not self._urgent
                       and (left := until - time.monotonic()) > 0):
                    before = self.backlog
                    self._receive(selector, min(left, FLOOD_PAUSE_S))
                    if self.backlog > before:
                        came = time.monotonic()
                    elif time.monotonic() - came >= FLOOD_PAUSE_S:  # (a frame may come in parts)
                        break
            if self.scale is not None:
                self.scale.control()  # partitions acquired, released or lost since the last batch
            batches = self._take(batch_max)
            actions = [self.actions.popleft() for _ in range(len(self.actions))]
            outcomes = []
            now = time.monotonic()
            try:
                with self.store.transaction():
                    if self.scale is not None:
                        self.scale.fence()  # still the owner of every partition held, else nothing commits
                    t = now_ms()
                    for batch in batches:
                        if self.scale is None:
                            for item in batch.messages:
                                self._ingest(item, t)
                        elif batch.session == LOBBY:
                            for item in batch.messages:
                                self.scale.discover(item[0], t)
                        elif self.scale.owns(batch.session):  # else given up: neither stored nor acknowledged
                            for item in batch.messages:
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
                    if self.scale is not None and self._notes:
                        self.scale.share_notes(self._notes)
            except LeaseLost as exc:
                # Another instance owns these partitions now: give them up, and redo the rest.
                self._notes.clear()
                self._batch_samples = []
                self.inbox.extendleft(reversed(batches))
                self.backlog += sum(len(batch.messages) for batch in batches)
                self.actions.extendleft(reversed(actions))
                self.scale.lost(exc.parts)
                continue
            except Exception as exc:
                # Nothing of the batch is stored and nothing acknowledged: the broker sends it again.
                log.exception("ingest batch of %d messages failed", sum(len(b.messages) for b in batches))
                self.counts["batch_failures"] += 1
                self._notes.clear()
                self._batch_samples = []
                for fn, args, future in actions:
                    future.set_exception(exc)
                time.sleep(1.0)
                continue
            for batch in batches:
                if self.scale is None or self.scale.owns(batch.session):
                    self.receiver.ack(batch.link, [mid for _topic, _payload, qos, mid in batch.messages if qos])
            for future, value, exc in outcomes:
                if exc is None:
                    future.set_result(value)
                else:
                    future.set_exception(exc)
            received = sum(len(batch.messages) for batch in batches)
            burst = received >= FRAME_MESSAGES
            self.counts["messages"] += received
            self.counts["batches"] += bool(received)
            notes, self._notes = self._notes, []
            for kind, data in notes:
                self.on_note(kind, data)
            # Several instances: rollups and pruning are the database's, done by one instance (the
            # owner of partition 0); each would hold every instance's ingest off (the rollup's lock).
            maintainer = self.scale is None or self.scale.maintains
            if now >= next_rollup and maintainer:
                # A pass in progress goes on after every batch; an idle one is looked at each second.
                # Late buckets are computed again at most once a second: a flood of late samples
                # dirties the same buckets batch after batch.
                late = now >= next_late
                next_late = now + ROLLUP_S if late else next_late
                busy = self._maintain(lambda t: self.store.rollup(t, late=late), "rollup")
                next_rollup = now if busy else now + ROLLUP_S
            if now >= next_prune and maintainer:
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
        topic, raw, _qos, _mid = item
        where = self._uplinks.get(topic, False)
        if where is False:  # topics repeat (a few per device): parsed once
            if len(self._uplinks) >= TOPIC_CACHE:
                self._uplinks.clear()
            where = self._uplinks[topic] = parse_uplink(topic)
        if where is None:
            self.counts["ignored"] += 1
            return
        try:
            # orjson: strict JSON (no NaN or Infinity, nor a number beyond a double, as 1e999: every
            # number stored is finite), from the bytes (UTF-8 checked), in less than half json's time.
            message = orjson.loads(raw)
        except ValueError:
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
        out = self._batch_samples  # rows made once, in the store's shape (device, name, ts, value)
        first = len(out)
        latest = self.latest.get(device_id)
        if latest is None:
            latest = self.latest[device_id] = {}
        for name, values in series.items():
            if type(name) is not str or type(values) is not list:
                continue
            # JSON without NaN or Infinity (refused at parsing): every int or float is finite.
            found = [(device_id, name, start + i * step, float(v)) for i, v in enumerate(values) if type(v) in _NUMBER]
            if found:
                out += found
                latest[name] = found[-1][3]
        if device_id in self.sessions.active:
            self.sessions.on_samples(device_id, sorted((row[1:] for row in out[first:]), key=lambda row: row[1]))

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
        elif event_type == "autorate":
            self._autorate_rates(device_id, payload)

    def _autorate_rates(self, device_id: str, payload: dict) -> None:
        """Adaptive shaping's rate decisions as the series `autorate.<direction>_mbps` (the rate
        decided; in monitor mode not applied), so they are tiered and plotted like any sample."""
        decisions = payload.get("decisions")
        for d in decisions if isinstance(decisions, list) else ():
            if (isinstance(d, dict) and d.get("event") == "rate" and d.get("direction") in ("upload", "download")
                    and type(d.get("time_ms")) is int and type(d.get("new_mbps")) in _NUMBER):
                self._batch_samples.append((device_id, f"autorate.{d['direction']}_mbps", d["time_ms"],
                                            float(d["new_mbps"])))
