"""The agent's metric history: named multi-resolution series (native), saved rarely and safely.

Routers keep state on flash, which wears with every write: the file is written
whole, atomically (temporary file, fsync, rename), by default every 15 minutes
and at a clean shutdown. A file that is damaged or not ours is set aside with a
reason, never a crash: the agent starts with an empty history and says so.

File layout (version 1): magic `RTKQHIST`, u32 version, u32 index length, the
index as JSON (tiers and each series' name, offset and length, and where its
detector's state is saved, that blob's offset and length under "detector"), the
blobs (native format, host byte order), and a CRC-32 of everything before it.

Threads: the agent's monitor pushes, its saver serialises, commands read. `lock`
guards the set of series and their contents: every method here takes it, and a
reader that needs several series as of one instant holds it across its reads.
"""
from __future__ import annotations

import binascii
import json
import os
import struct
import threading
import time
from typing import Callable, Optional

from ._core import HISTORY_TIERS, History
from .durable import set_aside, write_atomic

MAGIC = b"RTKQHIST"
VERSION = 1
HEADER = struct.Struct("<8sII")
CRC = struct.Struct("<I")


def history_path(config: dict) -> str:
    """Where an agent with this configuration keeps its history."""
    return config["history"]["path"] or os.path.join(config["state_dir"], "history.bin")


class HistoryStore:
    def __init__(self, tiers=HISTORY_TIERS, max_series: int = 256):
        self.tiers = tuple(tuple(t) for t in tiers)
        self.max_series = max_series
        self.series: dict[str, History] = {}
        self.detector_states: dict[str, bytes] = {}  # per series, opaque: saved and loaded beside it
        # Whoever scores the series (the agent's recorder) supplies their detectors' current
        # states here, read under the lock so they match the series they were saved with.
        self.detector_state_source: Optional[Callable[[], dict[str, bytes]]] = None
        self.refused = 0  # samples refused: out of order, or past max_series
        self.lock = threading.RLock()

    def push(self, name: str, t: int, value: float, score: float = 0.0) -> bool:
        with self.lock:
            series = self.series.get(name)
            if series is None:
                if len(self.series) >= self.max_series:
                    self.refused += 1
                    return False
                series = self.series[name] = History(self.tiers)
            if not series.push(t, value, score):
                self.refused += 1
                return False
            return True

    def names(self) -> list[str]:
        with self.lock:
            return sorted(self.series)

    def samples(self) -> int:
        with self.lock:
            return sum(series.samples for series in self.series.values())

    def memory_bytes(self) -> int:
        with self.lock:
            return len(self.series) * History.memory_bytes(self.tiers)

    # ---- persistence --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Every series as of one instant (taken under the lock; checksummed outside it)."""
        blobs, index, offset = [], [], 0
        with self.lock:
            if self.detector_state_source is not None:
                self.detector_states = self.detector_state_source()
            for name, series in sorted(self.series.items()):
                blob = series.to_bytes()
                index.append({"name": name, "offset": offset, "length": len(blob)})
                blobs.append(blob)
                offset += len(blob)
                state = self.detector_states.get(name)
                if state is not None:
                    index[-1]["detector"] = {"offset": offset, "length": len(state)}
                    blobs.append(state)
                    offset += len(state)
        meta = json.dumps({"tiers": self.tiers, "series": index, "written_at": int(time.time())}).encode()
        body = HEADER.pack(MAGIC, VERSION, len(meta)) + meta + b"".join(blobs)
        return body + CRC.pack(binascii.crc32(body))

    def save(self, path: str) -> int:
        """Write atomically; returns the bytes written."""
        data = self.to_bytes()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_atomic(path, data)
        return len(data)

    @classmethod
    def from_bytes(cls, data: bytes, tiers=HISTORY_TIERS) -> "HistoryStore":
        """Parse a saved history; ValueError with the reason when it is not a good one."""
        if len(data) < HEADER.size + CRC.size:
            raise ValueError(f"{len(data)} bytes is too short for a history file")
        magic, version, meta_len = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ValueError("not an rtk-qos history file (bad magic)")
        if version != VERSION:
            raise ValueError(f"history format version {version}, this agent reads {VERSION}")
        (crc,) = CRC.unpack_from(data, len(data) - CRC.size)
        if binascii.crc32(data[:-CRC.size]) != crc:
            raise ValueError("checksum mismatch (damaged or truncated)")
        try:
            meta = json.loads(data[HEADER.size:HEADER.size + meta_len])
        except ValueError as exc:
            raise ValueError(f"unreadable index: {exc}") from None
        if tuple(tuple(t) for t in meta["tiers"]) != tuple(tuple(t) for t in tiers):
            raise ValueError(f"tiers {meta['tiers']} differ from this agent's {list(tiers)}")
        store = cls(tiers)
        base = HEADER.size + meta_len
        for entry in meta["series"]:
            series = History(store.tiers)
            blob = data[base + entry["offset"]:base + entry["offset"] + entry["length"]]
            try:
                series.load_bytes(blob)
            except ValueError as exc:
                raise ValueError(f"series {entry['name']!r}: {exc}") from None
            store.series[entry["name"]] = series
            if "detector" in entry:
                start = base + entry["detector"]["offset"]
                store.detector_states[entry["name"]] = data[start:start + entry["detector"]["length"]]
        return store

    @classmethod
    def load(cls, path: str, tiers=HISTORY_TIERS) -> tuple["HistoryStore", Optional[str]]:
        """(store, problem). No file: an empty store. A bad file is renamed aside and reported."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return cls(tiers), None
        except OSError as exc:
            return cls(tiers), f"history {path} unreadable: {exc.strerror}; starting empty"
        try:
            return cls.from_bytes(data, tiers), None
        except (ValueError, KeyError, TypeError) as exc:
            aside = set_aside(path)
            return cls(tiers), f"history {path} set aside as {aside}: {exc}; starting empty"
