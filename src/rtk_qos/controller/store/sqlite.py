"""The embedded store: one SQLite file in WAL mode (readers never wait for the writer).

Durability: `synchronous=NORMAL` in WAL mode survives a crash of the controller
(kill -9: every committed transaction is in the WAL, in the kernel's page cache); a
power cut may lose the last transactions, which `synchronous = "full"` prevents at
the cost of an fsync per batch. Migrations are numbered and run in order at open
(`PRAGMA user_version` holds the schema version).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

from . import HOUR_MS, MINUTE_MS, Agg, Retention, SessionConflict, Store, StoreError
from .records import row, values as _values, where

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
ROLLUP_GRACE_MS = 15_000
ROLLUP_SERIES = 250  # series per tier per rollup call: about 15,000 raw rows, some 15 ms
_TIERS = (("samples_minute", "samples_raw", MINUTE_MS), ("samples_hour", "samples_minute", HOUR_MS))


class SQLiteStore(Store):
    def __init__(self, path: str, retention: Retention = Retention(), synchronous: str = "normal",
                 writer: bool = False):
        if synchronous not in ("normal", "full"):
            raise StoreError(f"store.synchronous: {synchronous!r} is not normal or full")
        self.path = path
        self.retention = retention
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # One instance is used by one thread; check_same_thread off only lets the owner change.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._series: dict[tuple[str, str], int] = {}
        self._depth = 0
        self._lock = threading.Lock()
        self._migrate()
        self._checkpointer: Optional[threading.Thread] = None
        self._closing = threading.Event()
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

    # ---- writes -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                self._series.clear()  # ids minted in the rolled-back transaction are gone
                raise
            else:
                self.db.execute("COMMIT")
            finally:
                self._depth = 0

    def upsert_device(self, device: dict) -> None:
        columns = ("device_id", "tenant", "site", "status", "status_since_ms", "reason", "last_seen_ms", "health",
                   "health_reasons", "capabilities", "attr", "state", "telemetry", "updated_ms")
        values = _values("devices", device, columns)
        self.db.execute(f"INSERT OR REPLACE INTO devices ({', '.join(columns)}) VALUES "
                        f"({', '.join('?' * len(columns))})", values)

    def _series_id(self, device_id: str, name: str, create: bool = True) -> Optional[int]:
        key = (device_id, name)
        found = self._series.get(key)
        if found is None:
            row = self.db.execute("SELECT id FROM series WHERE device_id = ? AND name = ?", key).fetchone()
            if row is None:
                if not create:
                    return None
                row = (self.db.execute("INSERT INTO series (device_id, name) VALUES (?, ?)", key).lastrowid,)
            found = self._series[key] = row[0]
        return found

    def _watermark(self, tier: str) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (tier,)).fetchone()
        return row[0] if row else 0

    def add_samples(self, rows: Iterable[tuple[str, str, int, float]]) -> int:
        prepared = [(self._series_id(d, n), ts, v) for d, n, ts, v in rows]
        before = self.db.total_changes
        self.db.executemany("INSERT OR IGNORE INTO samples_raw (series_id, ts, value) VALUES (?, ?, ?)", prepared)
        added = self.db.total_changes - before
        # Late: in a minute already rolled up, or in the pass under way (its series may be done).
        rolled = max(self._watermark("samples_minute"), self._meta("samples_minute.target"))
        late = {(sid, ts - ts % MINUTE_MS) for sid, ts, _ in prepared if ts < rolled}
        if late:
            self.db.executemany("INSERT OR IGNORE INTO rollup_dirty VALUES ('samples_minute', ?, ?)", late)
        return added

    def add_event(self, device_id, event_type, ts_ms, severity, digest, payload) -> bool:
        cursor = self.db.execute("INSERT OR IGNORE INTO events (device_id, event_type, ts, severity, digest, payload)"
                                 " VALUES (?, ?, ?, ?, ?, ?)",
                                 (device_id, event_type, ts_ms, severity, digest, json.dumps(payload, separators=(",", ":"))))
        return cursor.rowcount == 1

    def save_alert(self, alert: dict) -> int:
        columns = ("key", "source", "device_id", "session_id", "metric", "target", "severity", "state", "opened_ms",
                   "closed_ms", "value", "threshold", "threshold_type", "unit", "description", "detail", "updated_ms")
        values = _values("alerts", alert, columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in ("key", "opened_ms"))
        self.db.execute(f"INSERT INTO alerts ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                        f"ON CONFLICT (key) DO UPDATE SET {updates}", values)
        return self.db.execute("SELECT id FROM alerts WHERE key = ?", (alert["key"],)).fetchone()[0]

    def save_session(self, session: dict) -> None:
        columns = ("id", "device_id", "status", "config", "started_ms", "ends_ms", "stopped_ms", "stop_reason",
                   "progress", "evaluations")
        values = _values("sessions", session, columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        try:
            # An upsert, not INSERT OR REPLACE: REPLACE would delete the other active session.
            self.db.execute(f"INSERT INTO sessions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                            f"ON CONFLICT (id) DO UPDATE SET {updates}", values)
        except sqlite3.IntegrityError as exc:
            raise SessionConflict(f"device {session['device_id']} already has an active session") from exc

    def save_command(self, command: dict) -> None:
        columns = ("id", "target", "op", "args", "dialect", "sent_ms", "deadline_ms", "status", "updated_ms")
        values = _values("commands", command, columns)
        self.db.execute(f"INSERT OR REPLACE INTO commands ({', '.join(columns)}) VALUES "
                        f"({', '.join('?' * len(columns))})", values)

    def save_reply(self, reply: dict) -> None:
        columns = ("command_id", "device_id", "accepted", "ack", "acked_ms", "status", "result", "finished_ms",
                   "duplicates", "late")
        values = _values("replies", reply, columns)
        self.db.execute(f"INSERT OR REPLACE INTO replies ({', '.join(columns)}) VALUES "
                        f"({', '.join('?' * len(columns))})", values)

    def _meta(self, key: str, value: Optional[int] = None) -> int:
        if value is not None:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            return value
        return self._watermark(key)

    def rollup(self, now_ms: int, max_series: int = ROLLUP_SERIES) -> int:
        """Aggregate complete minutes (and hours) for at most `max_series` series per tier per call:
        a pass over every series is spread over calls, so ingest never waits long on it. A pass
        keeps its target end until done; the tier's watermark moves only then. Returns the rows
        written, or 1 for a call that only ended a pass (0: nothing to do)."""
        written = 0
        # A minute is complete ROLLUP_GRACE_MS after its end; a sample arriving later (a delayed
        # batch) marks its minute dirty and the minute is computed again.
        done = now_ms - ROLLUP_GRACE_MS
        complete = {"samples_minute": done - done % MINUTE_MS}
        complete["samples_hour"] = complete["samples_minute"] - complete["samples_minute"] % HOUR_MS
        for tier, finer, width in _TIERS:
            aggregate = ("COUNT(*), SUM(value), MIN(value), MAX(value)" if finer == "samples_raw"
                         else "SUM(n), SUM(total), MIN(low), MAX(high)")
            # Driven by the series table (CROSS JOIN keeps it outer): index ranges, never a full scan.
            insert = (f"INSERT OR REPLACE INTO {tier} SELECT f.series_id, f.ts - f.ts % {width}, {aggregate} "
                      f"FROM series s CROSS JOIN {finer} f ON f.series_id = s.id WHERE s.id > ? AND s.id <= ? "
                      f"AND f.ts >= ? AND f.ts < ? GROUP BY 1, 2")
            start, target = self._watermark(tier), self._meta(f"{tier}.target")
            if not target:
                target = complete[tier]
                if start == 0:  # the first pass: from the oldest sample of the finer tier
                    first = self.db.execute(f"SELECT MIN((SELECT MIN(ts) FROM {finer} WHERE series_id = s.id)) "
                                            f"FROM series s").fetchone()[0]
                    start = target if first is None else min(target, first - first % width)
                    self._meta(tier, start)
                if target > start:
                    self._meta(f"{tier}.target", target)
            if target and target > start:
                cursor = self._meta(f"{tier}.cursor")
                last = self.db.execute(f"SELECT MAX(id) FROM (SELECT id FROM series WHERE id > ? ORDER BY id "
                                       f"LIMIT {int(max_series)})", (cursor,)).fetchone()[0]
                if last is not None:
                    written += self.db.execute(insert, (cursor, last, start, target)).rowcount
                    self._meta(f"{tier}.cursor", last)
                else:  # every series done: the pass is complete
                    written += 1
                    self._meta(tier, target)
                    self._meta(f"{tier}.cursor", 0)
                    self._meta(f"{tier}.target", 0)
            dirty = self.db.execute("SELECT series_id, ts FROM rollup_dirty WHERE tier = ?", (tier,)).fetchall()
            for series_id, ts in dirty:
                written += self.db.execute(insert, (series_id - 1, series_id, ts, ts + width)).rowcount
                if tier == "samples_minute" and ts < self._watermark("samples_hour"):
                    self.db.execute("INSERT OR IGNORE INTO rollup_dirty VALUES ('samples_hour', ?, ?)",
                                    (series_id, ts - ts % HOUR_MS))
            self.db.execute("DELETE FROM rollup_dirty WHERE tier = ?", (tier,))
        return written

    def prune(self, now_ms: int) -> int:
        r = self.retention
        removed = 0
        for table, keep_ms in (("samples_raw", r.raw_hours * HOUR_MS), ("samples_minute", r.minute_days * 86400_000),
                               ("samples_hour", r.hour_days * 86400_000), ("events", r.minute_days * 86400_000)):
            # Per series for the tiers (their key starts with series_id): index ranges, not a scan.
            where = "series_id IN (SELECT id FROM series) AND ts < ?" if table != "events" else "ts < ?"
            removed += self.db.execute(f"DELETE FROM {table} WHERE {where}", (int(now_ms - keep_ms),)).rowcount
        return removed

    # ---- reads --------------------------------------------------------------------------------

    def _all(self, table: str, sql: str, params=()) -> list[dict]:
        cursor = self.db.execute(sql, params)
        return [row(table, cursor.description, values) for values in cursor.fetchall()]

    def devices(self) -> list[dict]:
        return self._all("devices", "SELECT * FROM devices ORDER BY device_id")

    def device(self, device_id: str) -> Optional[dict]:
        found = self._all("devices", "SELECT * FROM devices WHERE device_id = ?", (device_id,))
        return found[0] if found else None

    def series_names(self, device_id: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM series WHERE device_id = ? ORDER BY name",
                                              (device_id,))]

    def _buckets(self, where: str, params: tuple, start: int, end: int, step: int, out: dict,
                 finest: str = "samples_raw") -> None:
        """Merge rows of [start, end) into `out` (bucket -> Agg): each tier up to its watermark, the
        rest from the next finer tier."""
        order = ["samples_hour", "samples_minute", "samples_raw"]
        tiers = order[order.index(finest):] if finest != "samples_raw" else ["samples_raw"]
        lo = start
        for tier in tiers:
            hi = end if tier == "samples_raw" else min(end, self._watermark(tier))
            if hi <= lo:
                continue
            aggregate = ("COUNT(*), SUM(value), MIN(value), MAX(value)" if tier == "samples_raw"
                         else "SUM(n), SUM(total), MIN(low), MAX(high)")
            bucket = f"(ts - {start}) / {step}" if step else "0"
            rows = self.db.execute(
                f"SELECT s.device_id, {bucket}, {aggregate} FROM series s CROSS JOIN {tier} ON series_id = s.id "
                f"WHERE {where} AND ts >= ? AND ts < ? GROUP BY 1, 2", (*params, lo, hi)).fetchall()
            for device_id, index, count, total, low, high in rows:
                out.setdefault((device_id, index), Agg()).merge(count, total, low, high)
            lo = hi

    def series(self, device_id, name, start_ms, end_ms, step_ms):
        finest = ("samples_hour" if step_ms % HOUR_MS == 0 and start_ms % HOUR_MS == 0 else
                  "samples_minute" if step_ms % MINUTE_MS == 0 and start_ms % MINUTE_MS == 0 else "samples_raw")
        out: dict = {}
        self._buckets("s.device_id = ? AND s.name = ?", (device_id, name), start_ms, end_ms, step_ms, out, finest)
        return sorted((start_ms + index * step_ms, agg) for (_, index), agg in out.items())

    def stats(self, name_glob, start_ms, end_ms):
        out: dict = {}
        span = end_ms - start_ms
        finest = "samples_minute" if start_ms % MINUTE_MS == 0 and span >= MINUTE_MS else "samples_raw"
        self._buckets("s.name GLOB ?", (name_glob,), start_ms, end_ms, 0, out, finest)
        return {device_id: agg for (device_id, _), agg in out.items()}

    def fleet_series(self, name_glob, start_ms, end_ms, step_ms):
        finest = "samples_minute" if step_ms % MINUTE_MS == 0 and start_ms % MINUTE_MS == 0 else "samples_raw"
        out: dict = {}
        self._buckets("s.name GLOB ?", (name_glob,), start_ms, end_ms, step_ms, out, finest)
        fleet: dict = {}
        for (device_id, index), agg in out.items():
            fleet.setdefault(device_id, {})[start_ms + index * step_ms] = agg
        return fleet

    def raw(self, device_id, name, start_ms, end_ms):
        return self.db.execute("SELECT ts, value FROM samples_raw JOIN series s ON s.id = series_id WHERE "
                               "s.device_id = ? AND s.name = ? AND ts >= ? AND ts < ? ORDER BY ts",
                               (device_id, name, start_ms, end_ms)).fetchall()

    def alerts(self, device_id=None, severity=None, state=None, since_ms=None, session_id=None, limit=500):
        clause, params = where("?", (("device_id", device_id), ("severity", severity), ("state", state),
                                     ("session_id", session_id)),
                               ("(opened_ms >= {m} OR closed_ms IS NULL OR closed_ms >= {m})", since_ms))
        return self._all("alerts", f"SELECT * FROM alerts {clause} ORDER BY opened_ms DESC, id DESC LIMIT ?",
                         (*params, limit))

    def sessions(self, status=None, device_id=None):
        clause, params = where("?", (("status", status), ("device_id", device_id)))
        return self._all("sessions", f"SELECT * FROM sessions {clause} ORDER BY started_ms DESC", params)

    def session(self, session_id):
        found = self._all("sessions", "SELECT * FROM sessions WHERE id = ?", (session_id,))
        return found[0] if found else None

    def command(self, command_id):
        found = self._all("commands", "SELECT * FROM commands WHERE id = ?", (command_id,))
        if not found:
            return None
        command = found[0]
        command["replies"] = self._all("replies", "SELECT * FROM replies WHERE command_id = ? ORDER BY device_id", (command_id,))
        return command

    def recent_commands(self, deadline_after_ms):
        commands = self._all("commands", "SELECT * FROM commands WHERE deadline_ms >= ?", (deadline_after_ms,))
        for command in commands:
            command["replies"] = self._all("replies", "SELECT * FROM replies WHERE command_id = ?", (command["id"],))
        return commands

    def events(self, device_id=None, since_ms=None, limit=500):
        clause, params = where("?", (("device_id", device_id),), ("ts >= {m}", since_ms))
        return self._all("events", f"SELECT * FROM events {clause} ORDER BY ts DESC, id DESC LIMIT ?", (*params, limit))

    def size_bytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0] * self.db.execute("PRAGMA page_size").fetchone()[0]
        wal = self.path + "-wal"
        return pages + (os.path.getsize(wal) if os.path.exists(wal) else 0)

    def _checkpoint_loop(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            while not self._closing.wait(CHECKPOINT_S):
                # PASSIVE: copies what no reader still needs, never waits for the writer.
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=30)
        self.db.close()
