"""What the SQL backends share: the statements (written with `?` placeholders; a backend with
another style translates them in `_execute`), the tiers' rollup, retention and every read.

A backend provides the connection (`self.db`), `_execute`/`_executemany`, `_atomic` (one
transaction), `_series_id`s, `_name_match` (series name patterns), `add_samples` and the schema.
"""
from __future__ import annotations

import abc
import json
import threading
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Iterator, Optional, Sequence

from . import HOUR_MS, MINUTE_MS, Agg, Retention, Store

ROLLUP_GRACE_MS = 15_000
# Series per tier per rollup call: about 3,000 raw rows, a few ms, between two ingest batches (an
# alert that comes meanwhile waits for it).
ROLLUP_SERIES = 50
TIERS = (("samples_minute", "samples_raw", MINUTE_MS), ("samples_hour", "samples_minute", HOUR_MS))
# Columns holding JSON, per table (alerts.state is plain text, devices.state a payload).
JSON_COLUMNS = {"devices": {"health_reasons", "capabilities", "attr", "state", "telemetry"},
                "alerts": {"detail"}, "sessions": {"config", "progress"}, "commands": {"args"},
                "replies": {"ack", "result"}, "events": {"payload"}}
COLUMNS = {
    "devices": ("device_id", "tenant", "site", "status", "status_since_ms", "reason", "last_seen_ms", "health",
                "health_reasons", "capabilities", "attr", "state", "telemetry", "updated_ms"),
    "alerts": ("key", "source", "device_id", "session_id", "metric", "target", "severity", "state", "opened_ms",
               "closed_ms", "value", "threshold", "threshold_type", "unit", "description", "detail", "updated_ms"),
    "sessions": ("id", "device_id", "status", "config", "started_ms", "ends_ms", "stopped_ms", "stop_reason",
                 "progress", "evaluations"),
    "commands": ("id", "target", "op", "args", "dialect", "sent_ms", "deadline_ms", "status", "updated_ms"),
    "replies": ("command_id", "device_id", "accepted", "ack", "acked_ms", "status", "result", "finished_ms",
                "duplicates", "late"),
}


def row(table: str, description: Sequence, values: tuple) -> dict:
    """A result row as a dict, its JSON columns (fetched as text) decoded."""
    json_columns = JSON_COLUMNS[table]
    return {name: json.loads(value) if name in json_columns and value is not None else value
            for (name, *_), value in zip(description, values)}


def values(table: str, record: dict) -> list:
    json_columns = JSON_COLUMNS[table]
    return [json.dumps(record.get(c), separators=(",", ":")) if c in json_columns and record.get(c) is not None
            else record.get(c) for c in COLUMNS[table]]


def upsert(table: str, key: tuple, keep: tuple = ()) -> str:
    """Insert a record, or update the one with this key (all but `key` and `keep` columns). An
    upsert, never a REPLACE: a REPLACE deletes whatever row another unique index points at."""
    columns = COLUMNS[table]
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key + keep)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


def where(equal: Sequence[tuple[str, object]], since: Optional[tuple[str, Optional[int]]] = None) -> tuple[str, list]:
    """A WHERE clause (or "") of `column = value` for each value given, and `since`: (a clause
    whose every `?` takes the value, the value), left out when the value is None."""
    clauses, params = [], []
    for column, value in equal:
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since is not None and since[1] is not None:
        clauses.append(since[0])
        params += [since[1]] * since[0].count("?")
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


class SqlStore(Store):
    # How a query joins series to a tier: the series table must drive (index ranges, never a scan).
    JOIN = "JOIN"

    def __init__(self, retention: Retention):
        self.retention = retention
        self._series: dict[tuple[str, str], int] = {}
        self._depth = 0
        self._lock = threading.Lock()

    # ---- what a backend provides ------------------------------------------------------------------

    @abc.abstractmethod
    def _execute(self, sql: str, params: Sequence = ()) -> Any:
        """A DB-API cursor of `sql` (with `?` placeholders) run."""

    @abc.abstractmethod
    def _executemany(self, sql: str, rows: list) -> None: ...

    @abc.abstractmethod
    def _atomic(self) -> AbstractContextManager:
        """One transaction: committed at exit, rolled back on an exception."""

    @abc.abstractmethod
    def _name_match(self, name_glob: str) -> tuple[str, str]:
        """(a condition on `s.name` with one `?`, its parameter) for a GLOB pattern."""

    # ---- writes -----------------------------------------------------------------------------------

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
                with self._atomic():
                    yield
            except BaseException:
                self._series.clear()  # ids minted in the rolled-back transaction are gone
                raise
            finally:
                self._depth = 0

    def upsert_device(self, device: dict) -> None:
        self._execute(upsert("devices", ("device_id",)), values("devices", device))

    def _watermark(self, tier: str) -> int:
        found = self._execute("SELECT value FROM meta WHERE key = ?", (tier,)).fetchone()
        return found[0] if found else 0

    def _meta(self, key: str, value: Optional[int] = None) -> int:
        if value is not None:
            self._execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                          (key, value))
            return value
        return self._watermark(key)

    def _mark_late(self, samples: list[tuple[int, int]]) -> None:
        """Samples ((series id, ts)) in a minute already rolled up, or in the pass under way (whose
        series may be done already), make their minute computed again."""
        rolled = max(self._watermark("samples_minute"), self._meta("samples_minute.target"))
        late = sorted({(sid, ts - ts % MINUTE_MS) for sid, ts in samples if ts < rolled})
        if late:
            self._executemany("INSERT INTO rollup_dirty VALUES ('samples_minute', ?, ?) ON CONFLICT DO NOTHING", late)

    def add_event(self, device_id, event_type, ts_ms, severity, digest, payload) -> bool:
        cursor = self._execute("INSERT INTO events (device_id, event_type, ts, severity, digest, payload) "
                               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, digest) DO NOTHING",
                               (device_id, event_type, ts_ms, severity, digest,
                                json.dumps(payload, separators=(",", ":"))))
        return cursor.rowcount == 1

    def save_alert(self, alert: dict) -> int:
        return self._execute(upsert("alerts", ("key",), ("opened_ms",)) + " RETURNING id",
                             values("alerts", alert)).fetchone()[0]

    def save_command(self, command: dict) -> None:
        self._execute(upsert("commands", ("id",)), values("commands", command))

    def save_reply(self, reply: dict) -> None:
        self._execute(upsert("replies", ("command_id", "device_id")), values("replies", reply))

    def rollup(self, now_ms: int, max_series: int = ROLLUP_SERIES, *, late: bool = True) -> int:
        """Aggregate complete minutes (and hours) for at most `max_series` series per tier per call:
        a pass over every series is spread over calls, so ingest never waits long on it. A pass
        keeps its target end until done; the tier's watermark moves only then. `late`: also compute
        again the buckets that got samples after they were rolled up. Returns the rows written, or
        1 for a call that only ended a pass (0: nothing to do)."""
        written = 0
        # A minute is complete ROLLUP_GRACE_MS after its end; a sample arriving later (a delayed
        # batch) marks its minute dirty and the minute is computed again.
        done = now_ms - ROLLUP_GRACE_MS
        complete = {"samples_minute": done - done % MINUTE_MS}
        complete["samples_hour"] = complete["samples_minute"] - complete["samples_minute"] % HOUR_MS
        for tier, finer, width in TIERS:
            aggregate = ("COUNT(*), SUM(value), MIN(value), MAX(value)" if finer == "samples_raw"
                         else "SUM(n), SUM(total), MIN(low), MAX(high)")
            insert = (f"INSERT INTO {tier} (series_id, ts, n, total, low, high) "
                      f"SELECT f.series_id, f.ts - f.ts % {width}, {aggregate} "
                      f"FROM series s {self.JOIN} {finer} f ON f.series_id = s.id WHERE s.id > ? AND s.id <= ? "
                      f"AND f.ts >= ? AND f.ts < ? GROUP BY 1, 2 ON CONFLICT (series_id, ts) DO UPDATE SET "
                      f"n = excluded.n, total = excluded.total, low = excluded.low, high = excluded.high")
            start, target = self._watermark(tier), self._meta(f"{tier}.target")
            if not target:
                target = complete[tier]
                if start == 0:  # the first pass: from the oldest sample of the finer tier
                    first = self._execute(f"SELECT MIN((SELECT MIN(ts) FROM {finer} WHERE series_id = s.id)) "
                                          f"FROM series s").fetchone()[0]
                    start = target if first is None else min(target, first - first % width)
                    self._meta(tier, start)
                if target > start:
                    self._meta(f"{tier}.target", target)
            if target and target > start:
                cursor = self._meta(f"{tier}.cursor")
                last = self._execute("SELECT MAX(id) FROM (SELECT id FROM series WHERE id > ? ORDER BY id "
                                     "LIMIT ?) AS page", (cursor, int(max_series))).fetchone()[0]
                if last is not None:
                    written += self._execute(insert, (cursor, last, start, target)).rowcount
                    self._meta(f"{tier}.cursor", last)
                else:  # every series done: the pass is complete
                    written += 1
                    self._meta(tier, target)
                    self._meta(f"{tier}.cursor", 0)
                    self._meta(f"{tier}.target", 0)
            if not late:
                continue
            # Late buckets in one statement, not one each: a fleet draining its outboxes after an
            # outage makes thousands at a time (bench/controller.py's flood).
            written += self._execute(
                f"INSERT INTO {tier} (series_id, ts, n, total, low, high) SELECT d.series_id, d.ts, {aggregate} "
                f"FROM rollup_dirty d {self.JOIN} {finer} f ON f.series_id = d.series_id AND f.ts >= d.ts "
                f"AND f.ts < d.ts + {width} WHERE d.tier = ? GROUP BY 1, 2 ON CONFLICT (series_id, ts) DO UPDATE "
                f"SET n = excluded.n, total = excluded.total, low = excluded.low, high = excluded.high",
                (tier,)).rowcount
            if tier == "samples_minute":
                self._execute(f"INSERT INTO rollup_dirty SELECT 'samples_hour', series_id, ts - ts % {HOUR_MS} "
                              "FROM rollup_dirty WHERE tier = 'samples_minute' AND ts < ? ON CONFLICT DO NOTHING",
                              (self._watermark("samples_hour"),))
            self._execute("DELETE FROM rollup_dirty WHERE tier = ?", (tier,))
        return written

    def prune(self, now_ms: int) -> int:
        r = self.retention
        removed = 0
        for table, keep_ms in (("samples_raw", r.raw_hours * HOUR_MS), ("samples_minute", r.minute_days * 86400_000),
                               ("samples_hour", r.hour_days * 86400_000), ("events", r.minute_days * 86400_000)):
            # Per series for the tiers (their key starts with series_id): index ranges, not a scan.
            condition = "series_id IN (SELECT id FROM series) AND ts < ?" if table != "events" else "ts < ?"
            removed += self._execute(f"DELETE FROM {table} WHERE {condition}", (int(now_ms - keep_ms),)).rowcount
        return removed

    # ---- reads ------------------------------------------------------------------------------------

    def _all(self, table: str, sql: str, params: Sequence = ()) -> list[dict]:
        cursor = self._execute(sql, params)
        return [row(table, cursor.description, found) for found in cursor.fetchall()]

    def devices(self) -> list[dict]:
        return self._all("devices", "SELECT * FROM devices ORDER BY device_id")

    def device(self, device_id: str) -> Optional[dict]:
        found = self._all("devices", "SELECT * FROM devices WHERE device_id = ?", (device_id,))
        return found[0] if found else None

    def series_names(self, device_id: str) -> list[str]:
        return [r[0] for r in self._execute("SELECT name FROM series WHERE device_id = ? ORDER BY name",
                                            (device_id,)).fetchall()]

    def _buckets(self, condition: str, params: tuple, start: int, end: int, step: int, out: dict,
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
            bucket = f"(ts - {int(start)}) / {int(step)}" if step else "0"
            rows = self._execute(
                f"SELECT s.device_id, {bucket}, {aggregate} FROM series s {self.JOIN} {tier} ON series_id = s.id "
                f"WHERE {condition} AND ts >= ? AND ts < ? GROUP BY 1, 2", (*params, lo, hi)).fetchall()
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
        condition, pattern = self._name_match(name_glob)
        self._buckets(condition, (pattern,), start_ms, end_ms, 0, out, finest)
        return {device_id: agg for (device_id, _), agg in out.items()}

    def fleet_series(self, name_glob, start_ms, end_ms, step_ms):
        finest = "samples_minute" if step_ms % MINUTE_MS == 0 and start_ms % MINUTE_MS == 0 else "samples_raw"
        out: dict = {}
        condition, pattern = self._name_match(name_glob)
        self._buckets(condition, (pattern,), start_ms, end_ms, step_ms, out, finest)
        fleet: dict = {}
        for (device_id, index), agg in out.items():
            fleet.setdefault(device_id, {})[start_ms + index * step_ms] = agg
        return fleet

    def raw(self, device_id, name, start_ms, end_ms):
        return [tuple(r) for r in self._execute(
            "SELECT ts, value FROM samples_raw JOIN series s ON s.id = series_id WHERE s.device_id = ? AND s.name = ? "
            "AND ts >= ? AND ts < ? ORDER BY ts", (device_id, name, start_ms, end_ms)).fetchall()]

    def alerts(self, device_id=None, severity=None, state=None, since_ms=None, session_id=None, limit=500):
        clause, params = where((("device_id", device_id), ("severity", severity), ("state", state),
                                ("session_id", session_id)),
                               ("(opened_ms >= ? OR closed_ms IS NULL OR closed_ms >= ?)", since_ms))
        return self._all("alerts", f"SELECT * FROM alerts {clause} ORDER BY opened_ms DESC, id DESC LIMIT ?",
                         (*params, limit))

    def sessions(self, status=None, device_id=None):
        clause, params = where((("status", status), ("device_id", device_id)))
        return self._all("sessions", f"SELECT * FROM sessions {clause} ORDER BY started_ms DESC", params)

    def session(self, session_id):
        found = self._all("sessions", "SELECT * FROM sessions WHERE id = ?", (session_id,))
        return found[0] if found else None

    def command(self, command_id):
        found = self._all("commands", "SELECT * FROM commands WHERE id = ?", (command_id,))
        if not found:
            return None
        command = found[0]
        command["replies"] = self._all("replies", "SELECT * FROM replies WHERE command_id = ? ORDER BY device_id",
                                       (command_id,))
        return command

    def recent_commands(self, deadline_after_ms):
        commands = self._all("commands", "SELECT * FROM commands WHERE deadline_ms >= ?", (deadline_after_ms,))
        for command in commands:
            command["replies"] = self._all("replies", "SELECT * FROM replies WHERE command_id = ?", (command["id"],))
        return commands

    def events(self, device_id=None, since_ms=None, limit=500):
        clause, params = where((("device_id", device_id),), ("ts >= ?", since_ms))
        return self._all("events", f"SELECT * FROM events {clause} ORDER BY ts DESC, id DESC LIMIT ?",
                         (*params, limit))
