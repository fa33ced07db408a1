"""The embedded store: one SQLite file in WAL mode (readers never wait for the writer).

Durability: `synchronous=NORMAL` in WAL mode survives a crash of the controller
(kill -9: every committed transaction is in the WAL, in the kernel's page cache); a
power cut may lose the last transactions, which `synchronous = "full"` prevents at
the cost of an fsync per batch. Migrations are numbered and run in order at open
(`PRAGMA user_version` holds the schema version).
"""
from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional, Sequence

from . import Retention, SessionConflict, StoreError
from .sql import SqlStore, upsert, values

# Each entry moves the schema one version up; never edit one that has shipped, add the next.
MIGRATIONS: list[str] = [
    # 1: fleet, tiers, events, alerts, sessions, commands
    """
    CREATE TABLE devices (
        device_id TEXT PRIMARY KEY, tenant TEXT, site TEXT, status TEXT, status_since_ms INTEGER,
        reason TEXT, last_seen_ms INTEGER, health TEXT, health_reasons TEXT, capabilities TEXT,
        attr TEXT, state TEXT, telemetry TEXT, updated_ms INTEGER);
    CREATE TABLE series (id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, name TEXT NOT NULL,
        UNIQUE (device_id, name));
    CREATE TABLE samples_raw (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL,
        PRIMARY KEY (series_id, ts)) WITHOUT ROWID;
    CREATE TABLE samples_minute (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, n INTEGER NOT NULL,
        total REAL NOT NULL, low REAL NOT NULL, high REAL NOT NULL, PRIMARY KEY (series_id, ts)) WITHOUT ROWID;
    CREATE TABLE samples_hour (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, n INTEGER NOT NULL,
        total REAL NOT NULL, low REAL NOT NULL, high REAL NOT NULL, PRIMARY KEY (series_id, ts)) WITHOUT ROWID;
    -- Buckets that got samples after they were rolled up: recomputed at the next rollup.
    CREATE TABLE rollup_dirty (tier TEXT NOT NULL, series_id INTEGER NOT NULL, ts INTEGER NOT NULL,
        PRIMARY KEY (tier, series_id, ts)) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE events (id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, event_type TEXT NOT NULL,
        ts INTEGER NOT NULL, severity TEXT, digest INTEGER NOT NULL, payload TEXT NOT NULL,
        UNIQUE (device_id, digest));
    CREATE INDEX events_ts ON events (ts);
    CREATE TABLE alerts (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
        device_id TEXT NOT NULL, session_id TEXT, metric TEXT, target TEXT, severity TEXT NOT NULL,
        state TEXT NOT NULL, opened_ms INTEGER NOT NULL, closed_ms INTEGER, value REAL, threshold REAL,
        threshold_type TEXT, unit TEXT, description TEXT, detail TEXT, updated_ms INTEGER NOT NULL);
    CREATE INDEX alerts_opened ON alerts (opened_ms);
    CREATE INDEX alerts_device ON alerts (device_id, opened_ms);
    CREATE TABLE sessions (id TEXT PRIMARY KEY, device_id TEXT NOT NULL, status TEXT NOT NULL,
        config TEXT NOT NULL, started_ms INTEGER NOT NULL, ends_ms INTEGER NOT NULL, stopped_ms INTEGER,
        stop_reason TEXT, progress TEXT, evaluations INTEGER NOT NULL DEFAULT 0);
    -- The store itself refuses a second active session on a device.
    CREATE UNIQUE INDEX sessions_one_active ON sessions (device_id) WHERE status = 'active';
    CREATE TABLE commands (id TEXT PRIMARY KEY, target TEXT NOT NULL, op TEXT NOT NULL, args TEXT NOT NULL,
        dialect TEXT NOT NULL, sent_ms INTEGER NOT NULL, deadline_ms INTEGER NOT NULL, status TEXT NOT NULL,
        updated_ms INTEGER NOT NULL);
    CREATE TABLE replies (command_id TEXT NOT NULL, device_id TEXT NOT NULL, accepted INTEGER, ack TEXT,
        acked_ms INTEGER, status TEXT, result TEXT, finished_ms INTEGER, duplicates INTEGER NOT NULL DEFAULT 0,
        late INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (command_id, device_id)) WITHOUT ROWID;
    """,
]
CHECKPOINT_S = 1.0
WAL_RESTART_FRAMES = 16384  # 64 MiB of 4 KiB pages: a WAL this long is restarted by the writer


class SQLiteStore(SqlStore):
    JOIN = "CROSS JOIN"  # SQLite keeps the left table of a CROSS JOIN outer: series drives

    def __init__(self, path: str, retention: Retention = Retention(), synchronous: str = "normal",
                 writer: bool = False):
        if synchronous not in ("normal", "full"):
            raise StoreError(f"store.synchronous: {synchronous!r} is not normal or full")
        super().__init__(retention)
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # One instance is used by one thread; check_same_thread off only lets the owner change.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        self._checkpointer: Optional[threading.Thread] = None
        self._closing = threading.Event()
        self._wal_long = threading.Event()
        if writer:
            # SQLite checkpoints (and fsyncs) in the committing thread by default: hundreds of ms
            # now and then, for ingest and the live stream. A thread of its own does it instead.
            self.db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="rtk-qos-checkpoint",
                                                  daemon=True)
            self._checkpointer.start()

    # ---- schema -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path}: schema version {version} is newer than this controller's "
                             f"{len(MIGRATIONS)}; upgrade the controller")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits first; the version bump is inside the same script.
            self.db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    # ---- the backend's part -------------------------------------------------------------------

    def _execute(self, sql: str, params: Sequence = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def _executemany(self, sql: str, rows: list) -> None:
        self.db.executemany(sql, rows)

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        if self._wal_long.is_set():
            # The WAL starts again from its beginning only at a write transaction that finds it all
            # checkpointed. Under a steady stream of commits the checkpointer's pass always ends a
            # few commits behind, so the WAL grew by about every page written and every page read
            # searched its index: the writer itself finishes the pass, between two of them.
            self._wal_long.clear()
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _name_match(self, name_glob: str) -> tuple[str, str]:
        return "s.name GLOB ?", name_glob

    def _series_id(self, device_id: str, name: str) -> int:
        key = (device_id, name)
        found = self._series.get(key)
        if found is None:
            row = self.db.execute("SELECT id FROM series WHERE device_id = ? AND name = ?", key).fetchone()
            if row is None:
                row = (self.db.execute("INSERT INTO series (device_id, name) VALUES (?, ?)", key).lastrowid,)
            found = self._series[key] = row[0]
        return found

    def add_samples(self, rows: Iterable[tuple[str, str, int, float]]) -> int:
        prepared = sorted((self._series_id(d, n), ts, v) for d, n, ts, v in rows)
        before = self.db.total_changes
        self.db.executemany("INSERT OR IGNORE INTO samples_raw (series_id, ts, value) VALUES (?, ?, ?)", prepared)
        added = self.db.total_changes - before
        self._mark_late([(sid, ts) for sid, ts, _ in prepared])
        return added

    def save_session(self, session: dict) -> None:
        try:
            self.db.execute(upsert("sessions", ("id",)), values("sessions", session))
        except sqlite3.IntegrityError as exc:
            raise SessionConflict(f"device {session['device_id']} already has an active session") from exc

    def size_bytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0] * self.db.execute("PRAGMA page_size").fetchone()[0]
        wal = self.path + "-wal"
        return pages + (os.path.getsize(wal) if os.path.exists(wal) else 0)

    def _checkpoint_loop(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            while not self._closing.wait(CHECKPOINT_S):
                # PASSIVE: copies what no reader still needs, never waits for the writer.
                _busy, frames, _done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames > WAL_RESTART_FRAMES:
                    self._wal_long.set()
        finally:
            db.close()

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=30)
        self.db.close()
