"""A bounded, crash-safe on-disk queue of messages waiting for the broker.

Every result and event is written here before it is published and removed
only when the broker has acknowledged it (PUBACK), so neither a broker outage
nor an agent crash loses one. Telemetry is queued only while the broker is
unreachable. Messages leave in the order they entered.

One file per message, written to a temporary name, fsynced and renamed (then the
directory fsynced): a crash leaves either the whole message or nothing. Replies
that need no crash safety (rejections, resent results: the controller retries)
are kept in memory only, so a flood of bad requests costs no flash writes. When
a file cannot be written (disk full, read-only state directory) the message is
kept in memory too and `write_error` says why: it still leaves, but a crash
before then loses it. Past the bound (messages or bytes), the oldest telemetry
is dropped first, then the oldest replies and events, and results last.

Threads: any thread puts, the session's drain thread takes and removes; every
field is guarded by the one lock.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Optional

from ..durable import set_aside, write_atomic

log = logging.getLogger(__name__)

# Drop order when full: lowest rank first. A "reply" is an answer held in memory only.
RANKS = {"telemetry": 0, "event": 1, "state": 1, "reply": 1, "result": 2}
SUFFIX = ".msg"


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str
    topic: str
    qos: int
    retain: bool
    payload: bytes
    path: Optional[str]  # None: held in memory only
    correlation: Optional[bytes] = None  # MQTT 5 Correlation Data of the request answered

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic)


class Outbox:
    def __init__(self, directory: str, max_messages: int = 1000, max_bytes: int = 4 * 2**20):
        self.directory = directory
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.dropped = {kind: 0 for kind in RANKS}
        self.write_error: Optional[str] = None  # why the newest durable message has no file
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._entries: dict[int, Entry] = {}
        for name in os.listdir(directory):
            if name.endswith(".tmp"):
                os.unlink(os.path.join(directory, name))  # a write interrupted by a crash
            elif name.endswith(SUFFIX):
                entry = self._load(os.path.join(directory, name))
                if entry is not None:
                    self._entries[entry.seq] = entry
        self._next = max(self._entries, default=0) + 1
        self._bytes = sum(e.size for e in self._entries.values())
        if self._entries:
            log.info("outbox: %d messages kept from before the restart", len(self._entries))

    @staticmethod
    def _load(path: str) -> Optional[Entry]:
        try:
            with open(path, "rb") as f:
                header, _, payload = f.read().partition(b"\n")
            seq, kind, qos, retain, correlation, topic = header.decode().split(" ", 5)
            return Entry(int(seq), kind, topic, int(qos), retain == "1", payload, path,
                         bytes.fromhex(correlation) if correlation != "-" else None)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("outbox: setting aside unreadable %s: %s", path, exc)
            set_aside(path, family="")
            return None

    def put(self, kind: str, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
            correlation: Optional[bytes] = None) -> Entry:
        """Queue a message: on disk, except replies (kind "reply"), which need no crash safety."""
        if kind not in RANKS:
            raise ValueError(f"unknown outbox kind {kind!r}")
        with self._lock:
            seq = self._next
            self._next += 1
            path = None if kind == "reply" else self._write(seq, kind, topic, payload, qos, retain, correlation)
            entry = Entry(seq, kind, topic, qos, retain, payload, path, correlation)
            self._entries[seq] = entry
            self._bytes += entry.size
            self._enforce_bound()
            self._ready.notify_all()
            return entry

    def _write(self, seq: int, kind: str, topic: str, payload: bytes, qos: int, retain: bool,
               correlation: Optional[bytes]) -> Optional[str]:
        """The message's file, or None (kept in memory, reason logged) when it cannot be written."""
        path = os.path.join(self.directory, f"{seq:016d}{SUFFIX}")
        header = f"{seq} {kind} {qos} {int(retain)} {correlation.hex() if correlation else '-'} {topic}\n"
        try:
            write_atomic(path, header.encode() + payload)
        except OSError as exc:
            self.write_error = f"{self.directory}: {exc.strerror or exc}"
            log.error("outbox: %s #%d for %s not written to disk (%s): kept in memory only, so it is lost "
                      "if the agent stops before the broker takes it", kind, seq, topic, self.write_error)
            return None
        self.write_error = None
        return path

    def _enforce_bound(self) -> None:
        while len(self._entries) > self.max_messages or self._bytes > self.max_bytes:
            victim = min(self._entries.values(), key=lambda e: (RANKS[e.kind], e.seq))
            self.dropped[victim.kind] += 1
            log.warning("outbox full (%d messages, %d bytes): dropping %s #%d for %s", len(self._entries),
                        self._bytes, victim.kind, victim.seq, victim.topic)
            self._remove_locked(victim.seq)

    def _remove_locked(self, seq: int) -> None:
        entry = self._entries.pop(seq, None)
        if entry is None:
            return
        self._bytes -= entry.size
        if entry.path is None:
            return
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            pass

    def remove(self, seq: int) -> None:
        with self._lock:
            self._remove_locked(seq)

    def oldest(self, timeout: Optional[float] = None) -> Optional[Entry]:
        """The oldest message, waiting up to `timeout` for one."""
        with self._lock:
            if not self._entries:
                self._ready.wait(timeout)
            return self._entries[min(self._entries)] if self._entries else None

    def wake(self) -> None:
        with self._lock:
            self._ready.notify_all()

    def dropped_counts(self) -> dict:
        with self._lock:
            return dict(self.dropped)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes
