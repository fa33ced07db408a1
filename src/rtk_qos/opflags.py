"""The protocol's argument table as command-line flags: one sub-parser per op, a flag per argument.

Used by `rtk-qos run` and `rtk-qos ctl`. `--args '{json}'` gives the arguments as the wire would;
flags override its keys.
"""
from __future__ import annotations

import argparse
import json
import sys

from .protocol import argspec


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
