"""`rtk-qos agent`: load the configuration, start a local broker if needed, run until signalled."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from . import broker, config as config_mod

log = logging.getLogger("rtk_qos")


def add_parser(commands) -> None:
    p = commands.add_parser("agent", help="run the MQTT agent",
                            description="Run the QoS agent. Settings: defaults < TOML file < RTK_QOS_* "
                                        "environment < these flags.")
    p.add_argument("--config", help="TOML configuration file (or RTK_QOS_CONFIG)")
    p.add_argument("--broker-host")
    p.add_argument("--broker-port", type=int)
    p.add_argument("--mqtt5", action="store_true", help="speak MQTT 5 instead of 3.1.1")
    p.add_argument("--device-id", help="12 lower-case hex digits; default: MAC of the primary interface")
    p.add_argument("--tenant")
    p.add_argument("--site")
    p.add_argument("--state-dir", help="where the outbox lives (a tmpfs path spares a router's flash)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.set_defaults(handler=run)


def _flags(ns: argparse.Namespace) -> dict:
    flags: dict = {}
    for key in ("device_id", "tenant", "site", "state_dir", "log_level"):
        if getattr(ns, key):
            flags[key] = getattr(ns, key)
    broker_flags = {}
    if ns.broker_host:
        broker_flags["host"] = ns.broker_host
    if ns.broker_port:
        broker_flags["port"] = ns.broker_port
    if ns.mqtt5:
        broker_flags["protocol"] = "5"
    if broker_flags:
        flags["broker"] = broker_flags
    return flags


def run(ns: argparse.Namespace) -> int:
    try:
        config = config_mod.load(ns.config, flags=_flags(ns))
    except config_mod.ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config["log_level"].upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        local = broker.ensure(config)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from .core import Agent  # after logging is set up: importing commands may log
    agent = Agent(config)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    agent.start()
    b = config["broker"]
    print(f"rtk-qos agent {config['device_id']} -> mqtt://{b['host']}:{b['port']} (MQTT {b['protocol']})\n"
          f"  commands on   {agent.topics.cmd_req}\n"
          f"  try, in a second terminal:\n"
          f"    .venv/bin/rtk-qos ctl --broker-host {b['host']} --broker-port {b['port']} "
          f"qos_traffic_analysis --duration 5\n"
          f"  Ctrl-C stops the agent.", file=sys.stderr, flush=True)
    while not done.wait(1.0):
        pass
    log.info("stopping")
    agent.stop()
    if local is not None:
        local.stop()
    return 0
