"""The dashboard: static HTML/CSS/JS served on the API's port, plus two reads the page needs.

`/` is the page; `/ui/` its files (uPlot's dist files are copied into `static/vendor/` by
`make` from the npm package pinned there, never committed). The page reads the API
(`/api/...`) and the live stream (`/api/events`); the two routes here add, per device,
the stored events (anomaly episodes, shaping reverts: marks on its plots) and the
recent commands with their replies (shaping applied, the tc tree the agent reported);
`/api/fleet` gives the fleet table in one read: per device and metric the per-minute means
of the last 15 minutes (the sparkline; the last is the figure shown), the health score of
those 15 minutes (overview.health_score), open alerts and the newest anomaly episode.
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ..overview import SERIES, health_score
from ..store import MINUTE_MS, Agg

STATIC = Path(__file__).parent / "static"
DAY_MS = 86_400_000
MAX_EVENTS = 2000
SPARK_MINUTES = 15
ANOMALY_RECENT_MS = 15 * MINUTE_MS


def fleet(store, now_ms: int) -> dict:
    end = now_ms - now_ms % MINUTE_MS + MINUTE_MS  # the current minute is the last bucket
    start = end - SPARK_MINUTES * MINUTE_MS
    series = {metric: store.fleet_series(glob, start, end, MINUTE_MS) for metric, glob in SERIES.items()}
    open_alerts: dict[str, int] = {}
    for alert in store.alerts(state="open", limit=100_000):
        open_alerts[alert["device_id"]] = open_alerts.get(alert["device_id"], 0) + 1
    anomalies: dict[str, dict] = {}
    for event in store.events(since_ms=now_ms - ANOMALY_RECENT_MS, limit=100_000):
        if event["event_type"] == "qos_anomaly" and event["device_id"] not in anomalies:  # newest first
            anomalies[event["device_id"]] = {"ts": event["ts"], "severity": event["severity"],
                                             "metrics": event["payload"].get("metrics")}
    buckets = range(start, end, MINUTE_MS)
    devices = []
    for device in store.devices():
        device_id = device["device_id"]
        spark, means = {}, {}
        for metric, per_device in series.items():
            aggs = per_device.get(device_id, {})
            spark[metric] = [None if ts not in aggs else round(aggs[ts].mean, 3) for ts in buckets]
            total = Agg()
            for agg in aggs.values():
                total.merge(agg.count, agg.total, agg.low, agg.high)
            means[metric] = total.mean
        devices.append({
            "device_id": device_id, "tenant": device["tenant"], "site": device["site"], "status": device["status"],
            "status_since_ms": device["status_since_ms"], "last_seen_ms": device["last_seen_ms"],
            "health": device["health"], "health_reasons": device["health_reasons"],
            "health_score": health_score(means["latency"], means["jitter"], means["loss"]),
            "open_alerts": open_alerts.get(device_id, 0), "anomaly": anomalies.get(device_id),
            "latest": {metric: next((v for v in reversed(values) if v is not None), None)
                       for metric, values in spark.items()},
            "spark": spark})
    return {"start_ms": start, "end_ms": end, "step_ms": MINUTE_MS, "devices": devices}


def add_routes(app: web.Application, api) -> None:
    """`api` is the controller's Api: its reader store (read in the API's read thread), parameter checks
    and errors."""
    from ..api import _int_param, _now_ms

    async def fleet_table(_request):
        return web.json_response(await api._read(fleet, api.store, _now_ms()))

    async def index(_request):
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def events(request):
        device = await api._device(request.match_info["device_id"])
        since = _int_param(request, "since", _now_ms() - 7 * DAY_MS)
        limit = _int_param(request, "limit", 500, low=1, what="count")
        return web.json_response({"events": await api._read(api.store.events, device["device_id"], since,
                                                            min(limit, MAX_EVENTS))})

    async def commands(request):
        device = await api._device(request.match_info["device_id"])
        since = _int_param(request, "since", _now_ms() - DAY_MS)
        label = f"device:{device['device_id']}"
        found = [c for c in await api._read(api.store.recent_commands, since) if c["target"] == label]
        found.sort(key=lambda c: c["sent_ms"], reverse=True)
        return web.json_response({"commands": found})

    app.router.add_get("/", index)
    app.router.add_get("/api/fleet", fleet_table)
    app.router.add_get("/api/devices/{device_id}/events", events)
    app.router.add_get("/api/devices/{device_id}/commands", commands)
    app.router.add_static("/ui/", STATIC, append_version=False)
