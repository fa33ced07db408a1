"""Command dispatch: parse, check, ack, and hand each command to a bounded worker pool.

Runs in the MQTT callback thread and never executes a command there: a 3600 s
analysis must not delay the ack of the next request. Also the one place that
knows about running commands: dedupe of redelivered ids, cancel, timeouts,
resource conflicts and the limits on concurrency.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..commands.base import Context
from ..commands.runner import execute, prepare
from ..protocol import messages
from ..protocol.argspec import validate
from ..protocol.errors import CommandError

log = logging.getLogger(__name__)
CANCEL_OP = "qos_cancel"


@dataclass
class Job:
    request: messages.Request
    spec: object
    args: dict
    ctx: Context
    state: str = "queued"  # queued, running
    started: Optional[float] = None
    cancelled_by: str = ""


@dataclass
class Finished:
    status: str
    reply: dict
    expires: float
    ack: dict = field(default_factory=dict)


class Replies:
    """Where the dispatcher sends messages; the agent implements it over the session."""

    def ack(self, request: messages.Request, message: dict) -> None: ...
    def result(self, request: messages.Request, message: dict) -> None: ...
    def progress(self, request: messages.Request, op: str, payload: dict) -> None: ...
    def event(self, event_type: str, payload: dict, request: Optional[messages.Request]) -> None: ...


class Dispatcher:
    def __init__(self, config: dict, device_id: str, replies: Replies, clock=time.monotonic, history=None):
        self.limits = config["limits"]
        self.allow_changes = config["security"]["allow_router_changes"]
        self.device_id = device_id
        self.replies = replies
        self.settings = {"broker_host": config["broker"]["host"],
                         "probe_interval_s": config["probe"]["interval_s"],
                         "probe_timeout_s": config["probe"]["timeout_s"],
                         "ml_backend": config["history"]["ml_backend"],
                         "allow_router_changes": self.allow_changes, "state_dir": config["state_dir"],
                         "confirm_timeout_s": config["shaping"]["confirm_timeout_s"]}
        self.clock = clock
        self.history = history
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._finished: "OrderedDict[str, Finished]" = OrderedDict()
        self._resource_locks: dict[str, threading.Lock] = {}
        self._pool = ThreadPoolExecutor(max_workers=self.limits["max_running"], thread_name_prefix="rtk-qos-cmd")
        self.counts = {"accepted": 0, "rejected": 0, "dropped": 0, "duplicates": 0, "completed": 0, "failed": 0}

    # ---- intake (MQTT callback thread) --------------------------------------------------------

    def handle(self, payload: bytes, response_topic: Optional[str] = None,
               correlation: Optional[bytes] = None) -> None:
        try:
            request = messages.parse_request(payload, self.device_id, self.limits["max_payload_bytes"],
                                             response_topic, correlation)
        except messages.Dropped as exc:
            self.counts["dropped"] += 1
            log.warning("dropped a request: %s", exc)
            return
        except messages.Rejected as exc:
            exc.request.correlation_data = correlation
            if response_topic:
                exc.request.reply_to = response_topic
            self._reject(exc.request, exc.error)
            return
        if self._redelivered(request):
            return
        try:
            if request.op == CANCEL_OP:
                self._cancel(request)
            else:
                self._accept(request)
        except CommandError as err:
            self._reject(request, err)

    def _redelivered(self, request: messages.Request) -> bool:
        """A known id is never run twice: re-ack a running one, resend a finished one's result."""
        with self._lock:
            self._expire()
            job = self._jobs.get(request.id)
            finished = self._finished.get(request.id)
        if job is None and finished is None:
            return False
        self.counts["duplicates"] += 1
        log.info("request %s seen again; %s", request.id, "still running" if job else "resending its result")
        if request.expect != "none":
            estimate = job.spec.estimate_ms(job.args) if job else 0
            self.replies.ack(request, messages.ack(request, self.device_id, True, None, estimate))
        if finished is not None:
            self.replies.result(request, finished.reply)
        return True

    def _reject(self, request: messages.Request, err: CommandError) -> None:
        self.counts["rejected"] += 1
        log.info("rejected %s (%s): %s", request.id, request.op or "?", err.message)
        if request.expect != "none":
            self.replies.ack(request, messages.ack(request, self.device_id, False, err.as_payload()["message"]))
        self.replies.result(request, messages.error(request, self.device_id, err))

    def _accept(self, request: messages.Request) -> None:
        spec, args = prepare(request.op, request.args)
        if spec.changes_router and not self.allow_changes:
            raise CommandError("E_INSUFFICIENT_PRIVILEGES",
                               f"{request.op} changes the router configuration and this agent is configured "
                               "read-only", "set security.allow_router_changes = true to permit it")
        deadline = (request.received + request.timeout_ms / 1000.0) if request.timeout_ms else None
        ctx = Context(deadline=deadline, command_id=request.id, settings=self.settings, history=self.history)
        job = Job(request, spec, args, ctx)
        ctx.progress = lambda payload: self.replies.progress(request, spec.op, payload)
        ctx.event = lambda event_type, payload: self.replies.event(event_type, payload, request)
        with self._lock:
            active = len(self._jobs)
            capacity = self.limits["max_running"] + self.limits["max_queued"]
            if active >= capacity:
                raise CommandError("E_DEVICE_BUSY",
                                   f"{active} commands running or queued, at the limit of {capacity}",
                                   "limits.max_running + limits.max_queued")
            if spec.resource and self.limits["resource_conflict"] == "reject":
                holder = next((j for j in self._jobs.values() if j.spec.resource == spec.resource), None)
                if holder is not None:
                    raise CommandError("E_DEVICE_BUSY",
                                       f"{spec.resource} is in use by {holder.request.op} {holder.request.id[:60]}",
                                       "limits.resource_conflict = queue makes such commands wait instead")
            self._jobs[request.id] = job
        self.counts["accepted"] += 1
        if request.expect != "none":
            self.replies.ack(request, messages.ack(request, self.device_id, True, None, spec.estimate_ms(args)))
        self._pool.submit(self._run, job)

    def _cancel(self, request: messages.Request) -> None:
        args = validate(CANCEL_OP, request.args)
        target = args["id"]
        with self._lock:
            job = self._jobs.get(target)
            finished = self._finished.get(target)
        if job is None:
            if finished is not None:
                raise CommandError("E_RESOURCE_UNAVAILABLE",
                                   f"args.id: command {target[:60]!r} already ended ({finished.status})")
            raise CommandError("E_RESOURCE_UNAVAILABLE", f"args.id: no command {target[:60]!r} is running or queued")
        was = job.state
        job.cancelled_by = f"qos_cancel {request.id[:60]}"
        job.ctx.cancel.set()
        if request.expect != "none":
            self.replies.ack(request, messages.ack(request, self.device_id, True, None, 0))
        reply = messages.result(request, self.device_id, CANCEL_OP, "completed",
                                {"id": target, "op": job.request.op, "was": was, "cancelled": True}, 0)
        self._remember(request.id, "completed", reply)
        self.replies.result(request, reply)

    # ---- execution (worker threads) -----------------------------------------------------------

    def _run(self, job: Job) -> None:
        request, spec = job.request, job.spec
        lock = None
        if spec.resource:
            with self._lock:
                lock = self._resource_locks.setdefault(spec.resource, threading.Lock())
        try:
            if lock is not None:
                lock.acquire()
            job.state, job.started = "running", self.clock()
            if job.ctx.stopped():
                reply = messages.result(request, self.device_id, spec.op, job.ctx.stop_reason, {}, 0,
                                        self._stop_text(job, 0))
                status = job.ctx.stop_reason
            else:
                outcome = execute(spec, job.args, job.ctx)
                status = outcome.status
                if outcome.error is not None:
                    reply = messages.error(request, self.device_id, outcome.error, outcome.duration_ms)
                else:
                    reply = messages.result(request, self.device_id, spec.op, status, outcome.result,
                                            outcome.duration_ms, self._stop_text(job, outcome.duration_ms))
        except Exception:  # the pool must never lose a job silently
            log.exception("command %s %s crashed", spec.op, request.id)
            status = "failed"
            reply = messages.error(request, self.device_id, CommandError(
                "E_RESOURCE_UNAVAILABLE", f"{spec.op}: internal error, see the agent log"))
        finally:
            if lock is not None and lock.locked():
                lock.release()
        self.counts["completed" if status in ("completed", "partial") else "failed"] += 1
        self._remember(request.id, status, reply)
        with self._lock:
            self._jobs.pop(request.id, None)
        self.replies.result(request, reply)

    @staticmethod
    def _stop_text(job: Job, duration_ms: int) -> Optional[str]:
        reason = job.ctx.stop_reason
        if reason == "timeout":
            return (f"E_TIMEOUT: timeout_ms {job.request.timeout_ms} expired after {duration_ms} ms of "
                    "execution; the result holds what was measured until then")
        if reason == "cancelled":
            return f"cancelled by {job.cancelled_by}; the result holds what was measured until then"
        return None

    def _remember(self, request_id: str, status: str, reply: dict) -> None:
        with self._lock:
            self._finished[request_id] = Finished(status, reply, self.clock() + self.limits["dedupe_ttl_s"])
            self._finished.move_to_end(request_id)
            while len(self._finished) > self.limits["dedupe_entries"]:
                self._finished.popitem(last=False)

    def _expire(self) -> None:
        now = self.clock()
        while self._finished:
            key, first = next(iter(self._finished.items()))
            if first.expires > now:
                break
            del self._finished[key]

    # ---- status -------------------------------------------------------------------------------

    def running(self) -> list[dict]:
        with self._lock:
            return [{"id": j.request.id, "op": j.request.op, "state": j.state} for j in self._jobs.values()]

    def shutdown(self, wait_s: float = 5.0) -> None:
        """Cancel everything; commands return what they measured, and their results are queued."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancelled_by = "agent shutdown"
            job.ctx.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=False)
