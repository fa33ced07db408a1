"""The controller's storage, behind one interface: SQLite (embedded, the default) and PostgreSQL implement `Store`.

Samples are kept in tiers, as Netdata does: raw (every sample, for hours), per-minute
and per-hour aggregates (count, sum, min, max: means merge exactly) for weeks and a
year. Aggregates are recomputed from the finer tier, never incremented, so ingesting
the same message twice (a QoS 1 redelivery after a crash) changes nothing.
"""
from __future__ import annotations

import abc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional
from urllib.parse import urlsplit, urlunsplit

MINUTE_MS = 60_000
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Retention:
    raw_hours: float = 6.0
    minute_days: float = 14.0
    hour_days: float = 365.0


@dataclass
class Agg:
    """Samples of one bucket: the mean merges exactly from count and sum."""
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def merge(self, count: int, total: float, low: float, high: float) -> None:
        self.count += count
        self.total += total
        self.low = min(self.low, low)
        self.high = max(self.high, high)

    @property
    def mean(self) -> Optional[float]:
        return self.total / self.count if self.count else None


class StoreError(Exception):
    pass


class SessionConflict(StoreError):
    """A device already has an active monitoring session."""


class Store(abc.ABC):
    """One writer thread calls the write methods inside `transaction()`; readers use their own instance."""

    # ---- writes ---------------------------------------------------------------------------------
    @abc.abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[None]: ...

    @abc.abstractmethod
    def upsert_device(self, device: dict) -> None: ...

    @abc.abstractmethod
    def add_samples(self, rows: Iterable[tuple[str, str, int, float]]) -> int:
        """(device_id, series name, ts_ms, value) rows; returns how many were new."""

    @abc.abstractmethod
    def add_event(self, device_id: str, event_type: str, ts_ms: int, severity: Optional[str], digest: int,
                  payload: dict) -> bool:
        """False when this exact message (same digest from the same device) is already stored."""

    @abc.abstractmethod
    def save_alert(self, alert: dict) -> int:
        """Insert or update the alert with this `key`; returns its id."""

    @abc.abstractmethod
    def save_session(self, session: dict) -> None:
        """Raises SessionConflict when another active session holds the device."""

    @abc.abstractmethod
    def save_command(self, command: dict) -> None: ...

    @abc.abstractmethod
    def save_reply(self, reply: dict) -> None: ...

    @abc.abstractmethod
    def rollup(self, now_ms: int, *, late: bool = True) -> int:
        """Aggregate complete minutes and hours, a bounded share per call; 0 when there is nothing
        left to do (the caller calls again soon while it is not). `late`: also compute again the
        buckets that got samples after they were aggregated."""

    @abc.abstractmethod
    def prune(self, now_ms: int) -> int:
        """Drop what is past its tier's retention; returns the rows removed."""

    # ---- reads ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def devices(self) -> list[dict]: ...

    @abc.abstractmethod
    def device(self, device_id: str) -> Optional[dict]: ...

    @abc.abstractmethod
    def series_names(self, device_id: str) -> list[str]: ...

    @abc.abstractmethod
    def series(self, device_id: str, name: str, start_ms: int, end_ms: int, step_ms: int) -> list[tuple[int, Agg]]:
        """Buckets of `step_ms` over [start, end), from the coarsest tier that has the resolution."""

    @abc.abstractmethod
    def stats(self, name_glob: str, start_ms: int, end_ms: int) -> dict[str, Agg]:
        """device_id -> aggregate of every series matching `name_glob` (GLOB) over [start, end)."""

    @abc.abstractmethod
    def fleet_series(self, name_glob: str, start_ms: int, end_ms: int, step_ms: int) -> dict[str, dict[int, Agg]]:
        """device_id -> bucket start -> aggregate of every series matching `name_glob` (GLOB), in buckets of
        `step_ms` over [start, end): one query for a whole fleet's sparklines."""

    @abc.abstractmethod
    def raw(self, device_id: str, name: str, start_ms: int, end_ms: int) -> list[tuple[int, float]]: ...

    @abc.abstractmethod
    def alerts(self, device_id: Optional[str] = None, severity: Optional[str] = None, state: Optional[str] = None,
               since_ms: Optional[int] = None, session_id: Optional[str] = None, limit: int = 500) -> list[dict]: ...

    @abc.abstractmethod
    def sessions(self, status: Optional[str] = None, device_id: Optional[str] = None) -> list[dict]: ...

    @abc.abstractmethod
    def session(self, session_id: str) -> Optional[dict]: ...

    @abc.abstractmethod
    def command(self, command_id: str) -> Optional[dict]:
        """The command with `replies` (one per answering device)."""

    @abc.abstractmethod
    def recent_commands(self, deadline_after_ms: int) -> list[dict]:
        """Commands whose deadline is after this time, with their replies (to correlate after a restart)."""

    @abc.abstractmethod
    def events(self, device_id: Optional[str] = None, since_ms: Optional[int] = None, limit: int = 500) -> list[dict]: ...

    @abc.abstractmethod
    def size_bytes(self) -> int: ...

    @abc.abstractmethod
    def close(self) -> None: ...


def display_url(url: str) -> str:
    """The store URL with its password (if any) masked, for logs and the start banner."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def open_store(url: str, retention: Retention = Retention(), synchronous: str = "normal",
               writer: bool = False) -> Store:
    """`sqlite:///path/to/file.db` (the default backend) or `postgresql://user@host/db` (any libpq
    URL; several controllers may share one). `writer`: the instance of the one writing thread (it
    also keeps the SQLite file's housekeeping off that thread). `synchronous` is SQLite's; PostgreSQL
    commits durably by its own configuration."""
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore
        return SQLiteStore(url[len("sqlite://"):], retention, synchronous, writer)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore
        return PostgresStore(url, retention)
    raise StoreError(f"store: {display_url(url)!r} is not a supported store URL (sqlite:///path or postgresql://...)")
