"""The MQTT session: connect, reconnect with backoff, subscribe, publish, and drain the outbox.

paho-mqtt 2.x (callback API version 2) does the protocol; this module owns the
policy: a stable client id and a persistent session (commands sent while the
agent was away still arrive), Last Will `offline`, reconnect 1 s doubling to
60 s with jitter, and an ordered outbox drained only while connected.

Threads: the network thread runs paho's loop and its callbacks (and so the
dispatcher's intake); the drain thread publishes the outbox; `publish_now` is
called from any thread (paho's publish takes its own lock). `connected` is an
Event; `status`, `last_error` and `connects` are written by the network thread
only and read elsewhere as plain values.
"""
from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from typing import Callable, Optional

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..protocol import messages
from .outbox import Outbox

log = logging.getLogger(__name__)
PUBACK_WAIT_S = 10.0
OFFLINE_WAIT_S = 2.0


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random = random.Random()) -> float:
    """Exponential backoff with jitter: the ceiling doubles from `low` to `high`; the delay is
    drawn from the upper half, so a fleet reconnecting after an outage spreads out."""
    ceiling = min(high, low * (2 ** min(attempt, 30)))
    return rng.uniform(ceiling / 2, ceiling)


def _no_delay(client: mqtt.Client) -> None:
    """Disable Nagle: paho writes a packet in pieces, and Nagle holding the last piece until the
    broker's delayed ACK (40 ms on Linux) would make every ack 40 ms late."""
    sock = client.socket()
    raw = getattr(sock, "_sock", sock)  # under TLS, the socket paho wraps
    if raw is not None and raw.family in (socket.AF_INET, socket.AF_INET6):
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def delivered(info: mqtt.MQTTMessageInfo, wait_s: float = 0.0) -> bool:
    """Whether the broker has the message (its PUBACK for QoS 1), waiting up to `wait_s`. A publish
    paho reports failed (the connection lost under it) is not delivered, not an error: the outbox
    keeps a result for the next connection."""
    try:
        if wait_s > 0:
            info.wait_for_publish(timeout=wait_s)
        return info.is_published()
    except RuntimeError:
        return False


class Session:
    def __init__(self, config: dict, lwt_topic: str, device_id: str, outbox: Outbox,
                 on_message: Callable, on_connected: Callable[[], None]):
        self.config = config
        self.broker = config["broker"]
        self.device_id = device_id
        self.outbox = outbox
        self.lwt_topic = lwt_topic
        self.subscriptions: list[str] = []
        self._on_message = on_message
        self._on_connected = on_connected
        self.mqtt5 = self.broker["protocol"] == "5"
        self.connected = threading.Event()
        self.status = "connecting"
        self.last_error: Optional[str] = None
        self.connects = 0
        self._stop = threading.Event()
        self.client = self._make_client()
        self._threads = [threading.Thread(target=self._network, name="rtk-qos-mqtt", daemon=True),
                         threading.Thread(target=self._drain, name="rtk-qos-outbox", daemon=True)]

    def _make_client(self) -> mqtt.Client:
        broker = self.broker
        if self.mqtt5:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=broker["client_id"],
                                 protocol=mqtt.MQTTv5)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=broker["client_id"],
                                 clean_session=False, protocol=mqtt.MQTTv311)
        if broker["username"]:
            client.username_pw_set(broker["username"], broker["password"] or None)
        if broker["tls"]:
            client.tls_set(ca_certs=broker["ca_file"] or None, certfile=broker["cert_file"] or None,
                           keyfile=broker["key_file"] or None, cert_reqs=ssl.CERT_REQUIRED)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        # Commands arrive at most this many at a time; the rest wait at the broker.
        client.max_inflight_messages_set(20)
        return client

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    # ---- connection ---------------------------------------------------------------------------

    def _connect_once(self) -> None:
        broker = self.broker
        # The will says when we were last seen: the moment of this connect.
        offline = messages.envelope("lwt/1.0", self.device_id,
                                    {"status": "offline", "last_seen": messages.now_ms(), "reason": "timeout"})
        self.client.will_set(self.lwt_topic, messages.encode(offline), qos=1, retain=True)
        if self.mqtt5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = broker["session_expiry_s"]
            self.client.connect(broker["host"], broker["port"], broker["keepalive_s"], clean_start=False,
                                properties=props)
        else:
            self.client.connect(broker["host"], broker["port"], broker["keepalive_s"])
        _no_delay(self.client)

    def _network(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self.status = "connecting"
            try:
                self._connect_once()
            except (OSError, ValueError) as exc:  # refused, unreachable, TLS verification failed
                self._failed(f"connect to {self.broker['host']}:{self.broker['port']}: {exc}")
            else:
                while not self._stop.is_set():
                    rc = self.client.loop(timeout=0.5)
                    if rc != mqtt.MQTT_ERR_SUCCESS:
                        break
                    if self.connected.is_set():
                        attempt = 0
                if self._stop.is_set():
                    break
                self._lost(f"connection lost ({mqtt.error_string(rc)})")
            delay = backoff_delay(attempt, self.broker["reconnect_min_s"], self.broker["reconnect_max_s"])
            attempt += 1
            log.info("reconnecting in %.1f s", delay)
            self._stop.wait(delay)

    def _failed(self, why: str) -> None:
        self.last_error = why
        self.status = "error"
        log.warning("%s", why)

    def _lost(self, why: str) -> None:
        self.connected.clear()
        self.status = "disconnected"
        self.last_error = why
        log.warning("%s", why)

    def _connected(self, client, _userdata, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            self._failed(f"broker refused the connection: {reason_code}")
            client.disconnect()
            return
        self.connects += 1
        self.status = "connected"
        log.info("connected to %s:%s (MQTT %s)", self.broker["host"], self.broker["port"], self.broker["protocol"])
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        self.connected.set()
        self._on_connected()
        self.outbox.wake()

    def _message(self, _client, _userdata, msg) -> None:
        # An exception escaping a paho callback would end the network loop: the agent would
        # stay connected and deaf. A bug in handling one message must cost only that message.
        try:
            self._on_message(msg)
        except Exception:
            log.exception("handling a message on %s failed", msg.topic)

    def _disconnected(self, _client, _userdata, _flags, reason_code, _props) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            self.status = "disconnected"

    # ---- publishing ---------------------------------------------------------------------------

    def _properties(self, correlation: Optional[bytes]) -> Optional[Properties]:
        if not (self.mqtt5 and correlation is not None):
            return None
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = correlation
        return props

    def publish_now(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                    correlation: Optional[bytes] = None) -> bool:
        """Publish without persisting (acks, progress, live telemetry); False when offline."""
        if not self.connected.is_set():
            return False
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=self._properties(correlation))
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _drain(self) -> None:
        """Publish outbox messages oldest first, one at a time, removing each on PUBACK."""
        while not self._stop.is_set():
            try:
                self._drain_one()
            except Exception:  # a full disk or a bug must not stop delivery for good
                log.exception("outbox drain failed; retrying")
                self._stop.wait(1.0)

    def _drain_one(self) -> None:
        if not self.connected.wait(timeout=0.5):
            return
        entry = self.outbox.oldest(timeout=0.5)
        if entry is None or not self.connected.is_set():
            return
        info = self.client.publish(entry.topic, entry.payload, qos=entry.qos, retain=entry.retain,
                                   properties=self._properties(entry.correlation))
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            time.sleep(0.1)
            return
        if entry.qos == 0:
            self.outbox.remove(entry.seq)
            return
        deadline = time.monotonic() + PUBACK_WAIT_S
        while not delivered(info, 0.2):
            if not self.connected.is_set() or self._stop.is_set() or time.monotonic() >= deadline:
                return
        self.outbox.remove(entry.seq)

    def stop(self, offline_payload: Optional[bytes] = None, wait_s: float = 5.0) -> None:
        """Clean shutdown within `wait_s`: publish `offline` (retained) so the Last Will is not
        needed, then disconnect."""
        deadline = time.monotonic() + wait_s
        if offline_payload is not None and self.connected.is_set():
            info = self.client.publish(self.lwt_topic, offline_payload, qos=1, retain=True)
            delivered(info, min(deadline - time.monotonic(), OFFLINE_WAIT_S))
        self._stop.set()
        self.outbox.wake()  # the sender thread waits for a message to send: it sees the stop now
        self.client.disconnect()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
