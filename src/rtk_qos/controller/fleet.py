"""The fleet: every device seen on the broker, from its retained lwt/state/attr and what it sends.

A device is `online` or `offline` as its lwt says (the Last Will says offline when the
broker loses it), `stale` when online but silent for `fleet.stale_after_s`. `last_seen`
is when the controller last received anything from it. Runs in the ingest thread only.
"""
from __future__ import annotations

import zlib
from typing import Callable, Optional

from ..protocol.topics import Uplink

# last_seen alone is written back at most this often per device (telemetry arrives every second).
LAST_SEEN_WRITE_MS = 10_000


class Fleet:
    def __init__(self, store, notify: Callable[[str, dict], None], stale_after_s: float):
        self.store = store
        self.notify = notify
        self.stale_after_ms = int(stale_after_s * 1000)
        self.devices: dict[str, dict] = {d["device_id"]: d for d in store.devices()}
        self._dirty: set[str] = set()
        self._written_seen: dict[str, int] = {d: v.get("last_seen_ms") or 0 for d, v in self.devices.items()}

    def seen(self, where: Uplink, now_ms: int) -> dict:
        device = self.devices.get(where.device_id)
        if device is None:
            device = self.devices[where.device_id] = {
                "device_id": where.device_id, "tenant": where.tenant, "site": where.site, "status": "unknown",
                "status_since_ms": now_ms, "health": None, "capabilities": None, "attr": None, "state": None}
            self._dirty.add(where.device_id)
            self.notify("device", {"device_id": where.device_id, "status": "discovered"})
        device["tenant"], device["site"] = where.tenant, where.site
        device["last_seen_ms"] = now_ms
        # Once per window of LAST_SEEN_WRITE_MS, each device's window shifted by its own offset: a
        # fleet discovered at once would otherwise be written back all in one batch, every window.
        phase = zlib.crc32(where.device_id.encode())
        written = self._written_seen.get(where.device_id, 0)
        if (now_ms + phase) // LAST_SEEN_WRITE_MS != (written + phase) // LAST_SEEN_WRITE_MS:
            self._dirty.add(where.device_id)
        return device

    def _status(self, device: dict, status: str, now_ms: int, reason: Optional[str]) -> None:
        if device["status"] != status:
            device["status"], device["status_since_ms"], device["reason"] = status, now_ms, reason
            self._dirty.add(device["device_id"])
            self.notify("device", {"device_id": device["device_id"], "status": status, "reason": reason})

    def lwt(self, where: Uplink, payload: dict, now_ms: int) -> None:
        device = self.seen(where, now_ms)
        status = payload.get("status")
        if status in ("online", "offline", "disconnected"):
            self._status(device, "online" if status == "online" else "offline", now_ms, payload.get("reason"))

    def state(self, where: Uplink, payload: dict, now_ms: int) -> None:
        device = self.seen(where, now_ms)
        device["state"] = payload
        if device["status"] in ("unknown", "stale"):
            self._status(device, "online", now_ms, None)
        health, reasons = payload.get("health"), payload.get("health_reasons")
        if (health, reasons) != (device.get("health"), device.get("health_reasons")):
            device["health"], device["health_reasons"] = health, reasons
            self.notify("device", {"device_id": device["device_id"], "health": health, "health_reasons": reasons})
        capabilities = payload.get("capabilities")
        if isinstance(capabilities, dict):
            device["capabilities"] = {**(device.get("capabilities") or {}), **capabilities}
        self._dirty.add(device["device_id"])

    def attr(self, where: Uplink, payload: dict, now_ms: int) -> None:
        device = self.seen(where, now_ms)
        device["attr"] = payload
        if isinstance(payload.get("capabilities"), list):
            device["capabilities"] = {**(device.get("capabilities") or {}), "features": payload["capabilities"]}
        self._dirty.add(device["device_id"])

    def telemetry(self, where: Uplink, payload: dict, now_ms: int) -> None:
        device = self.seen(where, now_ms)
        device["telemetry"] = payload
        if device["status"] in ("unknown", "stale"):
            self._status(device, "online", now_ms, None)

    def check_stale(self, now_ms: int) -> None:
        for device in self.devices.values():
            if device["status"] == "online" and now_ms - (device.get("last_seen_ms") or 0) > self.stale_after_ms:
                self._status(device, "stale", now_ms, f"nothing received for {self.stale_after_ms // 1000} s")

    def flush(self) -> None:
        """Write the changed devices (inside the batch's transaction)."""
        for device_id in self._dirty:
            device = self.devices[device_id]
            device["updated_ms"] = device.get("last_seen_ms")
            self.store.upsert_device(device)
            self._written_seen[device_id] = device.get("last_seen_ms") or 0
        self._dirty.clear()

    def absent_since(self, device_id: str) -> Optional[int]:
        """When the device went offline (or stale), None while it is online."""
        device = self.devices.get(device_id)
        if device is None:
            return None
        return device["status_since_ms"] if device["status"] in ("offline", "stale") else None
