"""Command dispatch: parse, check, ack, and hand each command to a bounded worker pool.

Runs in the MQTT callback thread and never executes a command there: a 3600 s
analysis must not delay the ack of the next request. Also the one place that
knows about running commands: dedupe of redelivered ids, cancel, timeouts,
resource conflicts and the limits on concurrency.

Threads: `handle` and everything it calls run on the MQTT thread; `_work` on the
`limits.max_running` command workers; `running`, `request_counts` and `shutdown`
on any. `_lock` guards the jobs (and each Job's `state` and `cancelled_by`), the
queue, the held resources, the finished replies and the counters. A Job's `ctx`
is read by the worker running it; `ctx.cancel` is an Event any thread may set.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Optional

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
    """Where the dispatcher sends messages; the agent implements it over the session.

    `durable=False`: a reply the controller can get again by retrying (rejections, resent
    results, cancel confirmations); it needs no crash safety and no disk write."""

    def ack(self, request: messages.Request, message: dict) -> None: ...
    def result(self, request: messages.Request, message: dict, durable: bool = True) -> None: ...
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
                         "ml_backend": config["history"]["ml_backend"]}
        self.clock = clock
        self.history = history
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a job queued, ended or cancelled; closing
        self._jobs: dict[str, Job] = {}  # queued and running
        self._queue: deque[Job] = deque()  # accepted, waiting for a worker (and its resource), in order
        self._held: dict[str, str] = {}  # resource -> id of the running command holding it
        self._finished: "OrderedDict[str, Finished]" = OrderedDict()
        self._closing = False
        self._counts = {"accepted": 0, "rejected": 0, "dropped": 0, "duplicates": 0, "completed": 0, "failed": 0}
        # Daemon threads: a command that ignores its cancel must not keep a stopping agent alive.
        self._workers = [threading.Thread(target=self._work, name=f"rtk-qos-cmd-{i}", daemon=True)
                         for i in range(self.limits["max_running"])]
        for worker in self._workers:
            worker.start()

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    # ---- intake (MQTT callback thread) --------------------------------------------------------

    def handle(self, payload: bytes, response_topic: Optional[str] = None,
               correlation: Optional[bytes] = None) -> None:
        try:
            request = messages.parse_request(payload, self.device_id, self.limits["max_payload_bytes"],
                                             response_topic, correlation)
        except messages.Dropped as exc:
            self._count("dropped")
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
            self._counts["duplicates"] += 1
        log.info("request %s seen again; %s", request.id, "still running" if job else "resending its result")
        if request.expect != "none":
            estimate = job.spec.estimate_ms(job.args) if job else 0
            self.replies.ack(request, messages.ack(request, self.device_id, True, None, estimate))
        if finished is not None:
            self.replies.result(request, finished.reply, durable=False)
        return True

    def _reject(self, request: messages.Request, err: CommandError) -> None:
        self._count("rejected")
        log.info("rejected %s (%s): %s", request.id, request.op or "?", err.message)
        if request.expect != "none":
            self.replies.ack(request, messages.ack(request, self.device_id, False, err.as_payload()["message"]))
        self.replies.result(request, messages.error(request, self.device_id, err), durable=False)

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
            if self._closing:
                raise CommandError("E_RESOURCE_UNAVAILABLE", "the agent is stopping; send the command again "
                                   "once it is back online")
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
            self._counts["accepted"] += 1
        # Acked before a worker can see it: the ack always precedes the result.
        if request.expect != "none":
            self.replies.ack(request, messages.ack(request, self.device_id, True, None, spec.estimate_ms(args)))
        with self._changed:
            self._queue.append(job)
            self._changed.notify()

    def _cancel(self, request: messages.Request) -> None:
        args = validate(CANCEL_OP, request.args)
        target = args["id"]
        with self._changed:
            job = self._jobs.get(target)
            finished = self._finished.get(target)
            if job is not None:
                was = job.state
                job.cancelled_by = f"qos_cancel {request.id[:60]}"
                job.ctx.cancel.set()
                self._changed.notify_all()  # a queued job, cancelled, no longer waits for its resource
        if job is None:
            if finished is not None:
                raise CommandError("E_RESOURCE_UNAVAILABLE",
                                   f"args.id: command {target[:60]!r} already ended ({finished.status})")
            raise CommandError("E_RESOURCE_UNAVAILABLE", f"args.id: no command {target[:60]!r} is running or queued")
        if request.expect != "none":
            self.replies.ack(request, messages.ack(request, self.device_id, True, None, 0))
        reply = messages.result(request, self.device_id, CANCEL_OP, "completed",
                                {"id": target, "op": job.request.op, "was": was, "cancelled": True}, 0)
        self._remember(request.id, "completed", reply)
        self.replies.result(request, reply, durable=False)

    # ---- execution (worker threads) -----------------------------------------------------------

    def _runnable(self) -> Optional[Job]:
        """The oldest queued job that can start now (its resource free, or it is already stopped
        and only reports so); with the lock held. A job waiting for a resource holds no worker."""
        for job in self._queue:
            resource = job.spec.resource
            if job.ctx.stopped() or not resource or resource not in self._held:
                self._queue.remove(job)
                job.state, job.started = "running", self.clock()
                if resource and not job.ctx.stopped():
                    self._held[resource] = job.request.id
                return job
        return None

    def _next_deadline_s(self) -> Optional[float]:
        """Seconds until the first queued job's deadline (it then reports a timeout), with the lock held."""
        deadlines = [job.ctx.deadline for job in self._queue if job.ctx.deadline is not None]
        return max(0.0, min(deadlines) - self.clock()) if deadlines else None

    def _work(self) -> None:
        while True:
            with self._changed:
                while (job := self._runnable()) is None:
                    if self._closing and not self._jobs:
                        return
                    self._changed.wait(self._next_deadline_s())
            status, reply = self._run(job)
            with self._changed:
                if self._held.get(job.spec.resource) == job.request.id:
                    del self._held[job.spec.resource]
                self._counts["completed" if status in ("completed", "partial") else "failed"] += 1
                self._remember_locked(job.request.id, status, reply)
                del self._jobs[job.request.id]
                self._changed.notify_all()
            self._deliver(job, reply)

    def _run(self, job: Job) -> tuple[str, dict]:
        request, spec = job.request, job.spec
        try:
            if job.ctx.stopped():
                return job.ctx.stop_reason, messages.result(request, self.device_id, spec.op, job.ctx.stop_reason,
                                                            {}, 0, self._stop_text(job, 0))
            outcome = execute(spec, job.args, job.ctx)
            if outcome.error is not None:
                return outcome.status, messages.error(request, self.device_id, outcome.error, outcome.duration_ms)
            return outcome.status, messages.result(request, self.device_id, spec.op, outcome.status, outcome.result,
                                                   outcome.duration_ms, self._stop_text(job, outcome.duration_ms))
        except Exception:  # a worker must never lose a job silently
            log.exception("command %s %s crashed", spec.op, request.id)
            return "failed", messages.error(request, self.device_id, CommandError(
                "E_RESOURCE_UNAVAILABLE", f"{spec.op}: internal error, see the agent log"))

    def _deliver(self, job: Job, reply: dict) -> None:
        """Hand the result over; if that fails, the controller gets an error saying so."""
        try:
            self.replies.result(job.request, reply)
        except Exception as exc:
            log.exception("the result of %s %s could not be queued", job.spec.op, job.request.id)
            error = CommandError("E_RESOURCE_UNAVAILABLE",
                                 f"{job.spec.op}: the result could not be queued ({exc}); see the agent log")
            self.replies.result(job.request, messages.error(job.request, self.device_id, error), durable=False)

    def _stop_text(self, job: Job, duration_ms: int) -> Optional[str]:
        reason = job.ctx.stop_reason
        if reason == "timeout":
            return (f"E_TIMEOUT: timeout_ms {job.request.timeout_ms} expired after {duration_ms} ms of "
                    "execution; the result holds what was measured until then")
        if reason == "cancelled":
            with self._lock:
                return f"cancelled by {job.cancelled_by}; the result holds what was measured until then"
        return None

    def _remember(self, request_id: str, status: str, reply: dict) -> None:
        with self._lock:
            self._remember_locked(request_id, status, reply)

    def _remember_locked(self, request_id: str, status: str, reply: dict) -> None:
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

    def request_counts(self) -> dict:
        with self._lock:
            return dict(self._counts)

    def shutdown(self, wait_s: float = 5.0) -> list[str]:
        """Cancel everything and wait up to `wait_s` for the commands to return what they measured
        (their results are queued). Returns the ids of those still running then."""
        deadline = self.clock() + wait_s
        with self._changed:
            self._closing = True
            for job in self._jobs.values():
                job.cancelled_by = "agent shutdown"
                job.ctx.cancel.set()
            self._changed.notify_all()
            while self._jobs and deadline > self.clock():
                self._changed.wait(deadline - self.clock())
            stuck = [f"{job.request.op} {job.request.id}" for job in self._jobs.values()]
        if stuck:
            log.warning("stopping without the results of %d commands still running after %.1f s: %s",
                        len(stuck), wait_s, ", ".join(stuck))
        return stuck
