"""Runs one command: validation, execution, and the status the protocol reports.

The CLI and the MQTT dispatcher both go through `execute`, so a command
behaves the same whichever way it was asked for.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Optional

from ..protocol.argspec import validate
from ..protocol.errors import CommandError
from ..services import running
from . import get
from .base import Context

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    status: str  # completed, failed, timeout, cancelled
    result: Optional[dict]
    error: Optional[CommandError]
    duration_ms: int


def prepare(op: Any, raw_args: Any):
    """(spec, validated args) or CommandError: unknown op, or the first wrong argument."""
    spec = get(op) if isinstance(op, str) else None
    if spec is None:
        text = repr(op)[:40]
        raise CommandError("E_UNSUPPORTED_OPERATION", f"op: {text} is not a supported operation")
    return spec, validate(op, raw_args)


def execute(spec, args: dict, ctx: Context) -> Outcome:
    """Run a prepared command; a stop by cancel or deadline keeps what was measured."""
    if spec.live and ctx.services is None:
        # A process without shared services (a one-shot CLI run, a library caller) starts its
        # own sampler and gateway probe for the command's duration.
        with running() as own:
            return execute(spec, args, dataclasses.replace(ctx, services=own))
    start = ctx.clock.monotonic()
    try:
        result = spec.run(args, ctx)
        error = None
    except CommandError as exc:
        result, error = None, exc
    except OSError as exc:
        result = None
        error = CommandError("E_RESOURCE_UNAVAILABLE", f"{spec.op}: {exc.strerror or exc}")
    except Exception as exc:  # a bug must not take the agent down; log it whole
        log.exception("command %s failed", spec.op)
        result = None
        error = CommandError("E_RESOURCE_UNAVAILABLE", f"{spec.op}: internal error: {exc!r}")
    duration_ms = int(round((ctx.clock.monotonic() - start) * 1000))
    if error is not None:
        status = "failed"
    else:
        status = ctx.stop_reason or "completed"
    return Outcome(status, result, error, duration_ms)
