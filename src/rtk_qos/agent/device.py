"""What the agent says about the device (attr) and about its own condition (state, telemetry).

Every field is read from the system or the configuration; what cannot be read
is left out, never filled with a placeholder.
"""
from __future__ import annotations

import os
from typing import Optional

from .. import __version__
from ..collectors import links

STATE_DEVICE_TYPES = {"router": "router", "switch": "switch", "access_point": "ap", "gateway": "router"}
# Health thresholds over the sampler's rolling window (documented in the README).
ERROR_RATE_WARNING = 0.01


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().replace(b"\0", b"").decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def _os_release() -> Optional[str]:
    openwrt = _read("/etc/openwrt_release")
    text = openwrt or _read("/etc/os-release") or ""
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    name = fields.get("DISTRIB_DESCRIPTION") or fields.get("PRETTY_NAME")
    return name.strip("'\"") if name else None


def attributes(config: dict) -> dict:
    device = config["device"]
    payload: dict = {"device_type": device["device_type"]}
    manufacturer = device["manufacturer"] or _read("/sys/class/dmi/id/sys_vendor")
    model = (device["model"] or _read("/sys/firmware/devicetree/base/model")
             or _read("/sys/class/dmi/id/product_name"))
    firmware = _os_release()
    for key, value in (("manufacturer", manufacturer), ("model", model), ("firmware_version", firmware),
                       ("hardware_version", device["hardware_version"]), ("serial_number", device["serial_number"])):
        if value:
            payload[key] = value
    primary = links.primary_interface()
    if primary is not None and primary.mac:
        payload["mac_address"] = primary.mac.lower()
    every = links.list_links()
    capabilities = ["qos"]
    if any(info.kind == "physical" for info in every):
        capabilities.append("ethernet")
    radios = os.listdir("/sys/class/ieee80211") if os.path.isdir("/sys/class/ieee80211") else []
    if radios or any(info.kind == "wlan" for info in every):
        capabilities.append("wifi")
    payload["capabilities"] = capabilities
    payload["agent_version"] = __version__
    payload["kernel"] = os.uname().release
    return payload


def device_uptime_s() -> Optional[int]:
    text = _read("/proc/uptime")
    return int(float(text.split()[0])) if text else None


def health(sampler_rates: dict, outbox_dropped: int, counter_error: Optional[str],
           outbox_error: Optional[str] = None) -> tuple[str, list[str]]:
    """ok / warning / error from what the agent sees, with the reasons."""
    reasons, level = [], "ok"
    if counter_error:
        return "error", [f"interface counters unreadable: {counter_error}"]
    if links.default_gateway(4) is None and links.default_gateway(6) is None:
        reasons.append("no default route")
    for name, rates in sampler_rates.items():
        packets = rates["rx_pps"] + rates["tx_pps"]
        bad = rates["errors_ps"] + rates["drops_ps"]
        if packets > 0 and bad / packets > ERROR_RATE_WARNING:
            reasons.append(f"{name}: {100 * bad / packets:.1f} % of packets errored or dropped")
    if outbox_error:
        reasons.append(f"outbox not writable ({outbox_error}): results are held in memory only")
    if outbox_dropped:
        reasons.append(f"{outbox_dropped} queued messages dropped while the broker was unreachable")
    if reasons:
        level = "warning"
    return level, reasons


def network_telemetry(rows: list) -> list[dict]:
    """telemetry.network interfaces from a counter snapshot: kernel counters, speed, status."""
    infos = {info.name: info for info in links.list_links()}
    out = []
    for row in rows:
        name = row[1]
        info = infos.get(name)
        if info is None or info.loopback:
            continue
        item = {"name": name, "rx_bytes": row[2], "tx_bytes": row[3], "rx_packets": row[4],
                "tx_packets": row[5], "rx_errors": row[6], "tx_errors": row[7]}
        if info.speed_mbps is not None:
            item["speed_mbps"] = info.speed_mbps
        item["status"] = ("up" if info.operstate == "up" else "down" if info.operstate in (
            "down", "lowerlayerdown", "notpresent") else "unknown")
        out.append(item)
    return out
