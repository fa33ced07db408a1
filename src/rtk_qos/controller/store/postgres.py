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

import functools
import time
from contextlib import AbstractContextManager
from typing import Iterable, Sequence

import psycopg
from psycopg.types.string import TextLoader

from . import Retention, SessionConflict, StoreError, display_url
from .sql import ROLLUP_SERIES, SqlStore, upsert, values

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


def glob_to_like(pattern: str) -> str:
    """SQLite's GLOB (`*`, `?`) as a LIKE pattern; character classes are refused, not misread."""
    if "[" in pattern:
        raise StoreError(f"series pattern {pattern!r}: [...] classes are not supported, only * and ?")
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


@functools.lru_cache(maxsize=256)
def _pyformat(sql: str) -> str:
    """The shared statements' `?` placeholders in psycopg's style (a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresStore(SqlStore):
    def __init__(self, url: str, retention: Retention = Retention()):
        super().__init__(retention)
        self.url = url
        try:
            # autocommit: a reader sees every commit at once; writes group in `transaction()`.
            self.db = psycopg.connect(url, autocommit=True, connect_timeout=30,
                                      application_name="rtk-qos-controller")
        except psycopg.Error as exc:
            raise StoreError(f"store: cannot connect to {display_url(url)}: {exc}".strip()) from exc
        # JSON columns come back as text, decoded as the SQLite backend decodes them.
        self.db.adapters.register_loader("jsonb", TextLoader)
        self._migrate()

    # ---- schema -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            self.db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                            "applied_ms bigint NOT NULL)")
            version = self.schema_version
            if version > len(MIGRATIONS):
                raise StoreError(f"{display_url(self.url)}: schema version {version} is newer than this "
                                 f"controller's {len(MIGRATIONS)}; upgrade the controller")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                self.db.execute(script)
                self.db.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (number, int(time.time() * 1000)))

    @property
    def schema_version(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]

    # ---- the backend's part -------------------------------------------------------------------

    def _execute(self, sql: str, params: Sequence = ()) -> psycopg.Cursor:
        return self.db.execute(_pyformat(sql), params)

    def _executemany(self, sql: str, rows: list) -> None:
        with self.db.cursor() as cursor:
            cursor.executemany(_pyformat(sql), rows)

    def _atomic(self) -> AbstractContextManager:
        return self.db.transaction()

    def _name_match(self, name_glob: str) -> tuple[str, str]:
        return "s.name LIKE ?", glob_to_like(name_glob)

    def _series_ids(self, keys: set[tuple[str, str]]) -> None:
        """Cache the ids of these series, creating those that are new (one round trip each way);
        an instance creating the same series at the same time gets the same id."""
        missing = sorted(k for k in keys if k not in self._series)
        if not missing:
            return
        devices, names = [d for d, _ in missing], [n for _, n in missing]
        self.db.execute("INSERT INTO series (device_id, name) SELECT * FROM unnest(%s::text[], %s::text[]) "
                        "ON CONFLICT DO NOTHING", (devices, names))
        found = self.db.execute("SELECT s.device_id, s.name, s.id FROM series s JOIN unnest(%s::text[], %s::text[]) "
                                "AS k(device_id, name) USING (device_id, name)", (devices, names)).fetchall()
        self._series.update({(d, n): i for d, n, i in found})

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
        self._mark_late(list(zip(ids, stamps)))
        return added

    def save_session(self, session: dict) -> None:
        try:
            # A savepoint: the refusal leaves the caller's transaction usable, as in SQLite.
            with self.db.transaction():
                self._execute(upsert("sessions", ("id",)), values("sessions", session))
        except psycopg.errors.UniqueViolation as exc:
            raise SessionConflict(f"device {session['device_id']} already has an active session") from exc

    def rollup(self, now_ms: int, max_series: int = ROLLUP_SERIES, *, late: bool = True) -> int:
        """One instance at a time (the others wait), inside the caller's transaction."""
        self.db.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK,))
        return super().rollup(now_ms, max_series, late=late)

    def size_bytes(self) -> int:
        return self.db.execute("SELECT pg_database_size(current_database())").fetchone()[0]

    def table_bytes(self) -> dict[str, int]:
        """Bytes on disk per table, its indexes and TOAST included (for the bench's bytes per device-day)."""
        return dict(self.db.execute("SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN "
                                    "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                                    "AND c.relkind = 'r'").fetchall())

    def close(self) -> None:
        self.db.close()
