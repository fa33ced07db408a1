"""rtk-qos command line: `rtk-qos run <op> ...` runs one QoS command once.

Flags are generated from the protocol's argument table, so `--help`, the
validation and the MQTT path agree. `--args '{json}'` gives the arguments as
the wire would; flags override its keys.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from .commands import load_all
from .commands.base import Context
from .commands.runner import execute, prepare
from .protocol import argspec
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtk-qos", description="QoS monitoring agent for routers")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one QoS command once and print its result JSON")
    ops = run.add_subparsers(dest="op", required=True, metavar="OP")
    for op, spec in load_all().items():
        sub = ops.add_parser(op, help=spec.summary, description=spec.summary)
        sub.add_argument("--args", dest="args_json", metavar="JSON", default=None,
                         help="the arguments as a JSON object, as sent over MQTT")
        sub.add_argument("--compact", action="store_true", help="print the result on one line")
        for name, field_spec in argspec.ARGS[op].fields.items():
            _add_flag(sub, name, field_spec)
    return parser


def _progress(message: dict) -> None:
    print(json.dumps(message, separators=(",", ":")), file=sys.stderr, flush=True)


def run_once(ns: argparse.Namespace) -> int:
    raw: dict = {}
    if ns.args_json is not None:
        try:
            raw = json.loads(ns.args_json)
        except json.JSONDecodeError as exc:
            print(f"error: --args is not valid JSON: {exc}", file=sys.stderr)
            return 2
        if not isinstance(raw, dict):
            print("error: --args must be a JSON object", file=sys.stderr)
            return 2
    for name in argspec.ARGS[ns.op].fields:
        value = getattr(ns, name, None)
        if value is not None:
            raw[name] = value
    try:
        spec, args = prepare(ns.op, raw)
    except CommandError as exc:
        print(f"error: {exc.kind} ({exc.code}): {exc.message}", file=sys.stderr)
        return 2
    ctx = Context(progress=_progress)
    # Ctrl-C stops the measurement and still prints what was measured.
    signal.signal(signal.SIGINT, lambda *_: ctx.cancel.set())
    outcome = execute(spec, args, ctx)
    message = {"schema": f"cmd.{ns.op}.result/1.0", "ts": time.time_ns() // 1_000_000,
               "status": outcome.status, "result": outcome.result or {},
               "execution": {"duration_ms": outcome.duration_ms},
               "error": outcome.error.as_payload() if outcome.error else None}
    print(json.dumps(message, indent=None if ns.compact else 2))
    return 0 if outcome.status in ("completed", "cancelled") else 1


def main(argv=None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.command == "run":
        return run_once(ns)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
