"""One MQTT session of the controller: a paho client whose network thread only queues what it
receives for the engine's ingest thread.

A persistent link (the single instance's, or a partition's) has a stable client id, clean
start off, a long session expiry, QoS 1 subscriptions and manual acks: the engine
acknowledges a message only after its store transaction commits, so whatever the broker
holds for the session (queued while nobody is connected, or sent and not acknowledged)
goes to whoever connects with that client id next. MQTT 5 for its Receive Maximum: the
broker may have that many QoS 1 messages unacknowledged with us (mosquitto gives 3.1.1
clients 20), so one store transaction covers many. The lobby (scaleout.py) is not
persistent: it only hears devices announce themselves.
"""
from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Callable, Optional

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..protocol.topics import PREFIX

log = logging.getLogger(__name__)
UPLINK_KINDS = ("lwt", "state", "attr", "telemetry/+", "evt/+", "cmd/ack", "cmd/res")
SUBSCRIBE_CHUNK = 500  # topic filters per SUBSCRIBE packet
SESSION_TAKEN_OVER = 142  # MQTT 5 reason code: another connection took our client id


def uplink_topics(tenant: str, site: str, device: str) -> list[str]:
    return [f"{PREFIX}/{tenant}/{site}/{device}/{kind}" for kind in UPLINK_KINDS]


class Link:
    def __init__(self, engine, client_id: str, topics: list[str], part: Optional[int] = None,
                 persistent: bool = True, on_message: Optional[Callable] = None,
                 on_taken_over: Optional[Callable[["Link"], None]] = None):
        self.engine = engine
        self.client_id = client_id
        self.part = part
        self.persistent = persistent
        self.closed = False
        self.connected = threading.Event()
        self.on_taken_over = on_taken_over
        self._topics = list(topics)
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[float, int]] = {}  # SUBSCRIBE mid -> (sent at, topic filters)
        self.subscribed_ms: list[float] = []  # from add() to the broker's SUBACK, per call
        b = engine.config["broker"]
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                             manual_ack=persistent)
        if b["username"]:
            client.username_pw_set(b["username"], b["password"] or None)
        if b["tls"]:
            client.tls_set(ca_certs=b["ca_file"] or None, certfile=b["cert_file"] or None,
                           keyfile=b["key_file"] or None, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = on_message or self._on_message
        self.client = client

    def start(self) -> None:
        b = self.engine.config["broker"]
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = b["session_expiry_s"] if self.persistent else 0
        props.ReceiveMaximum = b["receive_maximum"]
        self.client.connect_async(b["host"], b["port"], b["keepalive_s"], clean_start=not self.persistent,
                                  properties=props)
        self.client.loop_start()

    def close(self) -> None:
        """Disconnect (the broker keeps a persistent session) and stop the network thread: what
        is still in the engine's inbox from this link is neither stored nor acknowledged."""
        self.closed = True
        self.client.disconnect()
        self.client.loop_stop()

    def add(self, topics: list[str], since: Optional[float] = None) -> None:
        """Subscribe to more topic filters (now if connected, and at every connect); `since`: the
        monotonic time from which `subscribed_ms` counts (default: now)."""
        with self._lock:
            self._topics += topics
            if self.connected.is_set():
                self._subscribe(topics, since)

    def _subscribe(self, topics: list[str], since: Optional[float] = None) -> None:
        # A partition's session: retained messages only for a subscription it does not have yet
        # (a partition taken over has its devices' lwt, state and attr stored already).
        options = mqtt.SubscribeOptions(qos=1 if self.persistent else 0, retainHandling=int(self.part is not None))
        for first in range(0, len(topics), SUBSCRIBE_CHUNK):
            chunk = topics[first:first + SUBSCRIBE_CHUNK]
            rc, mid = self.client.subscribe([(topic, options) for topic in chunk])
            if rc == mqtt.MQTT_ERR_SUCCESS:
                self._pending[mid] = (since or time.monotonic(), len(chunk))

    def _on_connect(self, client, _userdata, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            log.warning("%s: broker refused the connection: %s", self.client_id, reason_code)
            return
        with self._lock:
            self._subscribe(self._topics)
            self.connected.set()
        log.info("%s connected", self.client_id)

    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _props) -> None:
        sent = self._pending.pop(mid, None)
        if sent is not None:
            self.subscribed_ms.append((time.monotonic() - sent[0]) * 1000)
            del self.subscribed_ms[:-1000]
        refused = [code for code in reason_codes if code.is_failure]
        if refused:
            log.warning("%s: broker refused %d subscription(s): %s", self.client_id, len(refused), refused[0])

    def _on_disconnect(self, client, _userdata, _flags, reason_code, _props) -> None:
        self.connected.clear()
        if reason_code == SESSION_TAKEN_OVER and self.on_taken_over is not None and not self.closed:
            # Another instance connected with our client id (it holds the partition now): no
            # reconnecting (paho stops once disconnect() is called), nothing more acknowledged.
            self.closed = True
            client.disconnect()
            self.on_taken_over(self)

    def _on_message(self, _client, _userdata, msg) -> None:
        # The network thread only queues: parsing and storing happen in the ingest thread.
        self.engine.queue((msg.topic, msg.payload, msg.qos, msg.mid, self))

    def ack(self, mid: int, qos: int) -> None:
        if self.persistent and not self.closed:
            self.client.ack(mid, qos)
