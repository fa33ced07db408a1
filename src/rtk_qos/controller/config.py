"""Controller configuration: defaults < one TOML file < RTK_QOS_CONTROLLER_* environment < flags."""
from __future__ import annotations

import copy
import os
import secrets
from typing import Any, Mapping, Optional

from ..protocol.topics import NAME
from ..settings import ConfigError, env_overrides, merge, read_toml

ENV_PREFIX = "RTK_QOS_CONTROLLER_"

DEFAULTS: dict[str, Any] = {
    "state_dir": "",            # empty: /var/lib/rtk-qos-controller as root, else ~/.local/state/rtk-qos-controller
    "log_level": "info",
    "tenant": "+",              # which tenants and sites to watch: a name or + (all)
    "site": "+",
    "broker": {
        "host": "localhost",
        "port": 1883,
        "client_id": "",        # empty: rtk-qos-controller-<hostname>; stable, so the broker keeps our session
        "keepalive_s": 30,
        "session_expiry_s": 7 * 86400,  # how long the broker keeps our session (and queues) while we are away
        "receive_maximum": 1000,   # QoS 1 messages the broker may have unacknowledged with us (MQTT 5)
        "username": "",
        "password": "",
        "tls": False,
        "ca_file": "",
        "cert_file": "",
        "key_file": "",
    },
    "http": {
        "host": "127.0.0.1",    # localhost only unless configured
        "port": 8080,
        "token": "",            # bearer token for writes; empty: a random one, written to <state_dir>/token
    },
    "store": {
        "url": "",              # empty: sqlite:///<state_dir>/controller.db
        "synchronous": "normal",  # or "full": an fsync per batch, survives power loss too
        "raw_hours": 6.0,
        "minute_days": 14.0,
        "hour_days": 365.0,
    },
    "ingest": {
        "batch_max": 5000,          # messages per store transaction
        "queue_max": 200000,        # QoS 0 messages waiting beyond this are dropped (counted)
    },
    "fleet": {
        "stale_after_s": 180.0,     # online but silent this long: reported stale
        "gone_after_s": 300.0,      # offline this long ends its monitoring session
    },
    "sessions": {
        "finish_grace_s": 12.0,     # after a session's end, wait this long for the device's last batch
    },
    "scale": {                      # several instances over one PostgreSQL (scaleout.py)
        "partitions": 0,            # 0: one instance, one MQTT session; else the fleet's partitions (all alike)
        "instance_id": "",          # empty: <hostname>-<pid>-<random>, new at every start
        "lease_s": 5.0,             # a partition's owner silent this long: another instance takes it
        "renew_s": 1.0,             # heartbeat and lease renewal period
        "client_prefix": "rtk-qos",  # MQTT client ids <prefix>-part-NNN (shared by the instances) and -lobby-<id>
        "http_url": "",             # how the other instances reach this one's API; empty: http://<bound address>
    },
    "commands": {
        "timeout_ms": 30000,        # default timeout_ms of a request (protocol: 1000-600000)
        "late_grace_s": 600.0,      # answers after the deadline are still recorded (late) this long
    },
}


def _hostname_id() -> str:
    return "".join(c for c in os.uname().nodename.lower() if c.isalnum() or c == "-")[:40] or "host"


def load(path: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
         flags: Optional[dict] = None) -> dict:
    environ = os.environ if environ is None else environ
    config = copy.deepcopy(DEFAULTS)
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        merge(config, read_toml(path), "")
    merge(config, env_overrides(environ, DEFAULTS, ENV_PREFIX), "environment ", from_text=True)
    if flags:
        merge(config, flags, "flag ")
    return _finish(config)


def _finish(config: dict) -> dict:
    for key in ("tenant", "site"):
        if config[key] != "+" and not NAME.match(config[key]):
            raise ConfigError(f"{key}: {config[key]!r} is neither + nor a name matching {NAME.pattern}")
    if not config["state_dir"]:
        config["state_dir"] = ("/var/lib/rtk-qos-controller" if os.geteuid() == 0
                               else os.path.expanduser("~/.local/state/rtk-qos-controller"))
    if not config["broker"]["client_id"]:
        config["broker"]["client_id"] = f"rtk-qos-controller-{_hostname_id()}"
    if not config["store"]["url"]:
        config["store"]["url"] = "sqlite://" + os.path.join(os.path.abspath(config["state_dir"]), "controller.db")
    if config["store"]["synchronous"] not in ("normal", "full"):
        raise ConfigError(f"store.synchronous: {config['store']['synchronous']!r} is not normal or full")
    if not 1000 <= config["commands"]["timeout_ms"] <= 600000:
        raise ConfigError(f"commands.timeout_ms: {config['commands']['timeout_ms']} is outside 1000-600000")
    if not 1 <= config["broker"]["receive_maximum"] <= 65535:
        raise ConfigError(f"broker.receive_maximum: {config['broker']['receive_maximum']} is outside 1-65535")
    scale = config["scale"]
    if scale["partitions"]:
        if not config["store"]["url"].startswith(("postgresql://", "postgres://")):
            raise ConfigError("scale.partitions: several instances need a PostgreSQL store (store.url postgresql://...)")
        if not 1 <= scale["partitions"] <= 1000:
            raise ConfigError(f"scale.partitions: {scale['partitions']} is outside 1-1000")
        if not 0 < scale["renew_s"] * 2 <= scale["lease_s"]:
            raise ConfigError(f"scale.lease_s: {scale['lease_s']} must be at least twice scale.renew_s "
                              f"({scale['renew_s']}), both positive")
    for section, key, low in (("http", "port", 0), ("broker", "port", 1), ("broker", "session_expiry_s", 0), ("ingest", "batch_max", 1),
                              ("ingest", "queue_max", 100), ("store", "raw_hours", 0.1),
                              ("store", "minute_days", 0.1), ("store", "hour_days", 0.1),
                              ("fleet", "stale_after_s", 1), ("fleet", "gone_after_s", 1)):
        if config[section][key] < low:
            raise ConfigError(f"{section}.{key}: {config[section][key]} is below {low}")
    return config


def bearer_token(config: dict) -> str:
    """The configured token, or one generated once and kept in the state dir (mode 0600)."""
    if config["http"]["token"]:
        return config["http"]["token"]
    path = os.path.join(config["state_dir"], "token")
    try:
        with open(path) as f:
            token = f.read().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    os.makedirs(config["state_dir"], mode=0o700, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
