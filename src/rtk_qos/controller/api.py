"""HTTP JSON API (aiohttp), server-sent events and Prometheus exposition.

Reads go to the store's reader connection (WAL: they never wait for ingest) in a thread of
their own, so a long query never holds up the event loop and the live stream; writes
(commands, sessions) run in the ingest thread through `Engine.call`, so each is checked
and stored atomically or not at all. Writes need `Authorization: Bearer <token>`.
Errors are JSON: {"error": {"status": 400, "message": "end: 'x' is not an integer (Unix time, ms)"}}.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import time
from typing import Optional

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..protocol import messages
from ..protocol.errors import CommandError
from ..protocol.topics import DEVICE_ID, NAME
from ..vocab.severity import WIRE_NAMES
from . import overview as overview_mod
from .metrics import registry
from .openapi import SPEC
from .requests import RequestError
from .sessions import NotActive, UnknownDevice
from .store import SessionConflict
from .web import add_routes as add_dashboard

MAX_POINTS = 10_000
MAX_BODY = 64 * 1024
SSE_QUEUE = 10_000  # events a client may fall behind (a fleet reconnecting is a burst) before it is cut off
SSE_KEEPALIVE_S = 15.0
COMMAND_FIELDS = {"device_id", "group", "tenant", "site", "op", "args", "timeout_ms", "dialect", "id", "wait_s"}
FINISHED = ("completed", "failed", "partial", "timeout", "cancelled", "rejected", "finished")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"status": status, "message": message}}, status=status)


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Hub:
    """Fans notifications out to SSE clients; bounded per client (a client too slow is cut off)."""

    def __init__(self):
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.clients: set[asyncio.Queue] = set()
        self.sent = 0
        self.dropped_clients = 0

    def publish(self, kind: str, data: dict) -> None:
        """Called from the ingest thread."""
        if self.loop is not None and self.clients:
            self.loop.call_soon_threadsafe(self._fanout, kind, data)

    def close(self) -> None:
        """End every stream (at shutdown: the server waits for open handlers)."""
        for queue in list(self.clients):
            self._end(queue)

    def _end(self, queue: asyncio.Queue) -> None:
        self.clients.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    def _fanout(self, kind: str, data: dict) -> None:
        line = f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
        for queue in list(self.clients):
            try:
                queue.put_nowait(line)
                self.sent += 1
            except asyncio.QueueFull:
                self._end(queue)  # too slow to keep up: cut off rather than buffer without bound
                self.dropped_clients += 1


def _int_param(request: web.Request, name: str, default: Optional[int], low: Optional[int] = None,
               what: str = "Unix time, ms") -> Optional[int]:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HttpError(400, f"{name}: {text[:40]!r} is not an integer ({what})") from None
    if low is not None and value < low:
        raise HttpError(400, f"{name}: {value} is below the minimum {low}")
    return value


def _choice(request: web.Request, name: str, choices: tuple) -> Optional[str]:
    value = request.query.get(name)
    if value is not None and value not in choices:
        raise HttpError(400, f"{name}: {value[:40]!r} is not one of {', '.join(choices)}")
    return value


async def _body(request: web.Request) -> dict:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise HttpError(413, f"body: {len(raw)} bytes, above the {MAX_BODY}-byte limit")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise HttpError(400, f"body: not valid JSON{where}") from None
    if not isinstance(body, dict):
        raise HttpError(400, f"body: expected a JSON object, got {type(body).__name__}")
    return body


class Api:
    def __init__(self, engine, token: str, hub: Hub):
        self.engine = engine
        self.store = engine.reader
        self.token = token
        self.hub = hub
        self.registry = registry(engine)
        self._reads = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rtk-qos-api-read")

    async def _read(self, fn, *args):
        """Run a store read in the reader's thread (the only thread that uses that connection)."""
        return await asyncio.get_running_loop().run_in_executor(self._reads, fn, *args)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=MAX_BODY * 2)
        r = app.router
        r.add_get("/api/openapi.json", self.openapi)
        r.add_get("/api/status", self.status)
        r.add_get("/api/qos/overview", self.overview)
        r.add_get("/api/devices", self.devices)
        r.add_get("/api/devices/{device_id}", self.device)
        r.add_get("/api/devices/{device_id}/series/{name}", self.series)
        r.add_get("/api/alerts", self.alerts)
        r.add_get("/api/sessions", self.sessions)
        r.add_post("/api/sessions", self.start_session)
        r.add_get("/api/sessions/{session_id}", self.session)
        r.add_post("/api/sessions/{session_id}/stop", self.stop_session)
        r.add_post("/api/commands", self.send_command)
        r.add_get("/api/commands/{command_id}", self.command)
        r.add_get("/api/events", self.events)
        r.add_get("/metrics", self.metrics)
        add_dashboard(app, self)
        return app

    # ---- middleware ---------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request, handler):
        try:
            return await handler(request)
        except HttpError as exc:
            return _error(exc.status, exc.message)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, f"{request.method} {request.path}: {exc.reason}")
            raise

    @web.middleware
    async def _auth(self, request, handler):
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            header = request.headers.get("Authorization", "")
            if not header:
                raise HttpError(401, "Authorization: a bearer token is required for writes")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
                raise HttpError(403, "Authorization: the bearer token is not valid")
        return await handler(request)

    async def _call(self, fn, *args):
        return await asyncio.wrap_future(self.engine.call(fn, *args))

    # ---- reads --------------------------------------------------------------------------------

    async def openapi(self, request):
        return web.json_response(SPEC)

    async def status(self, request):
        """The controller's own counters, cheap to poll (no per-device figures)."""
        engine = self.engine
        return web.json_response({"connected": engine.connected.is_set(), "inbox": engine.backlog,
                                  "counts": dict(engine.counts), "commands": dict(engine.requests.counts),
                                  "alerts": dict(engine.alerts.counts), "active_sessions": len(engine.sessions.active),
                                  "late_session_samples": engine.sessions.late_samples,
                                  "sse_clients": len(self.hub.clients), "sse_sent": self.hub.sent,
                                  "sse_cut_off": self.hub.dropped_clients})

    async def overview(self, request):
        return web.json_response(await self._read(overview_mod.overview, self.store, _now_ms(),
                                                  len(self.engine.sessions.active)))

    async def _device(self, device_id: str) -> dict:
        if not DEVICE_ID.match(device_id):
            raise HttpError(400, f"device_id: {device_id[:40]!r} is not 12 lower-case hex digits")
        device = await self._read(self.store.device, device_id)
        if device is None:
            raise HttpError(404, f"device {device_id} is not known to this controller")
        return device

    async def devices(self, request):
        return web.json_response({"devices": await self._read(self.store.devices)})

    async def device(self, request):
        device = await self._device(request.match_info["device_id"])

        def details():
            device["series"] = self.store.series_names(device["device_id"])
            device["sessions"] = self.store.sessions(device_id=device["device_id"])[:10]
            device["open_alerts"] = self.store.alerts(device_id=device["device_id"], state="open")
            return device
        return web.json_response(await self._read(details))

    async def series(self, request):
        device = await self._device(request.match_info["device_id"])
        name = request.match_info["name"]
        if name not in await self._read(self.store.series_names, device["device_id"]):
            raise HttpError(404, f"series {name[:80]!r}: device {device['device_id']} has no such series")
        now = _now_ms()
        end = _int_param(request, "end", now)
        start = _int_param(request, "start", end - 3600_000)
        step = _int_param(request, "step", 60_000, low=1000, what="milliseconds")
        if start >= end:
            raise HttpError(400, f"range: start {start} is not before end {end}")
        if (end - start) // step > MAX_POINTS:
            raise HttpError(400, f"range: {(end - start) // step} points of {step} ms, above the maximum {MAX_POINTS}"
                                 "; use a larger step")
        points = await self._read(self.store.series, device["device_id"], name, start, end, step)
        return web.json_response({"device_id": device["device_id"], "series": name, "start": start, "end": end,
                                  "step": step, "points": [{"ts": ts, "mean": a.mean, "min": a.low, "max": a.high,
                                                            "count": a.count} for ts, a in points]})

    async def alerts(self, request):
        device_id = request.query.get("device_id")
        if device_id is not None and not DEVICE_ID.match(device_id):
            raise HttpError(400, f"device_id: {device_id[:40]!r} is not 12 lower-case hex digits")
        query = dict(device_id=device_id, severity=_choice(request, "severity", WIRE_NAMES),
                     state=_choice(request, "state", ("open", "closed")), since_ms=_int_param(request, "since", None),
                     session_id=request.query.get("session_id"),
                     limit=_int_param(request, "limit", 500, low=1, what="count"))
        rows = await self._read(lambda: self.store.alerts(**query))
        return web.json_response({"alerts": rows})

    async def sessions(self, request):
        status = _choice(request, "status", ("active", "completed", "stopped"))
        device_id = request.query.get("device_id")
        return web.json_response({"sessions": await self._read(self.store.sessions, status, device_id)})

    async def session(self, request):
        session_id = request.match_info["session_id"]
        session = await self._read(self.store.session, session_id)
        if session is None:
            raise HttpError(404, f"session {session_id[:80]!r} does not exist")
        session["alerts"] = await self._read(lambda: self.store.alerts(session_id=session_id))
        return web.json_response(session)

    async def command(self, request):
        command = await self._read(self.store.command, request.match_info["command_id"])
        if command is None:
            raise HttpError(404, f"command {request.match_info['command_id'][:80]!r} does not exist")
        return web.json_response(command)

    async def metrics(self, request):
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def events(self, request):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue(SSE_QUEUE)
        self.hub.clients.add(queue)
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    line = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE_S)
                except asyncio.TimeoutError:
                    line = b": keepalive\n\n"
                if line is None:
                    break
                await response.write(line)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.hub.clients.discard(queue)
        return response

    # ---- writes -------------------------------------------------------------------------------

    async def start_session(self, request):
        body = await _body(request)
        try:
            session = await self._call(self.engine.sessions.start, body)
        except CommandError as exc:  # argspec's ArgError: names the field
            raise HttpError(400, exc.message) from None
        except UnknownDevice as exc:
            raise HttpError(404, str(exc)) from None
        except SessionConflict as exc:
            raise HttpError(409, str(exc)) from None
        return web.json_response(session, status=201)

    async def stop_session(self, request):
        session_id = request.match_info["session_id"]
        try:
            session = await self._call(self.engine.sessions.stop, session_id)
        except NotActive:
            if await self._read(self.store.session, session_id) is None:
                raise HttpError(404, f"session {session_id[:80]!r} does not exist") from None
            raise HttpError(409, f"session {session_id[:80]!r} is not active") from None
        return web.json_response(session)

    async def _target(self, body: dict) -> dict:
        unknown = sorted(set(body) - COMMAND_FIELDS)
        if unknown:
            raise HttpError(400, f"body.{unknown[0][:40]}: unknown field (allowed: {', '.join(sorted(COMMAND_FIELDS))})")
        if ("device_id" in body) == ("group" in body):
            raise HttpError(400, "body: name exactly one of device_id or group")
        if "device_id" in body:
            device_id = body["device_id"]
            if not isinstance(device_id, str) or not DEVICE_ID.match(device_id):
                raise HttpError(400, f"body.device_id: {str(device_id)[:40]!r} is not 12 lower-case hex digits")
            device = await self._read(self.store.device, device_id)
            if device is None:
                raise HttpError(404, f"device {device_id} is not known to this controller")
            return {"device_id": device_id, "tenant": device["tenant"], "site": device["site"]}
        for key in ("tenant", "site"):
            if not isinstance(body.get(key), str) or not NAME.match(body[key]):
                raise HttpError(400, f"body.{key}: a group command needs a {key} matching {NAME.pattern}")
        return {"group": body["group"], "tenant": body["tenant"], "site": body["site"]}

    async def send_command(self, request):
        body = await _body(request)
        target = await self._target(body)
        if not isinstance(body.get("op"), str):
            raise HttpError(400, "body.op: required, a string")
        wait = body.get("wait_s", 0)
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 600:
            raise HttpError(400, f"body.wait_s: {wait!r} is not a number of seconds in 0-600")
        try:
            command = await self._call(self.engine.requests.send, target, body["op"], body.get("args"),
                                       body.get("timeout_ms"), body.get("dialect", messages.FLAT), body.get("id"))
        except CommandError as exc:
            raise HttpError(400, f"{exc.kind}: {exc.message}") from None
        except RequestError as exc:
            raise HttpError(409 if "already used" in str(exc) else 400, f"body.{exc}") from None
        command_id = command["id"]
        deadline = time.monotonic() + wait
        stored = await self._read(self.store.command, command_id)
        while wait and time.monotonic() < deadline and stored["status"] not in FINISHED:
            await asyncio.sleep(0.05)
            stored = await self._read(self.store.command, command_id)
        return web.json_response(stored, status=200 if stored["status"] in FINISHED else 202)
