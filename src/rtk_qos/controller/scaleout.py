"""Several controller instances over one PostgreSQL and one broker, with nothing lost when one dies.

Not `$share`: mosquitto deals a shared subscription's messages round-robin (a device's
stream would have several owners) and does not hand a dead member's unacknowledged QoS 1
messages to the others (mosquitto issue 2662). Instead the fleet is split into
`scale.partitions` partitions by a stable hash of the device id (partitions.py), and each
partition is a persistent MQTT session of its own (client id `<prefix>-part-NNN`, clean
start off, long expiry) with exact subscriptions for its devices' uplink topics. While
nobody is connected with that id the broker keeps the partition's queued and
unacknowledged messages in the session, and gives them to whichever instance connects with
it next: a partition taken over by a survivor loses nothing, and idempotent ingest makes
the redelivery harmless.

Ownership: `partition_leases` (partition, owner, epoch, expiry, on the database's clock).
A membership thread heartbeats the instance, renews its leases every `scale.renew_s` (they
expire after `scale.lease_s`), deals the partitions among the live instances
(partitions.assign), releases those dealt to another and takes those dealt to it once free
or expired. Every ingest transaction is fenced: it locks this instance's unexpired leases
(shared, until the commit) and rolls back, acknowledging nothing, if any partition it holds
has moved on (LeaseLost). A partition's devices, their monitoring sessions and open alert
episodes belong to its owner: on taking one, the instance loads them (the sessions' resume,
scoped to the partition) before connecting its session.

Discovery: every instance's lobby, a session of its own that ends with its connection,
subscribed to the fleet's lwt/state/attr, hears devices announce themselves (retained); an
unknown device is recorded in `device_partitions` with its partition (in the ingest
transaction, the lobby's messages acknowledged after it), and if this instance owns that
partition it subscribes the partition's session to the device's topics at once. Every
instance hears every announcement, so an owner taking a partition later finds the device
recorded. A new device's non-retained messages published before its partition's session
has subscribed (`discovery_ms` in /api/status: from the lobby's message ingested to the
broker's SUBACK) reach no one.

MQTT goes through the receiver process (receiver.py): the lobby and each partition held are
sessions of it; a partition given up is closed there without acknowledging what is pending.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
import uuid

from ..protocol.topics import PREFIX, parse_uplink
from .partitions import assign, partition_of
from .receiver import Down, Subscribed
from .store import open_store

log = logging.getLogger(__name__)
UPLINK_KINDS = ("lwt", "state", "attr", "telemetry/+", "evt/+", "cmd/ack", "cmd/res")
LOBBY_KINDS = ("lwt", "state", "attr")
LOBBY = "lobby"  # the receiver session of the lobby; a partition's is part-NNN
TAKEN_OVER = "Session taken over"
NOTES = "rtk_qos_notes"  # the NOTIFY channel of the live stream's notes
NOTIFY_MAX = 7000  # bytes per NOTIFY payload (PostgreSQL's limit is 8000)  # MQTT 5 reason of a DISCONNECT: another connection took our client id


def uplink_topics(tenant: str, site: str, device: str) -> list[str]:
    return [f"{PREFIX}/{tenant}/{site}/{device}/{kind}" for kind in UPLINK_KINDS]


def session_name(part: int) -> str:
    return f"part-{part:03d}"


class LeaseLost(Exception):
    """Another instance owns these partitions now: the transaction must not commit."""

    def __init__(self, parts: list[int]):
        super().__init__(f"partition(s) {parts} no longer held")
        self.parts = parts


def instance_id() -> str:
    """Unique per process: a restarted instance is a new member."""
    host = "".join(c for c in os.uname().nodename.lower() if c.isalnum() or c == "-")[:30] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Scaleout:
    def __init__(self, engine):
        config = engine.config
        s = config["scale"]
        self.engine = engine
        self.count = s["partitions"]
        self.instance_id = s["instance_id"] or instance_id()
        self.ttl_ms = int(s["lease_s"] * 1000)
        self.renew_s = s["renew_s"]
        self.prefix = s["client_prefix"]
        self.http_url = s["http_url"]  # set by main once the API listens, when not configured
        # The ingest thread's: what it owns, its devices, the devices it knows of.
        self.held: dict[int, int] = {}  # partition -> epoch
        self.sessions: set[str] = set()  # the receiver sessions of the partitions held
        self.devices: dict[int, set[str]] = {}
        self.known: set[str] = set()  # devices recorded in device_partitions
        self._subscribing: dict[str, float] = {}  # a new device's first topic -> when discovered (monotonic)
        self.discovery_ms: collections.deque = collections.deque(maxlen=1000)
        # From the membership thread to the ingest thread.
        self._control: collections.deque = collections.deque()
        self._acquiring: set[int] = set()
        self._releasing: dict[str, tuple[int, int, float]] = {}  # session closing -> (partition, epoch, since)
        self.counts = collections.Counter()
        base = f"{PREFIX}/{config['tenant']}/{config['site']}/+"
        self.lobby_topics = [f"{base}/{kind}" for kind in LOBBY_KINDS]
        self.db = open_store(config["store"]["url"])  # the membership thread's own connection
        self.db.setup_partitions(self.count)
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._membership, name="rtk-qos-membership", daemon=True)
        self._listener = threading.Thread(target=self._listen, name="rtk-qos-notes", daemon=True)

    def _open(self, name: str, client_id: str, topics: list[str], expiry_s: int) -> None:
        b = self.engine.config["broker"]
        self.engine.receiver.open(name, b, client_id, topics, expiry_s, b["receive_maximum"])

    def start(self) -> None:
        """Once the receiver runs, before the ingest thread starts."""
        self.known.update(row[0] for row in self.engine.store.partition_devices())
        # The lobby's session ends with its connection (expiry 0): a new one hears every retained lwt.
        self._open(LOBBY, f"{self.prefix}-lobby-{self.instance_id}", self.lobby_topics, 0)
        self._tick()  # this instance's share at once, before the first batch
        self._thread.start()
        self._listener.start()

    def stop(self) -> None:
        """After the receiver has closed every session."""
        self.stopping.set()
        for thread in (self._thread, self._listener):
            if thread.is_alive():
                thread.join(timeout=10)
        try:
            self.db.leave(self.instance_id)  # the others take our partitions without waiting for expiry
        except Exception:  # the database away: our leases expire instead
            log.exception("leaving the instances")
        finally:
            self.db.close()

    def status(self) -> dict:
        discovery = sorted(self.discovery_ms)
        return {"instance": self.instance_id, "partitions": sorted(self.held), "devices_owned":
                sum(len(d) for d in self.devices.values()), "devices_known": len(self.known),
                "counts": dict(self.counts),
                "discovery_ms": {"samples": len(discovery),
                                 "p50": discovery[len(discovery) // 2] if discovery else None,
                                 "max": discovery[-1] if discovery else None}}

    # ---- the live stream: every instance's notes on every instance's /api/events ----------------

    def share_notes(self, notes: list[tuple[str, dict]]) -> None:
        """Inside the ingest transaction: the batch's notes to the other instances (at the commit)."""
        payloads, chunk, size = [], [], 0
        for kind, data in notes:
            encoded = json.dumps([kind, data], separators=(",", ":"))
            if len(encoded) > NOTIFY_MAX - 100:
                self.counts["notes_too_big_to_share"] += 1  # still on this instance's own stream
                continue
            if size + len(encoded) > NOTIFY_MAX - 100:
                payloads.append(self._payload(chunk))
                chunk, size = [], 0
            chunk.append(encoded)
            size += len(encoded) + 1
        if chunk:
            payloads.append(self._payload(chunk))
        self.engine.store.notify(NOTES, payloads)

    def _payload(self, encoded_notes: list[str]) -> str:
        return f'{{"from":{json.dumps(self.instance_id)},"notes":[{",".join(encoded_notes)}]}}'

    def _listen(self) -> None:
        """The other instances' notes, to this instance's live stream."""
        import psycopg
        while not self.stopping.is_set():
            try:
                with psycopg.connect(self.engine.config["store"]["url"], autocommit=True) as db:
                    db.execute(f"LISTEN {NOTES}")
                    while not self.stopping.is_set():
                        for notice in db.notifies(timeout=1.0):
                            shared = json.loads(notice.payload)
                            if shared["from"] != self.instance_id:
                                for kind, data in shared["notes"]:
                                    self.engine.on_note(kind, data)
            except Exception:
                log.exception("listening to the other instances' notes")
                self.stopping.wait(1.0)

    # ---- the membership thread ----------------------------------------------------------------

    def _membership(self) -> None:
        while not self.stopping.wait(self.renew_s):
            try:
                self._tick()
            except Exception:  # the database away a while: our leases expire, fencing stops ingest
                log.exception("membership")
                self.counts["membership_failures"] += 1

    def _post(self, *event) -> None:
        self._control.append(event)
        self.engine._wake()  # its wake-up pipe: safe from any thread

    def _tick(self) -> None:
        me = self.instance_id
        self.db.heartbeat(me, self.http_url)
        mine = self.db.renew_leases(me, self.ttl_ms)
        held = dict(self.held)
        lost = [part for part, epoch in held.items() if mine.get(part) != epoch]
        if lost:
            self._post("lost", lost)
        for name, (part, epoch, since) in list(self._releasing.items()):
            if time.monotonic() - since > self.ttl_ms / 1000 and self._releasing.pop(name, None):
                self._free(part, epoch, self.db)  # closed while not connected: no Down to wait for
        owners = assign(self.count, self.db.live_instances(self.ttl_ms))
        for part in range(self.count):
            if owners.get(part) == me:
                if part in held or part in self._acquiring:
                    continue
                epoch = mine[part] if part in mine else self.db.acquire_lease(part, me, self.ttl_ms)
                if epoch is not None:
                    self._acquiring.add(part)
                    self._post("acquire", part, epoch)
            elif part in held:
                self._post("release", part)  # dealt to a newcomer: it takes it once we let go
            elif part in mine and part not in self._acquiring and session_name(part) not in self._releasing:
                self.db.release_lease(part, me, mine[part])

    # ---- the ingest thread --------------------------------------------------------------------

    def control(self) -> None:
        """Apply the partitions acquired, released or lost (between transactions)."""
        while self._control:
            kind, *args = self._control.popleft()
            try:
                if kind == "acquire":
                    self._acquire(*args)
                elif kind == "release":
                    self._release(args[0])
                else:
                    self.lost(args[0])
            except Exception:  # the database away: the membership thread asks again at its next tick
                log.exception("partition %s: %s failed", args[0], kind)
                self.counts[f"{kind}_failures"] += 1

    def _release(self, part: int) -> None:
        """Close the partition's session; its lease is freed once the session is down (a newcomer
        connecting earlier would take the session over from under us), or expires."""
        epoch = self.held.get(part)
        if epoch is not None:
            self._releasing[session_name(part)] = (part, epoch, time.monotonic())
            self._drop(part)

    def _acquire(self, part: int, epoch: int) -> None:
        engine = self.engine
        try:
            rows = engine.store.partition_devices([part])
            ids = {row[0] for row in rows}
            with engine.store.transaction():
                engine.fleet.adopt(engine.store.devices_in(sorted(ids)))
                resumed = engine.sessions.resume(time.time_ns() // 1_000_000, ids)
                engine.sessions.flush()
        finally:
            self._acquiring.discard(part)
        self.held[part] = epoch
        self.devices[part] = ids
        self.known.update(ids)
        name = session_name(part)
        self.sessions.add(name)
        self._open(name, f"{self.prefix}-{name}",
                   [topic for device, _, tenant, site in rows for topic in uplink_topics(tenant, site, device)],
                   self.engine.config["broker"]["session_expiry_s"])
        self.counts["acquired"] += 1
        log.info("acquired partition %d (epoch %d): %d devices, %d active sessions", part, epoch, len(ids), resumed)

    def lost(self, parts: list[int]) -> None:
        for part in parts:
            if part in self.held:
                self._drop(part)
                self.counts["lost"] += 1
                log.warning("partition %d is owned by another instance now", part)

    def _drop(self, part: int) -> None:
        """Stop hearing a partition and forget its devices and sessions (all stored at the last commit)."""
        name = session_name(part)
        self.sessions.discard(name)
        self.engine.receiver.close(name)  # nothing pending acknowledged: it goes to the next owner
        ids = self.devices.pop(part)
        self.engine.fleet.forget(ids)
        self.engine.sessions.forget(ids)
        for device_id in ids:
            self.engine.latest.pop(device_id, None)
        del self.held[part]

    def fence(self) -> None:
        """Inside the ingest transaction: raise LeaseLost unless every partition held is still ours."""
        valid = self.engine.store.fence(self.instance_id)
        lost = [part for part, epoch in self.held.items() if valid.get(part) != epoch]
        if lost:
            raise LeaseLost(lost)

    @property
    def maintains(self) -> bool:
        """Whether this instance runs the rollups and pruning (it holds partition 0)."""
        return 0 in self.held

    def owns(self, session: str) -> bool:
        """Whether a batch from this receiver session is ours to store and acknowledge."""
        return session == LOBBY or session in self.sessions

    def on_event(self, event) -> None:
        """A partition session's event from the receiver."""
        if isinstance(event, Subscribed):
            since = self._subscribing.pop(event.topics[0], None) if event.topics else None
            if since is not None:
                self.discovery_ms.append((time.monotonic() - since) * 1000)
        elif isinstance(event, Down) and event.session in self._releasing:
            part, epoch, _ = self._releasing.pop(event.session)
            self._free(part, epoch, self.engine.store)
        elif isinstance(event, Down) and TAKEN_OVER in event.reason and event.session in self.sessions:
            # Another instance connected with this partition's client id: it holds the lease now.
            self.lost([int(event.session[len("part-"):])])

    def _free(self, part: int, epoch: int, db) -> None:
        db.release_lease(part, self.instance_id, epoch)
        self.counts["released"] += 1
        log.info("released partition %d", part)

    def discover(self, topic: str, now_ms: int) -> None:
        """In the ingest transaction: record a device heard in the lobby, subscribe if ours."""
        where = parse_uplink(topic)
        if where is None or where.device_id in self.known:
            return
        device_id = where.device_id
        part = partition_of(device_id, self.count)
        self.engine.store.record_devices([(device_id, part, where.tenant, where.site, now_ms)])
        self.known.add(device_id)
        self.counts["discovered"] += 1
        if part in self.held:
            self.devices[part].add(device_id)
            topics = uplink_topics(where.tenant, where.site, device_id)
            self._subscribing[topics[0]] = time.monotonic()
            self.engine.receiver.subscribe(session_name(part), topics)
