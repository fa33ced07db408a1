"""`rtk-qos controller`: load the configuration, run the engine and the HTTP API until signalled."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from ..settings import ConfigError
from . import config as config_mod
from .store import StoreError, display_url

log = logging.getLogger("rtk_qos.controller")
SWITCH_INTERVAL_S = 0.0005


def add_parser(commands) -> None:
    p = commands.add_parser("controller", help="run the fleet controller (HTTP API, sessions, alerts, storage)",
                            description="Run the controller. Settings: defaults < TOML file < "
                                        "RTK_QOS_CONTROLLER_* environment < these flags.")
    p.add_argument("--config", help="TOML configuration file (or RTK_QOS_CONTROLLER_CONFIG)")
    p.add_argument("--broker-host")
    p.add_argument("--broker-port", type=int)
    p.add_argument("--http-host", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, help="0: any free port")
    p.add_argument("--state-dir", help="where the store and the generated token live")
    p.add_argument("--store", help="store URL: sqlite:///path (default: <state-dir>/controller.db) or "
                                   "postgresql://user@host/db")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.set_defaults(handler=run)


def _flags(ns: argparse.Namespace) -> dict:
    flags: dict = {}
    for key in ("state_dir", "log_level"):
        if getattr(ns, key):
            flags[key] = getattr(ns, key)
    for section, pairs in (("broker", (("host", ns.broker_host), ("port", ns.broker_port))),
                           ("http", (("host", ns.http_host), ("port", ns.http_port))),
                           ("store", (("url", ns.store),))):
        given = {k: v for k, v in pairs if v is not None}
        if given:
            flags[section] = given
    return flags


async def serve(config: dict) -> None:
    from aiohttp import web

    from .api import Api, Hub
    from .service import Engine
    token = config_mod.bearer_token(config)
    hub = Hub()
    hub.loop = asyncio.get_running_loop()
    engine = Engine(config, on_note=hub.publish)
    engine.start()
    runner = web.AppRunner(Api(engine, token, hub).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config["http"]["host"], config["http"]["port"])
    await site.start()
    host, port = runner.addresses[0][:2]
    b = config["broker"]
    print(f"rtk-qos controller -> mqtt://{b['host']}:{b['port']} (client id {b['client_id']})\n"
          f"  dashboard  http://{host}:{port}/\n"
          f"  API        http://{host}:{port}/api/qos/overview   (OpenAPI: /api/openapi.json)\n"
          f"  metrics    http://{host}:{port}/metrics\n"
          f"  live       curl -N http://{host}:{port}/api/events\n"
          f"  writes     Authorization: Bearer <token in {config['http']['token'] and 'the configuration' or config['state_dir'] + '/token'}>\n"
          f"  store      {display_url(config['store']['url'])}\n"
          f"  Ctrl-C stops the controller.", file=sys.stderr, flush=True)
    done = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        hub.loop.add_signal_handler(sig, done.set)
    await done.wait()
    log.info("stopping")
    hub.close()
    await runner.cleanup()
    engine.stop()


def run(ns: argparse.Namespace) -> int:
    try:
        config = config_mod.load(ns.config, flags=_flags(ns))
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config["log_level"].upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # MQTT is in the receiver process; the event loop (the live stream, the API) still shares the
    # GIL with the busy ingest thread, and at the default 5 ms switch interval each hand-off of an
    # alert to the stream could wait that long.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        asyncio.run(serve(config))
    except OSError as exc:  # the HTTP port is taken, the state dir is not writable
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:  # the database is unreachable, refuses us, or has a newer schema
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
