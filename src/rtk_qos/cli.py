"""rtk-qos command line.

  rtk-qos run <op> ...    run one QoS command here, once, and print its result message
  rtk-qos agent ...       run the MQTT agent
  rtk-qos ctl <op> ...    send a command to an agent through the broker; print ack and result
  rtk-qos controller ...  run the fleet controller (HTTP API, monitoring sessions, alerts, storage)

Op flags are generated from the protocol's argument table, so `--help`, the
validation and the MQTT path agree. `--args '{json}'` gives the arguments as
the wire would; flags override its keys.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Optional

from .commands import load_all
from .commands.base import Context
from .commands.runner import execute, prepare
from .protocol import argspec, messages
from .protocol.errors import CommandError


def _add_flag(parser: argparse.ArgumentParser, name: str, spec: argspec.Spec) -> None:
    flag = "--" + name.replace("_", "-")
    help_text = f"{spec.describe()}; {spec.doc}" if spec.doc else spec.describe()
    if spec.default is not None:
        help_text += f" (default: {spec.default if not isinstance(spec.default, tuple) else list(spec.default)})"
    kwargs = {"dest": name, "default": None, "help": help_text}
    if isinstance(spec, argspec.Bool):
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif isinstance(spec, argspec.Int):
        parser.add_argument(flag, type=int, metavar="N", **kwargs)
    elif isinstance(spec, argspec.Num):
        parser.add_argument(flag, type=float, metavar="X", **kwargs)
    elif isinstance(spec, argspec.Enum):
        parser.add_argument(flag, choices=spec.values, **kwargs)
    elif isinstance(spec, argspec.Array):
        parser.add_argument(flag, nargs="+", metavar="ITEM", **kwargs)
    elif isinstance(spec, (argspec.Str,)):
        parser.add_argument(flag, **kwargs)
    # Nested objects (thresholds, constraints, rules) are given through --args.


def add_op_parsers(parser: argparse.ArgumentParser, ops: dict[str, str]) -> None:
    """One sub-parser per op (name -> summary), with a flag per argument and --args."""
    sub_parsers = parser.add_subparsers(dest="op", required=True, metavar="OP")
    for op, summary in ops.items():
        sub = sub_parsers.add_parser(op, help=summary, description=summary)
        sub.add_argument("--args", dest="args_json", metavar="JSON", default=None,
                         help="the arguments as a JSON object, as sent over MQTT")
        sub.add_argument("--compact", action="store_true", help="print JSON on one line")
        for name, field_spec in argspec.ARGS[op].fields.items():
            _add_flag(sub, name, field_spec)


def op_args(ns: argparse.Namespace) -> dict:
    """The args object from --args and the op flags; SystemExit(2) with a message when unusable."""
    raw: dict = {}
    if ns.args_json is not None:
        try:
            raw = json.loads(ns.args_json)
        except json.JSONDecodeError as exc:
            print(f"error: --args is not valid JSON: {exc}", file=sys.stderr)
            raise SystemExit(2)
        if not isinstance(raw, dict):
            print("error: --args must be a JSON object", file=sys.stderr)
            raise SystemExit(2)
    for name in argspec.ARGS[ns.op].fields:
        value = getattr(ns, name, None)
        if value is not None:
            raw[name] = value
    return raw


def build_parser() -> argparse.ArgumentParser:
    from . import ctl, detect
    from .agent import main as agent_main
    from .controller import main as controller_main
    parser = argparse.ArgumentParser(prog="rtk-qos", description="QoS monitoring agent for routers")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one QoS command here once and print its result JSON")
    run.add_argument("--history", help="metric history file the command reads (qos_anomaly_detection; "
                                       "default: the agent's, from its configuration)")
    add_op_parsers(run, {op: spec.summary for op, spec in load_all().items()})
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


def main(argv=None) -> int:
    ns = build_parser().parse_args(argv)
    return ns.handler(ns) if hasattr(ns, "handler") else run_once(ns)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
