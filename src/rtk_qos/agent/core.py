"""The agent: wires configuration, session, outbox, dispatcher and the monitor loop together.

Threads: the MQTT network thread (parses, acks, dispatches), the outbox drain,
the command workers, one monitor thread that ticks the native sampler once
a second, records the history and publishes state and telemetry on their periods,
the continuous probe's thread (gateway and configured hosts, see `services/probing.py`),
whose samples the monitor thread takes and records each tick, and the history's
saver (see `recorder.py`). The monitor thread owns (ticks) the sampler, the health and the
state and telemetry schedule; other threads only ask for a state (`_state_due`). The sampler
and the probe are the process's shared services: commands subscribe to them.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Optional

from .. import _core
from ..collectors import links
from ..commands import load_all
from ..protocol import messages
from ..protocol.topics import Topics
from ..services import ContinuousProbe, LinkSampler, Services, install
from ..vocab.units import mbps
from . import device
from .config import MAX_INTERFACES
from .dispatcher import CANCEL_OP, Dispatcher, Replies
from .outbox import Outbox
from .qos_telemetry import SCHEMA as QOS_SCHEMA, QosBatch
from .recorder import HistoryRecorder
from .session import Session

log = logging.getLogger(__name__)
HEALTH_EVERY_S = 10.0
# All of a stop within systemd's TimeoutStopSec (20 s, cross/systemd/rtk-qos.service), with margin.
STOP_BUDGET_S = 15.0
SAVE_ON_STOP_S = 5.0  # the final history save; flash that takes longer is abandoned (the last save stays)
COMMANDS_STOP_S = 5.0  # cancelled commands return what they measured within this
DRAIN_ON_STOP_S = 3.0  # queued results get this long to reach a connected broker


class Agent(Replies):
    def __init__(self, config: dict):
        self.config = config
        self.device_id = config["device_id"]
        self.topics = Topics(config["tenant"], config["site"], self.device_id, tuple(config["group_ids"]))
        self.started = time.monotonic()
        os.makedirs(config["state_dir"], mode=0o700, exist_ok=True)
        self.outbox = Outbox(os.path.join(config["state_dir"], "outbox"), config["outbox"]["max_messages"],
                             config["outbox"]["max_bytes"])
        self._stop = threading.Event()
        self._last_tick: Optional[float] = None  # monotonic time of the monitor's newest tick
        settings = config["history"]
        self.probes = ContinuousProbe(settings["probe_targets"], settings["probe_interval_s"],
                                      config["probe"]["timeout_s"], self._stop, lambda: self._last_tick,
                                      config["telemetry"]["sample_period_s"]
                                      ) if settings["probe_interval_s"] > 0 else None
        self.services = Services(LinkSampler(history=int(config["telemetry"]["state_period_s"] /
                                                          config["telemetry"]["sample_period_s"]),
                                             capacity=MAX_INTERFACES), self.probes)
        install(self.services)
        self.history = HistoryRecorder(config, len(self.probes.names) if self.probes else 0)
        self.dispatcher = Dispatcher(config, self.device_id, self, history=self.history.store)
        self.session = Session(config, self.topics.of("lwt"), self.device_id, self.outbox,
                               self._on_message, self._on_connected)
        self.dispatcher.settings["broker_connected"] = self.session.connected.is_set
        self.session.subscriptions = [self.topics.cmd_req] + self.topics.shared_requests(
            config["subscribe_broadcast"])
        self.ops = sorted(load_all()) + [CANCEL_OP]
        self._state_due = threading.Event()  # set by any thread, cleared by the monitor before it publishes
        self._wake = threading.Event()
        self._health: tuple[str, list] = ("ok", [])
        self._counter_error: Optional[str] = None
        qos_period = config["telemetry"]["qos_period_s"]
        self.qos_batch = QosBatch(qos_period, config["telemetry"]["sample_period_s"]) if qos_period > 0 else None
        self._shaping_thread: Optional[threading.Thread] = None
        self._shaping_lock = threading.Lock()
        self._monitor = threading.Thread(target=self._monitor_loop, name="rtk-qos-monitor", daemon=True)

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.session.start()
        self._monitor.start()
        self.history.start(self._stop)
        if self.probes:
            self.probes.start()
        self.start_shaping_upkeep(at_start=True)

    def start_shaping_upkeep(self, at_start: bool = False) -> None:
        """Once a shaping record exists (at start, or after a shaping command): only then is
        pyroute2 imported, so an agent that never shapes stays as small as before. At start, a
        change left pending by the previous process is reverted first."""
        with self._shaping_lock:
            if self._shaping_thread is None and os.path.exists(os.path.join(self.config["state_dir"],
                                                                            "shaping.json")):
                self._shaping_thread = threading.Thread(target=self._keep_shaping, args=(at_start,),
                                                        name="rtk-qos-shaping", daemon=True)
                self._shaping_thread.start()

    def _keep_shaping(self, recover: bool) -> None:
        """Revert a change the previous process left pending (`recover`), then keep the
        confirmed plan in place (link flaps, time windows) for as long as the agent runs."""
        from ..shaping.transaction import shaper
        settings = self.config["shaping"]
        tx = shaper(self.config["state_dir"], lambda kind, payload: self.event(kind, payload, None),
                    settings["confirm_timeout_s"])
        if recover:
            try:
                tx.recover()
            except Exception:
                log.exception("reverting the pending shaping change failed")
            self._request_state()
        hours = {name: settings[name] for name in ("business_hours", "peak_hours", "off_peak")}
        while not self._stop.wait(settings["check_every_s"]):
            try:
                if tx.maintain(hours):
                    self._request_state()
            except Exception:
                log.exception("keeping the confirmed shaping plan in place failed")

    def stop(self) -> None:
        """Within STOP_BUDGET_S: save the history (first, so nothing slow below can cost it), cancel
        commands (their results are kept in the outbox), drain briefly, go offline cleanly."""
        deadline = time.monotonic() + STOP_BUDGET_S

        def remaining(at_most: float = STOP_BUDGET_S) -> float:
            return max(0.0, min(at_most, deadline - time.monotonic()))
        self._stop.set()  # the history's saver starts its final save now
        self._wake.set()
        if not self.history.join(remaining(SAVE_ON_STOP_S)):
            log.error("history save to %s unfinished after %.0f s; the previous save stays in place",
                      self.history.path, SAVE_ON_STOP_S)
        log.info("stop: cancelling %d running or queued commands", len(self.dispatcher.running()))
        self.dispatcher.shutdown(remaining(COMMANDS_STOP_S))
        drained = time.monotonic() + remaining(DRAIN_ON_STOP_S)
        while len(self.outbox) and self.session.connected.is_set() and time.monotonic() < drained:
            time.sleep(0.05)
        offline = messages.envelope("lwt/1.0", self.device_id,
                                    {"status": "offline", "last_seen": messages.now_ms(), "reason": "normal"})
        self.session.stop(messages.encode(offline), remaining())
        self._monitor.join(remaining())
        if self.probes:
            self.probes.join(remaining())

    def _on_connected(self) -> None:
        online = messages.envelope("lwt/1.0", self.device_id, {"status": "online", "last_seen": messages.now_ms()})
        self.session.publish_now(self.topics.of("lwt"), messages.encode(online), qos=1, retain=True)
        attr = messages.envelope("attr/1.0", self.device_id, device.attributes(self.config))
        self.session.publish_now(self.topics.of("attr"), messages.encode(attr), qos=1, retain=True)
        self._request_state()

    def _on_message(self, msg) -> None:
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        self.dispatcher.handle(msg.payload, response_topic, correlation)

    # ---- replies (Replies interface) ----------------------------------------------------------

    def ack(self, request: messages.Request, message: dict) -> None:
        topic = request.reply_to or self.topics.cmd_ack
        if not self.session.publish_now(topic, messages.encode(message), qos=1,
                                        correlation=request.correlation_data):
            log.info("ack for %s not sent: broker unreachable (the result will follow)", request.id)

    def result(self, request: messages.Request, message: dict, durable: bool = True) -> None:
        topic = request.reply_to or self.topics.cmd_res
        self.outbox.put("result" if durable else "reply", topic, messages.encode(message), qos=1,
                        correlation=request.correlation_data)
        self._request_state()  # the set of running commands changed
        self.start_shaping_upkeep()

    def progress(self, request: messages.Request, op: str, payload: dict) -> None:
        event = {"event_type": "command_progress", "severity": "info", "id": request.id, "op": op,
                 "progress": payload}
        message = messages.envelope("evt.command_progress/1.0", self.device_id, event, request.trace)
        self.session.publish_now(self.topics.of("evt/command_progress"), messages.encode(message), qos=0)

    def event(self, event_type: str, payload: dict, request: Optional[messages.Request]) -> None:
        message = messages.envelope(f"evt.{event_type}/1.0", self.device_id, payload,
                                    request.trace if request else None)
        self.outbox.put("event", self.topics.of(f"evt/{event_type}"), messages.encode(message), qos=1)
        if event_type.startswith("shaping_"):
            # A timer revert happens after its command ended: state must show it now, not a period later.
            self._request_state()

    # ---- monitor ------------------------------------------------------------------------------

    def current_rates(self) -> dict:
        """Latest per-second rates of every present non-loopback link, from the sampler."""
        out = {}
        for name, r in self.services.sampler.rates().items():
            if name == "lo":
                continue
            out[name] = {"rx_mbps": round(mbps(r[0]), 3), "tx_mbps": round(mbps(r[1]), 3),
                         "rx_pps": round(r[2], 1), "tx_pps": round(r[3], 1),
                         "errors_ps": r[4] + r[5], "drops_ps": r[6] + r[7]}
        return out

    def state_payload(self) -> dict:
        level, reasons = self._health
        rates = self.current_rates()
        payload = {
            "health": level,
            "connection_status": self.session.status if self.session.status in (
                "connected", "disconnected", "connecting", "error") else "connecting",
            "capabilities": {"device_type": device.STATE_DEVICE_TYPES.get(
                self.config["device"]["device_type"], "router"), "diagnostics": self.ops},
            "health_reasons": reasons,
            "agent": {"version": device.__version__, "uptime_s": int(time.monotonic() - self.started),
                      "running": self.dispatcher.running(), "requests": self.dispatcher.request_counts(),
                      "outbox": {"queued": len(self.outbox), "dropped": self.outbox.dropped_counts()},
                      "counter_source": self.services.sampler.source,
                      "history": self.history.summary(),
                      "probe": self.probes.status() if self.probes else None,
                      "shaping": device.shaping_status(self.config["state_dir"])},
            "interfaces": {name: {k: v for k, v in r.items() if k.endswith(("mbps", "pps"))}
                           for name, r in rates.items()},
        }
        uptime = device.device_uptime_s()
        if uptime is not None:
            payload["uptime_s"] = uptime
        return payload

    def publish_state(self) -> None:
        message = messages.envelope("state/1.0", self.device_id, self.state_payload())
        self.session.publish_now(self.topics.of("state"), messages.encode(message), qos=1, retain=True)

    def publish_telemetry(self, reader) -> None:
        interfaces = device.network_telemetry(reader.read())
        if not interfaces:
            return  # the schema needs at least one interface
        message = messages.envelope("telemetry.network/1.0", self.device_id, {"interfaces": interfaces})
        payload = messages.encode(message)
        topic = self.topics.of("telemetry/network")
        if not self.session.publish_now(topic, payload, qos=0):
            self.outbox.put("telemetry", topic, payload, qos=1)

    def publish_qos(self, batch: dict) -> None:
        """One telemetry/qos batch (see qos_telemetry.py); lost while offline, like live telemetry."""
        primary = links.primary_interface()
        payload = {"uplink": primary.name if primary else None, **batch}
        message = messages.envelope(QOS_SCHEMA, self.device_id, payload)
        self.session.publish_now(self.topics.of("telemetry/qos"), messages.encode(message), qos=0)

    def _request_state(self) -> None:
        self._state_due.set()
        self._wake.set()

    def _monitor_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._run_monitor()
            except Exception:  # state and telemetry must outlive a bug in one reading
                log.exception("monitor loop failed; restarting it")
                self._stop.wait(5.0)

    def _run_monitor(self) -> None:
        telemetry = self.config["telemetry"]
        period = telemetry["sample_period_s"]
        reader = _core.CounterReader()
        now = time.monotonic()
        next_tick = next_health = now
        next_state = now + telemetry["state_period_s"]
        next_telemetry = now + telemetry["network_period_s"]
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_tick:
                try:
                    self.services.sampler.tick()
                    self._counter_error = None
                    rates = self.current_rates()
                    self.history.record(rates, int(time.time()))
                except OSError as exc:
                    self._counter_error = exc.strerror or str(exc)
                    rates = {}
                probes = self.probes.take() if self.probes else {}
                if probes:
                    self.history.record_probes(probes, int(time.time()))
                if self.qos_batch:
                    for batch in self.qos_batch.add(messages.now_ms(), rates, probes):
                        self.publish_qos(batch)
                self._last_tick = now
                next_tick += period
                if next_tick < now:
                    next_tick = now + period  # fell behind (suspend, overload): do not burst
            if now >= next_health:
                next_health = now + HEALTH_EVERY_S
                health = device.health(self.current_rates(), sum(self.outbox.dropped_counts().values()),
                                       self._counter_error, self.outbox.write_error)
                if health[0] != self._health[0]:
                    log.info("health %s -> %s %s", self._health[0], health[0], health[1])
                    self._state_due.set()
                self._health = health
            if self.session.connected.is_set() and (self._state_due.is_set() or now >= next_state):
                # Cleared before the state is read: a request arriving meanwhile is either in
                # this state or sets the flag again for the next one; none is lost.
                self._state_due.clear()
                next_state = now + telemetry["state_period_s"]
                self.publish_state()
            if now >= next_telemetry:
                next_telemetry = now + telemetry["network_period_s"]
                try:
                    self.publish_telemetry(reader)
                except OSError as exc:
                    log.warning("telemetry: %s", exc)
            # While offline the state waits for the connect callback, which wakes this loop.
            wake = min(next_tick, next_health, next_telemetry,
                       next_state if self.session.connected.is_set() else float("inf"))
            self._wake.wait(max(0.0, wake - time.monotonic()))
            self._wake.clear()
