"""rtk-qos command line.

  rtk-qos run <op> ...    run one QoS command here, once, and print its result message
  rtk-qos agent ...       run the MQTT agent
  rtk-qos ctl <op> ...    send a command to an agent through the broker; print ack and result
  rtk-qos collect [name]  print one reading of the collectors (--list: each one's cost and default)
  rtk-qos controller ...  run the fleet controller (HTTP API, monitoring sessions, alerts, storage)

Op flags are generated from the protocol's argument table (`opflags.py`, shared
with `ctl`), so `--help`, the validation and the MQTT path agree.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Optional

from . import collectors, ctl
from .commands import load_all
from .commands.base import Context
from .commands.runner import execute, prepare
from .opflags import add_op_parsers, op_args
from .protocol import messages
from .protocol.errors import CommandError


def build_parser() -> argparse.ArgumentParser:
    from . import detect
    from .agent import main as agent_main
    from .controller import main as controller_main
    parser = argparse.ArgumentParser(prog="rtk-qos", description="QoS monitoring agent for routers")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one QoS command here once and print its result JSON")
    run.add_argument("--history", help="metric history file the command reads (qos_anomaly_detection; "
                                       "default: the agent's, from its configuration)")
    add_op_parsers(run, {op: spec.summary for op, spec in load_all().items()})
    collect = commands.add_parser("collect", help="print one reading of each collector, or of those named")
    collect.add_argument("names", nargs="*", metavar="NAME", help="collectors to read (default: those on by default)")
    collect.add_argument("--list", action="store_true", help="list the collectors, their cost and default")
    collect.set_defaults(handler=run_collectors)
    agent_main.add_parser(commands)
    ctl.add_parser(commands)
    controller_main.add_parser(commands)
    detect.add_parser(commands)
    return parser


def _progress(message: dict) -> None:
    print(json.dumps(message, separators=(",", ":")), file=sys.stderr, flush=True)


def _agent_history_path() -> Optional[str]:
    from .agent import config as agent_config
    from .history import history_path
    try:
        return history_path(agent_config.load())
    except agent_config.ConfigError:
        return None


def run_once(ns: argparse.Namespace) -> int:
    raw = op_args(ns)
    try:
        spec, args = prepare(ns.op, raw)
    except CommandError as exc:
        print(f"error: {exc.kind} ({exc.code}): {exc.message}", file=sys.stderr)
        return 2
    ctx = Context(progress=_progress, event=lambda kind, payload: _progress({"event": kind, **payload}),
                  settings={"history_path": ns.history or _agent_history_path()})
    # Ctrl-C stops the measurement and still prints what was measured.
    signal.signal(signal.SIGINT, lambda *_: ctx.cancel.set())
    outcome = execute(spec, args, ctx)
    # The same flat message the agent would publish for this request.
    request = messages.Request(id=f"cli-{messages.now_ms()}", op=ns.op)
    if outcome.error is not None:
        message = messages.error(request, "", outcome.error, outcome.duration_ms)
    else:
        message = messages.result(request, "", ns.op, outcome.status, outcome.result, outcome.duration_ms)
    print(json.dumps(message, indent=None if ns.compact else 2))
    return 0 if outcome.status in ("completed", "cancelled") else 1


def run_collectors(ns: argparse.Namespace) -> int:
    if ns.list:
        print(json.dumps({c.name: {"summary": c.summary, "cost": c.cost, "enabled": c.enabled}
                          for c in collectors.load_all().values()}, indent=2))
        return 0
    try:
        readings = collectors.collect(ns.names)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(readings, indent=2))
    return 0


def main(argv=None) -> int:
    ns = build_parser().parse_args(argv)
    return ns.handler(ns) if hasattr(ns, "handler") else run_once(ns)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
