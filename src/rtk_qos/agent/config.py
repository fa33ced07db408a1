"""Agent configuration: defaults, then one TOML file, then RTK_QOS_* environment, then CLI flags.

Every key has a default that works on a fresh device: the device id is the MAC
of the primary interface, the broker is localhost:1883.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import re
from typing import Any, Mapping, Optional

from ..collectors import links
from ..protocol.topics import DEVICE_ID, NAME
from ..settings import ConfigError, env_overrides, merge, read_toml

DEFAULTS: dict[str, Any] = {
    "device_id": "",            # empty: MAC of the primary interface
    "tenant": "default",
    "site": "home",
    "group_ids": [],
    "subscribe_broadcast": True,
    "state_dir": "",            # empty: /var/lib/rtk-qos as root, else ~/.local/state/rtk-qos
    "log_level": "info",
    "broker": {
        "host": "localhost",
        "port": 1883,
        "protocol": "3.1.1",    # or "5"
        "keepalive_s": 30,
        "client_id": "",        # empty: rtk-qos-<device_id>, stable so the session persists
        "session_expiry_s": 7 * 86400,  # MQTT 5: how long the broker keeps our session offline
        "username": "",
        "password": "",
        "tls": False,
        "ca_file": "",
        "cert_file": "",
        "key_file": "",
        "reconnect_min_s": 1.0,
        "reconnect_max_s": 60.0,
    },
    "limits": {
        "max_running": 4,           # commands executing at once
        "max_queued": 16,           # accepted commands waiting for a worker
        "max_payload_bytes": 65536,
        "dedupe_entries": 1024,
        "dedupe_ttl_s": 3600,
        "resource_conflict": "reject",  # or "queue": same-resource commands wait their turn
    },
    "security": {
        "allow_router_changes": False,  # qos_config / applying qos_auto_optimization
    },
    "shaping": {
        "confirm_timeout_s": 120.0,  # an applied change not confirmed (qos_shaping_confirm) in time is reverted
        "check_every_s": 10.0,       # a confirmed plan is re-applied if its tree is gone (link flap)
        "business_hours": "09:00-18:00",  # time_window spans, local time (business hours: Mon-Fri)
        "peak_hours": "19:00-23:00",
        "off_peak": "23:00-07:00",
    },
    "telemetry": {
        "network_period_s": 30,
        "state_period_s": 60,
        "sample_period_s": 1.0,
        "qos_period_s": 10.0,   # telemetry/qos: the 1 Hz samples, batched; 0: off
    },
    "probe": {
        "interval_s": 1.0,   # per host; qos_performance_monitor and the gateway probe
        "timeout_s": 2.0,
    },
    "history": {
        "path": "",            # empty: <state_dir>/history.bin; a tmpfs path spares flash
        "save_every_s": 900,   # and at a clean shutdown
        "max_interfaces": 16,  # 3 series each; per series 253,440 bytes of history + 33,464 of detector
        "probe_interval_s": 1.0,  # continuous probe of the default gateway and probe_targets; 0: off
        "probe_targets": [],      # extra hosts (names or addresses): series probe.<host>.*, 3 each
        "ml_backend": "native",   # qos_anomaly_detection's forest: native, or sklearn (if installed)
    },
    "outbox": {
        "max_messages": 1000,
        "max_bytes": 4 * 2**20,
    },
    "device": {
        "device_type": "router",
        "manufacturer": "",
        "model": "",
        "hardware_version": "",
        "serial_number": "",
    },
}

ENV_PREFIX = "RTK_QOS_"
MAX_PROBE_TARGETS = 8
MAX_INTERFACES = 64  # the agent's sampler follows at most 64 links (the agent passes it to the shared LinkSampler)
PROBE_INTERVAL_RANGE = (0.1, 60.0)
HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")
PROBE_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:%-]{0,252}$")  # a host name or an address


# The controller's variables share the prefix; they are not the agent's to read.
CONTROLLER_ENV_PREFIX = ENV_PREFIX + "CONTROLLER_"


def load(path: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
         flags: Optional[dict] = None) -> dict:
    environ = os.environ if environ is None else environ
    config = copy.deepcopy(DEFAULTS)
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    config["_broker_configured"] = False
    if path:
        data = read_toml(path)
        merge(config, data, "")
        config["_broker_configured"] |= "broker" in data and any(k in data["broker"] for k in ("host", "port"))
    env = env_overrides(environ, DEFAULTS, ENV_PREFIX, skip=(CONTROLLER_ENV_PREFIX,))
    merge(config, env, "environment ", from_text=True)
    config["_broker_configured"] |= "broker" in env
    if flags:
        merge(config, flags, "flag ")
        config["_broker_configured"] |= bool(flags.get("broker"))
    return _finish(config)


def _finish(config: dict) -> dict:
    if not config["device_id"]:
        primary = links.primary_interface()
        if primary is None or not primary.mac:
            raise ConfigError("device_id: not set and no interface with a MAC address to derive it from")
        config["device_id"] = primary.mac.replace(":", "").lower()
    for key, pattern in (("device_id", DEVICE_ID), ("tenant", NAME), ("site", NAME)):
        if not pattern.match(config[key]):
            raise ConfigError(f"{key}: {config[key]!r} does not match {pattern.pattern}")
    broker = config["broker"]
    if broker["protocol"] not in ("3.1.1", "5"):
        raise ConfigError(f"broker.protocol: {broker['protocol']!r} is not 3.1.1 or 5")
    if not broker["client_id"]:
        broker["client_id"] = f"rtk-qos-{config['device_id']}"
    if config["limits"]["resource_conflict"] not in ("reject", "queue"):
        raise ConfigError("limits.resource_conflict: must be reject or queue")
    for section, key, low in (("limits", "max_running", 1), ("limits", "max_queued", 0),
                              ("limits", "max_payload_bytes", 1024), ("telemetry", "network_period_s", 1),
                              ("telemetry", "state_period_s", 1), ("outbox", "max_messages", 1),
                              ("probe", "interval_s", 0.01), ("probe", "timeout_s", 0.05),
                              ("history", "save_every_s", 1), ("history", "max_interfaces", 1)):
        if config[section][key] < low:
            raise ConfigError(f"{section}.{key}: {config[section][key]} is below {low}")
    if config["history"]["max_interfaces"] > MAX_INTERFACES:
        raise ConfigError(f"history.max_interfaces: {config['history']['max_interfaces']} is above {MAX_INTERFACES} "
                          "(the links the agent samples at most)")
    _check_probe(config["history"])
    _check_shaping(config["shaping"])
    if config["history"]["ml_backend"] not in ("native", "sklearn"):
        raise ConfigError(f"history.ml_backend: {config['history']['ml_backend']!r} is not native or sklearn")
    # Found, not imported: importing costs a second and 115 MB, paid only when a command needs it.
    if config["history"]["ml_backend"] == "sklearn" and importlib.util.find_spec("sklearn") is None:
        raise ConfigError("history.ml_backend: sklearn is not installed (pip install 'rtk-qos[ml]')")
    if not config["state_dir"]:
        config["state_dir"] = ("/var/lib/rtk-qos" if os.geteuid() == 0
                               else os.path.expanduser("~/.local/state/rtk-qos"))
    return config


def _check_shaping(shaping: dict) -> None:
    for key, low in (("confirm_timeout_s", 5.0), ("check_every_s", 1.0)):
        if not shaping[key] >= low:  # NaN fails too
            raise ConfigError(f"shaping.{key}: {shaping[key]} is below {low}")
    for key in ("business_hours", "peak_hours", "off_peak"):
        if not HOURS.match(shaping[key]):
            raise ConfigError(f"shaping.{key}: {shaping[key]!r} is not HH:MM-HH:MM (local time)")


def _check_probe(history: dict) -> None:
    interval, targets = history["probe_interval_s"], history["probe_targets"]
    low, high = PROBE_INTERVAL_RANGE
    if interval != 0 and not low <= interval <= high:  # NaN fails too
        raise ConfigError(f"history.probe_interval_s: {interval} is not 0 (off) or between {low} and {high}")
    if len(targets) > MAX_PROBE_TARGETS:
        raise ConfigError(f"history.probe_targets: {len(targets)} hosts, at most {MAX_PROBE_TARGETS}")
    for target in targets:
        if not isinstance(target, str) or not PROBE_TARGET.match(target):
            raise ConfigError(f"history.probe_targets: {target!r} is not a host name or address")
        if target == "gateway":
            raise ConfigError("history.probe_targets: 'gateway' names the default gateway, which is always probed")
    if len(set(targets)) != len(targets):
        raise ConfigError("history.probe_targets: a host is listed twice")
