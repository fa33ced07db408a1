"""The PostgreSQL store (psycopg 3): the same tables, tiers and answers as SQLite, for a fleet
bigger than one file and for several controller instances over one database.

Several writers may share the database, so what SQLite gets from having one writer is made
explicit here: ingest is idempotent through unique keys (`ON CONFLICT DO NOTHING`), series
are created with `ON CONFLICT` (two instances meeting a new series agree on its id), rollups
run in the database under an exclusive advisory lock that ingest holds shared (a rollup never
races a sample into a minute it has just computed), and migrations run under a lock of their
own (instances starting together migrate once). `schema_migrations` holds the versions applied.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

import psycopg
from psycopg.types.string import TextLoader

from . import HOUR_MS, MINUTE_MS, Agg, Retention, SessionConflict, Store, StoreError, display_url
from .records import row, values, where
from .sqlite import ROLLUP_GRACE_MS, ROLLUP_SERIES

# Each entry moves the schema one version up; never edit one that has shipped, add the next.
MIGRATIONS: list[str] = [
    # 1: fleet, tiers, events, alerts, sessions, commands (the SQLite schema, in PostgreSQL types)
    """
    CREATE TABLE devices (
        device_id text PRIMARY KEY, tenant text, site text, status text, status_since_ms bigint,
        reason text, last_seen_ms bigint, health text, health_reasons jsonb, capabilities jsonb,
        attr jsonb, state jsonb, telemetry jsonb, updated_ms bigint);
    CREATE TABLE series (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, device_id text NOT NULL,
        name text NOT NULL, UNIQUE (device_id, name));
    CREATE TABLE samples_raw (series_id integer NOT NULL, ts bigint NOT NULL, value double precision NOT NULL,
        PRIMARY KEY (series_id, ts));
    CREATE TABLE samples_minute (series_id integer NOT NULL, ts bigint NOT NULL, n integer NOT NULL,
        total double precision NOT NULL, low double precision NOT NULL, high double precision NOT NULL,
        PRIMARY KEY (series_id, ts));
    CREATE TABLE samples_hour (series_id integer NOT NULL, ts bigint NOT NULL, n integer NOT NULL,
        total double precision NOT NULL, low double precision NOT NULL, high double precision NOT NULL,
        PRIMARY KEY (series_id, ts));
    -- Buckets that got samples after they were rolled up: recomputed at the next rollup.
    CREATE TABLE rollup_dirty (tier text NOT NULL, series_id integer NOT NULL, ts bigint NOT NULL,
        PRIMARY KEY (tier, series_id, ts));
    CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL);
    CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, device_id text NOT NULL,
        event_type text NOT NULL, ts bigint NOT NULL, severity text, digest bigint NOT NULL, payload jsonb NOT NULL,
        UNIQUE (device_id, digest));
    CREATE INDEX events_ts ON events (ts);
    CREATE TABLE alerts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, key text NOT NULL UNIQUE,
        source text NOT NULL, device_id text NOT NULL, session_id text, metric text, target text,
        severity text NOT NULL, state text NOT NULL, opened_ms bigint NOT NULL, closed_ms bigint,
        value double precision, threshold double precision, threshold_type text, unit text, description text,
        detail jsonb, updated_ms bigint NOT NULL);
    CREATE INDEX alerts_opened ON alerts (opened_ms);
    CREATE INDEX alerts_device ON alerts (device_id, opened_ms);
    CREATE TABLE sessions (id text PRIMARY KEY, device_id text NOT NULL, status text NOT NULL,
        config jsonb NOT NULL, started_ms bigint NOT NULL, ends_ms bigint NOT NULL, stopped_ms bigint,
        stop_reason text, progress jsonb, evaluations integer NOT NULL DEFAULT 0);
    -- The store itself refuses a second active session on a device.
    CREATE UNIQUE INDEX sessions_one_active ON sessions (device_id) WHERE status = 'active';
    CREATE TABLE commands (id text PRIMARY KEY, target text NOT NULL, op text NOT NULL, args jsonb NOT NULL,
        dialect text NOT NULL, sent_ms bigint NOT NULL, deadline_ms bigint NOT NULL, status text NOT NULL,
        updated_ms bigint NOT NULL);
    CREATE TABLE replies (command_id text NOT NULL, device_id text NOT NULL, accepted integer, ack jsonb,
        acked_ms bigint, status text, result jsonb, finished_ms bigint, duplicates integer NOT NULL DEFAULT 0,
        late integer NOT NULL DEFAULT 0, PRIMARY KEY (command_id, device_id));
    """,
]
# Advisory lock keys (one 64-bit space per database): arbitrary, fixed, distinct.
MIGRATE_LOCK = 0x7274_6B71_6F73_0001
ROLLUP_LOCK = 0x7274_6B71_6F73_0002
_TIERS = (("samples_minute", "samples_raw", MINUTE_MS), ("samples_hour", "samples_minute", HOUR_MS))
_DEVICE_COLUMNS = ("device_id", "tenant", "site", "status", "status_since_ms", "reason", "last_seen_ms", "health",
                   "health_reasons", "capabilities", "attr", "state", "telemetry", "updated_ms")
_ALERT_COLUMNS = ("key", "source", "device_id", "session_id", "metric", "target", "severity", "state", "opened_ms",
                  "closed_ms", "value", "threshold", "threshold_type", "unit", "description", "detail", "updated_ms")
_SESSION_COLUMNS = ("id", "device_id", "status", "config", "started_ms", "ends_ms", "stopped_ms", "stop_reason",
                    "progress", "evaluations")
_COMMAND_COLUMNS = ("id", "target", "op", "args", "dialect", "sent_ms", "deadline_ms", "status", "updated_ms")
_REPLY_COLUMNS = ("command_id", "device_id", "accepted", "ack", "acked_ms", "status", "result", "finished_ms",
                  "duplicates", "late")


def glob_to_like(pattern: str) -> str:
    """SQLite's GLOB (`*`, `?`) as a LIKE pattern; character classes are refused, not misread."""
    if "[" in pattern:
        raise StoreError(f"series pattern {pattern!r}: [...] classes are not supported, only * and ?")
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _upsert(table: str, columns: tuple, key: tuple, keep: tuple = ()) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key + keep)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


class PostgresStore(Store):
    def __init__(self, url: str, retention: Retention = Retention()):
        self.url = url
        self.retention = retention
        try:
            # autocommit: a reader sees every commit at once; writes group in `transaction()`.
            self.db = psycopg.connect(url, autocommit=True, connect_timeout=30,
                                      application_name="rtk-qos-controller")
        except psycopg.Error as exc:
            raise StoreError(f"store: cannot connect to {display_url(url)}: {exc}".strip()) from exc
        # JSON columns come back as text, decoded as the SQLite backend decodes them.
        self.db.adapters.register_loader("jsonb", TextLoader)
        self._series: dict[tuple[str, str], int] = {}
        self._depth = 0
        self._lock = threading.Lock()
        self._migrate()

    # ---- schema -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            self.db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                            "applied_ms bigint NOT NULL)")
            version = self.schema_version
            if version > len(MIGRATIONS):
                raise StoreError(f"{display_url(self.url)}: schema version {version} is newer than this controller's "
                                 f"{len(MIGRATIONS)}; upgrade the controller")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                self.db.execute(script)
                self.db.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (number, int(time.time() * 1000)))

    @property
    def schema_version(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]

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
            self._depth = 1
            try:
                with self.db.transaction():
                    yield
            except BaseException:
                self._series.clear()  # ids minted in the rolled-back transaction are gone
                raise
            finally:
                self._depth = 0

    def upsert_device(self, device: dict) -> None:
        self.db.execute(_upsert("devices", _DEVICE_COLUMNS, ("device_id",)), values("devices", device, _DEVICE_COLUMNS))

    def _series_ids(self, keys: set[tuple[str, str]]) -> None:
        """Cache the ids of these series, creating those that are new (one round trip each way)."""
        missing = [k for k in keys if k not in self._series]
        if not missing:
            return
        devices, names = [d for d, _ in missing], [n for _, n in missing]
        self.db.execute("INSERT INTO series (device_id, name) SELECT * FROM unnest(%s::text[], %s::text[]) "
                        "ORDER BY 1, 2 ON CONFLICT DO NOTHING", (devices, names))
        found = self.db.execute("SELECT s.device_id, s.name, s.id FROM series s JOIN unnest(%s::text[], %s::text[]) "
                                "AS k(device_id, name) USING (device_id, name)", (devices, names)).fetchall()
        self._series.update({(d, n): i for d, n, i in found})

    def _watermark(self, tier: str) -> int:
        found = self.db.execute("SELECT value FROM meta WHERE key = %s", (tier,)).fetchone()
        return found[0] if found else 0

    def _meta(self, key: str, value: Optional[int] = None) -> int:
        if value is not None:
            self.db.execute("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            (key, value))
            return value
        return self._watermark(key)

    def add_samples(self, rows: Iterable[tuple[str, str, int, float]]) -> int:
        rows = list(rows)
        if not rows:
            return 0
        # Shared: any number of ingesting instances at once, never during a rollup (exclusive).
        self.db.execute("SELECT pg_advisory_xact_lock_shared(%s)", (ROLLUP_LOCK,))
        self._series_ids({(d, n) for d, n, _, _ in rows})
        # In key order: two instances inserting overlapping batches (a takeover's redeliveries)
        # wait on each other's rows in the same order, never deadlock.
        prepared = sorted((self._series[(d, n)], ts, v) for d, n, ts, v in rows)
        ids, stamps, readings = (list(column) for column in zip(*prepared))
        # The whole batch in one statement; a sample stored before (same series and ts) is skipped.
        added = self.db.execute("INSERT INTO samples_raw (series_id, ts, value) SELECT * FROM "
                                "unnest(%s::integer[], %s::bigint[], %s::float8[]) ON CONFLICT DO NOTHING",
                                (ids, stamps, readings)).rowcount
        # Late: in a minute already rolled up, or in the pass under way (its series may be done).
        rolled = max(self._watermark("samples_minute"), self._meta("samples_minute.target"))
        late = sorted({(sid, ts - ts % MINUTE_MS) for sid, ts in zip(ids, stamps) if ts < rolled})
        if late:
            self.db.execute("INSERT INTO rollup_dirty SELECT 'samples_minute', * FROM "
                            "unnest(%s::integer[], %s::bigint[]) ON CONFLICT DO NOTHING",
                            ([s for s, _ in late], [t for _, t in late]))
        return added

    def add_event(self, device_id, event_type, ts_ms, severity, digest, payload) -> bool:
        return self.db.execute(
            "INSERT INTO events (device_id, event_type, ts, severity, digest, payload) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (device_id, digest) DO NOTHING",
            (device_id, event_type, ts_ms, severity, digest, *values("events", {"payload": payload}, ("payload",)))
        ).rowcount == 1

    def save_alert(self, alert: dict) -> int:
        return self.db.execute(_upsert("alerts", _ALERT_COLUMNS, ("key",), ("opened_ms",)) + " RETURNING id",
                               values("alerts", alert, _ALERT_COLUMNS)).fetchone()[0]

    def save_session(self, session: dict) -> None:
        try:
            # A savepoint: the refusal leaves the caller's transaction usable, as in SQLite.
            with self.db.transaction():
                self.db.execute(_upsert("sessions", _SESSION_COLUMNS, ("id",)),
                                values("sessions", session, _SESSION_COLUMNS))
        except psycopg.errors.UniqueViolation as exc:
            raise SessionConflict(f"device {session['device_id']} already has an active session") from exc

    def save_command(self, command: dict) -> None:
        self.db.execute(_upsert("commands", _COMMAND_COLUMNS, ("id",)), values("commands", command, _COMMAND_COLUMNS))

    def save_reply(self, reply: dict) -> None:
        self.db.execute(_upsert("replies", _REPLY_COLUMNS, ("command_id", "device_id")),
                        values("replies", reply, _REPLY_COLUMNS))

    def rollup(self, now_ms: int, max_series: int = ROLLUP_SERIES) -> int:
        """As SQLite's: complete minutes (and hours) for at most `max_series` series per tier per
        call, computed in the database; one instance at a time (the others wait), inside the
        caller's transaction."""
        self.db.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK,))
        written = 0
        done = now_ms - ROLLUP_GRACE_MS
        complete = {"samples_minute": done - done % MINUTE_MS}
        complete["samples_hour"] = complete["samples_minute"] - complete["samples_minute"] % HOUR_MS
        for tier, finer, width in _TIERS:
            aggregate = ("COUNT(*), SUM(value), MIN(value), MAX(value)" if finer == "samples_raw"
                         else "SUM(n), SUM(total), MIN(low), MAX(high)")
            insert = (f"INSERT INTO {tier} (series_id, ts, n, total, low, high) "
                      f"SELECT series_id, ts - ts %% {width}, {aggregate} FROM {finer} "
                      f"WHERE series_id > %s AND series_id <= %s AND ts >= %s AND ts < %s GROUP BY 1, 2 "
                      f"ON CONFLICT (series_id, ts) DO UPDATE SET n = excluded.n, total = excluded.total, "
                      f"low = excluded.low, high = excluded.high")
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
                last = self.db.execute("SELECT MAX(id) FROM (SELECT id FROM series WHERE id > %s ORDER BY id "
                                       "LIMIT %s) AS page", (cursor, max_series)).fetchone()[0]
                if last is not None:
                    written += self.db.execute(insert, (cursor, last, start, target)).rowcount
                    self._meta(f"{tier}.cursor", last)
                else:  # every series done: the pass is complete
                    written += 1
                    self._meta(tier, target)
                    self._meta(f"{tier}.cursor", 0)
                    self._meta(f"{tier}.target", 0)
            dirty = self.db.execute("DELETE FROM rollup_dirty WHERE tier = %s RETURNING series_id, ts",
                                    (tier,)).fetchall()
            for series_id, ts in dirty:
                written += self.db.execute(insert, (series_id - 1, series_id, ts, ts + width)).rowcount
                if tier == "samples_minute" and ts < self._watermark("samples_hour"):
                    self.db.execute("INSERT INTO rollup_dirty VALUES ('samples_hour', %s, %s) ON CONFLICT DO NOTHING",
                                    (series_id, ts - ts % HOUR_MS))
        return written

    def prune(self, now_ms: int) -> int:
        r = self.retention
        removed = 0
        for table, keep_ms in (("samples_raw", r.raw_hours * HOUR_MS), ("samples_minute", r.minute_days * 86400_000),
                               ("samples_hour", r.hour_days * 86400_000), ("events", r.minute_days * 86400_000)):
            removed += self.db.execute(f"DELETE FROM {table} WHERE ts < %s", (int(now_ms - keep_ms),)).rowcount
        return removed

    # ---- reads --------------------------------------------------------------------------------

    def _all(self, table: str, sql: str, params=()) -> list[dict]:
        cursor = self.db.execute(sql, params)
        return [row(table, cursor.description, found) for found in cursor.fetchall()]

    def devices(self) -> list[dict]:
        return self._all("devices", "SELECT * FROM devices ORDER BY device_id")

    def device(self, device_id: str) -> Optional[dict]:
        found = self._all("devices", "SELECT * FROM devices WHERE device_id = %s", (device_id,))
        return found[0] if found else None

    def series_names(self, device_id: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM series WHERE device_id = %s ORDER BY name",
                                              (device_id,))]

    def _buckets(self, where_sql: str, params: tuple, start: int, end: int, step: int, out: dict,
                 finest: str = "samples_raw") -> None:
        """Merge rows of [start, end) into `out` ((device, bucket) -> Agg): each tier up to its
        watermark, the rest from the next finer tier."""
        order = ["samples_hour", "samples_minute", "samples_raw"]
        tiers = order[order.index(finest):] if finest != "samples_raw" else ["samples_raw"]
        lo = start
        for tier in tiers:
            hi = end if tier == "samples_raw" else min(end, self._watermark(tier))
            if hi <= lo:
                continue
            aggregate = ("COUNT(*), SUM(value), MIN(value), MAX(value)" if tier == "samples_raw"
                         else "SUM(n), SUM(total), MIN(low), MAX(high)")
            bucket = "(ts - %s) / %s" if step else "0"
            rows = self.db.execute(
                f"SELECT s.device_id, {bucket}, {aggregate} FROM series s JOIN {tier} ON series_id = s.id "
                f"WHERE {where_sql} AND ts >= %s AND ts < %s GROUP BY 1, 2",
                ((start, step) if step else ()) + (*params, lo, hi)).fetchall()
            for device_id, index, count, total, low, high in rows:
                out.setdefault((device_id, index), Agg()).merge(count, total, low, high)
            lo = hi

    def series(self, device_id, name, start_ms, end_ms, step_ms):
        finest = ("samples_hour" if step_ms % HOUR_MS == 0 and start_ms % HOUR_MS == 0 else
                  "samples_minute" if step_ms % MINUTE_MS == 0 and start_ms % MINUTE_MS == 0 else "samples_raw")
        out: dict = {}
        self._buckets("s.device_id = %s AND s.name = %s", (device_id, name), start_ms, end_ms, step_ms, out, finest)
        return sorted((start_ms + index * step_ms, agg) for (_, index), agg in out.items())

    def stats(self, name_glob, start_ms, end_ms):
        out: dict = {}
        finest = "samples_minute" if start_ms % MINUTE_MS == 0 and end_ms - start_ms >= MINUTE_MS else "samples_raw"
        self._buckets("s.name LIKE %s", (glob_to_like(name_glob),), start_ms, end_ms, 0, out, finest)
        return {device_id: agg for (device_id, _), agg in out.items()}

    def fleet_series(self, name_glob, start_ms, end_ms, step_ms):
        finest = "samples_minute" if step_ms % MINUTE_MS == 0 and start_ms % MINUTE_MS == 0 else "samples_raw"
        out: dict = {}
        self._buckets("s.name LIKE %s", (glob_to_like(name_glob),), start_ms, end_ms, step_ms, out, finest)
        fleet: dict = {}
        for (device_id, index), agg in out.items():
            fleet.setdefault(device_id, {})[start_ms + index * step_ms] = agg
        return fleet

    def raw(self, device_id, name, start_ms, end_ms):
        return [tuple(r) for r in self.db.execute(
            "SELECT ts, value FROM samples_raw JOIN series s ON s.id = series_id WHERE s.device_id = %s "
            "AND s.name = %s AND ts >= %s AND ts < %s ORDER BY ts", (device_id, name, start_ms, end_ms))]

    def alerts(self, device_id=None, severity=None, state=None, since_ms=None, session_id=None, limit=500):
        clause, params = where("%s", (("device_id", device_id), ("severity", severity), ("state", state),
                                      ("session_id", session_id)),
                               ("(opened_ms >= {m} OR closed_ms IS NULL OR closed_ms >= {m})", since_ms))
        return self._all("alerts", f"SELECT * FROM alerts {clause} ORDER BY opened_ms DESC, id DESC LIMIT %s",
                         (*params, limit))

    def sessions(self, status=None, device_id=None):
        clause, params = where("%s", (("status", status), ("device_id", device_id)))
        return self._all("sessions", f"SELECT * FROM sessions {clause} ORDER BY started_ms DESC", params)

    def session(self, session_id):
        found = self._all("sessions", "SELECT * FROM sessions WHERE id = %s", (session_id,))
        return found[0] if found else None

    def command(self, command_id):
        found = self._all("commands", "SELECT * FROM commands WHERE id = %s", (command_id,))
        if not found:
            return None
        command = found[0]
        command["replies"] = self._all("replies", "SELECT * FROM replies WHERE command_id = %s ORDER BY device_id",
                                       (command_id,))
        return command

    def recent_commands(self, deadline_after_ms):
        commands = self._all("commands", "SELECT * FROM commands WHERE deadline_ms >= %s", (deadline_after_ms,))
        for command in commands:
            command["replies"] = self._all("replies", "SELECT * FROM replies WHERE command_id = %s", (command["id"],))
        return commands

    def events(self, device_id=None, since_ms=None, limit=500):
        clause, params = where("%s", (("device_id", device_id),), ("ts >= {m}", since_ms))
        return self._all("events", f"SELECT * FROM events {clause} ORDER BY ts DESC, id DESC LIMIT %s",
                         (*params, limit))

    def size_bytes(self) -> int:
        return self.db.execute("SELECT pg_database_size(current_database())").fetchone()[0]

    def table_bytes(self) -> dict[str, int]:
        """Bytes on disk per table, its indexes and TOAST included (for the bench's bytes per device-day)."""
        return dict(self.db.execute("SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN "
                                    "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                                    "AND c.relkind = 'r'").fetchall())

    def close(self) -> None:
        self.db.close()

