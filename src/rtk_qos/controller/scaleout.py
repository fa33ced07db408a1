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

Discovery: every instance's lobby, a clean session subscribed (QoS 0) to the fleet's
lwt/state/attr, hears devices announce themselves (retained); an unknown device is
recorded in `device_partitions` with its partition, and if this instance owns that
partition it subscribes to the device's topics at once. Every instance hears every
announcement, so an owner taking a partition later finds the device recorded. A new
device's non-retained messages published before its partition's session has subscribed
(from its lwt to the SUBACK, `discovery_ms` in /api/status) are not delivered to anyone.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
import uuid

from ..protocol.topics import PREFIX, parse_uplink
from .link import Link, uplink_topics
from .partitions import assign, partition_of
from .store import open_store

log = logging.getLogger(__name__)
LOBBY_KINDS = ("lwt", "state", "attr")


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
        self.http_url = f"http://{config['http']['host']}:{config['http']['port']}"
        # The ingest thread's: what it owns, its sessions, its devices.
        self.held: dict[int, int] = {}  # partition -> epoch
        self.links: dict[int, Link] = {}
        self.devices: dict[int, set[str]] = {}
        self.known: set[str] = set()  # devices recorded in device_partitions
        self._discovered: list[tuple[str, int, str, str, int]] = []
        self._arrived: dict[str, float] = {}  # lobby: device -> when its announcement came (monotonic)
        # From the membership thread (and a link taken over) to the ingest thread.
        self._control: collections.deque = collections.deque()
        self._acquiring: set[int] = set()
        self.counts = collections.Counter()
        base = f"{PREFIX}/{config['tenant']}/{config['site']}/+"
        self.lobby = Link(engine, f"{self.prefix}-lobby-{self.instance_id}", [f"{base}/{kind}" for kind in LOBBY_KINDS],
                          persistent=False, on_message=self._lobby_message)
        self.db = open_store(config["store"]["url"])  # the membership thread's own connection
        self.db.setup_partitions(self.count)
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._membership, name="rtk-qos-membership", daemon=True)

    def start(self) -> None:
        self.known.update(row[0] for row in self.engine.store.partition_devices())
        self.lobby.start()
        self._tick()  # this instance's share at once, before the first batch
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(timeout=10)
        for link in list(self.links.values()) + [self.lobby]:
            link.close()
        try:
            self.db.leave(self.instance_id)  # the others take our partitions without waiting for expiry
        except Exception:  # the database away: our leases expire instead
            log.exception("leaving the instances")
        finally:
            self.db.close()

    def status(self) -> dict:
        discovery = sorted(ms for link in self.links.values() for ms in link.subscribed_ms)
        return {"instance": self.instance_id, "partitions": sorted(self.held), "devices_owned":
                sum(len(d) for d in self.devices.values()), "devices_known": len(self.known),
                "counts": dict(self.counts),
                "discovery_ms": {"samples": len(discovery),
                                 "p50": discovery[len(discovery) // 2] if discovery else None,
                                 "max": discovery[-1] if discovery else None}}

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
        self.engine.wake.set()

    def _tick(self) -> None:
        me = self.instance_id
        self.db.heartbeat(me, self.http_url)
        mine = self.db.renew_leases(me, self.ttl_ms)
        held = dict(self.held)
        lost = [part for part, epoch in held.items() if mine.get(part) != epoch]
        if lost:
            self._post("lost", lost)
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
            elif part in mine and part not in self._acquiring:
                self.db.release_lease(part, me, mine[part])

    # ---- the ingest thread --------------------------------------------------------------------

    def control(self) -> None:
        """Apply the partitions acquired, released or lost (between transactions)."""
        while self._control:
            kind, *args = self._control.popleft()
            if kind == "acquire":
                self._acquire(*args)
            elif kind == "release":
                part = args[0]
                epoch = self.held.get(part)
                if epoch is not None:
                    self._drop(part)
                    self.engine.store.release_lease(part, self.instance_id, epoch)
                    self.counts["released"] += 1
                    log.info("released partition %d", part)
            else:
                self.lost(args[0])

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
        link = Link(engine, f"{self.prefix}-part-{part:03d}",
                    [topic for device, _, tenant, site in rows for topic in uplink_topics(tenant, site, device)],
                    part=part, on_taken_over=lambda link: self._post("lost", [link.part]))
        self.links[part] = link
        link.start()
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
        self.links.pop(part).close()
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

    def _lobby_message(self, _client, _userdata, msg) -> None:
        # Network thread: only a device not seen yet goes to the ingest thread.
        where = parse_uplink(msg.topic)
        if where is None or where.device_id in self.known or where.device_id in self._arrived:
            return
        self._arrived[where.device_id] = time.monotonic()
        self.engine.queue((msg.topic, b"", 1, 0, self.lobby))  # as QoS 1: never dropped for a full inbox

    def discover(self, topic: str, now_ms: int) -> None:
        """In the ingest transaction: record a device heard in the lobby, subscribe if ours."""
        where = parse_uplink(topic)
        device_id = where.device_id
        if device_id in self.known:
            return
        part = partition_of(device_id, self.count)
        self.engine.store.record_devices([(device_id, part, where.tenant, where.site, now_ms)])
        self.known.add(device_id)
        self.counts["discovered"] += 1
        if part in self.held:
            self.devices[part].add(device_id)
            self.links[part].add(uplink_topics(where.tenant, where.site, device_id), self._arrived.get(device_id))
