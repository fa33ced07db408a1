"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a real controller,
a real mosquitto, a real agent, and devices published as agents publish them (tests/fleet_sim.py).
Each test saves a screenshot in tests/artifacts/ and fails on any console error of the page."""
from __future__ import annotations

import math
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import sync_playwright

from fleet_sim import FleetSim, device_ids
from rtk_qos.shaping import tcstate

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = "/usr/bin/chromium"
MINUTE = 60_000


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        # Playwright's own browser download cannot work offline: Debian's chromium instead.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def console():
    """The page's console errors; a test that provokes one (a refused write) removes what it expects."""
    return []


@pytest.fixture
def page(browser, request, console):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and console.append(m.text))
    page.on("pageerror", lambda e: console.append(str(e)))
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert console == [], console


@pytest.fixture
def sim(broker):
    fleet = FleetSim(broker.plain_port)
    yield fleet
    fleet.close()


def minute_grid(minutes: int, now_ms: int) -> int:
    """Start of a grid of whole minutes ending with the last complete minute."""
    return now_ms - now_ms % MINUTE - minutes * MINUTE


def probe_series(count: int, seed: int, offset: float = 0.0) -> dict[str, list]:
    wave = [math.sin(i / 7 + seed) for i in range(count)]
    return {"probe.gateway.latency_ms": [round(10 + seed + 3 * w + offset, 3) for w in wave],
            "probe.gateway.jitter_ms": [round(1 + seed / 10 + abs(w), 3) for w in wave],
            "probe.gateway.loss_pct": [round(max(0.0, w) * seed / 3, 3) for w in wave],
            "eth0.rx_mbps": [round(50 + 20 * w, 3) for w in wave], "eth0.tx_mbps": [round(5 + 2 * w, 3) for w in wave]}


def open_page(ctl, sim, page, first: int, path: str, view: str) -> str:
    """One device online (as its agent announces itself), the page open at `path` with a live stream."""
    device_id = device_ids(1, first)[0]
    sim.online(device_id)
    ctl.http.wait("/api/devices", lambda b: b["devices"], timeout=10)
    page.goto(f"{ctl.http.url}/#{path.format(device_id=device_id)}")
    page.wait_for_selector(f"body[data-ready='{view}']")
    page.wait_for_selector("#conn.live")
    return device_id


def texts(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")


def test_fleet_table_lists_the_devices_with_the_apis_figures(start_agent, start_controller, sim, page):
    agent = start_agent(telemetry={"qos_period_s": 1.0})
    ctl = start_controller()
    ids = device_ids(6)
    now = int(time.time() * 1000)
    start = minute_grid(15, now)
    for seed, device_id in enumerate(ids[:5], start=1):
        sim.online(device_id, health="warning" if seed == 2 else "ok")
        # 15 whole minutes of 1 Hz samples that end a minute ago: the figures no longer move.
        sim.telemetry(device_id, start, 1000, probe_series(15 * 60, seed), uplink="eth0")
    sim.online(ids[5])
    sim.online(ids[5], status="offline")
    http = ctl.http

    def stored(fleet) -> bool:
        """Every batch ingested: the agent has a figure, each simulated device its 14 or 15 whole minutes
        (the window moves on at the next minute)."""
        minutes = {d["device_id"]: sum(v is not None for v in d["spark"]["latency"]) for d in fleet["devices"]}
        return minutes.get(agent.device_id, 0) >= 1 and all(minutes.get(d, 0) >= 14 for d in ids[:5])

    http.wait("/api/fleet", stored, timeout=40)
    fleet = {d["device_id"]: d for d in http.get("/api/fleet")["devices"]}

    page.goto(ctl.http.url + "/")
    page.wait_for_selector(f"tr[data-device='{agent.device_id}']")
    rows = page.eval_on_selector_all("#fleet tbody tr", """rows => rows.map(r => ({id: r.dataset.device,
        status: r.dataset.status, offline: r.classList.contains('offline'),
        values: Object.fromEntries([...r.querySelectorAll('td[data-metric]')].map(td =>
          [td.dataset.metric, td.textContent]))}))""")
    assert {r["id"] for r in rows} == set(fleet) == set(ids) | {agent.device_id}
    units = {"latency": "ms", "jitter": "ms", "loss": "%", "throughput": "Mbit/s"}
    for row in rows:
        if row["id"] == agent.device_id:
            continue  # its figures move every second; it is checked for presence and state
        api = fleet[row["id"]]
        assert row["status"] == api["status"] and row["offline"] == (api["status"] != "online")
        for metric, unit in units.items():
            value = api["latest"][metric]
            shown = row["values"][metric]
            if value is None:
                assert shown.startswith("—"), (row["id"], metric, shown)
            else:
                figure, shown_unit = shown.split(" ", 1)
                assert shown_unit.startswith(unit) and abs(float(figure) - value) <= 0.01 * max(1, abs(value)), \
                    (row["id"], metric, shown, value)
        assert row["values"]["health_score"].startswith(str(api["health_score"]) if api["health_score"] is not None else "—")
    # The API's figure is itself the stored series: the newest minute's mean of the gateway latency.
    device_id = ids[2]
    points = http.get(f"/api/devices/{device_id}/series/probe.gateway.latency_ms?start={start}"
                      f"&end={start + 15 * MINUTE}&step={MINUTE}")["points"]
    assert fleet[device_id]["latest"]["latency"] == round(points[-1]["mean"], 3)
    assert fleet[device_id]["spark"]["latency"][-1] is None  # this minute: nothing yet
    assert [r for r in rows if r["id"] == ids[5]][0]["offline"]
    assert [r for r in rows if r["id"] == agent.device_id][0]["status"] == "online"

    # Sorted by latency, both ways; devices without a figure last.
    page.click("th[data-key='latency']")
    shown = [float(v.split()[0]) for v in texts(page, "#fleet tbody td[data-metric='latency']") if v[0] != "—"]
    assert shown == sorted(shown)
    page.click("th[data-key='latency']")
    shown = [float(v.split()[0]) for v in texts(page, "#fleet tbody td[data-metric='latency']") if v[0] != "—"]
    assert shown == sorted(shown, reverse=True)
    # Sparklines drawn from the per-minute means.
    assert page.locator(f"tr[data-device='{ids[0]}'] svg.spark polyline").count() == 4, \
        [d["spark"] for d in http.get("/api/fleet")["devices"] if d["device_id"] == ids[0]]
    # The other theme, kept for the next visit.
    page.click("#theme")
    page.wait_for_selector("html[data-theme='dark'] body[data-ready='fleet']")
    assert page.evaluate("localStorage.getItem('rtkqos.theme')") == "dark"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "fleet_dark.png"))


CANVAS_INK = """([title, color]) => {
  const root = [...document.querySelectorAll('.uplot')].find(u => u.dataset.title === title);
  const canvas = root.querySelector('canvas');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const probe = document.createElement('canvas').getContext('2d');
  probe.fillStyle = color; probe.fillRect(0, 0, 1, 1);
  const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
  let ink = 0;
  for (let i = 0; i < data.length; i += 4)
    if (data[i + 3] > 200 && Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 40) ink++;
  return ink;
}"""


def test_device_plots_draw_the_stored_series_with_alert_marks_and_shaper_rates(start_controller, sim, page):
    ctl = start_controller()
    device_id = device_ids(1, 0xB0_00_00_00_00_00)[0]
    sim.online(device_id)
    now = int(time.time() * 1000)
    start = minute_grid(50, now)
    sim.telemetry(device_id, start, 1000, probe_series(50 * 60, 1, 0.0), uplink="eth0")
    sim.event(device_id, "qos_alert", {"severity": "error", "state": "closed", "command_id": "c1", "metric": "latency",
                                       "host": "gateway", "timestamp": start + 20 * MINUTE, "ended_at": start + 25 * MINUTE,
                                       "value": 240.0, "threshold": 100.0, "threshold_type": "max", "unit": "ms",
                                       "duration_s": 300})
    # Adaptive shaping's decisions as the agent publishes them (evt/autorate): a stored series each.
    decisions = [{"time_ms": start + 12 * MINUTE, "event": "rate", "direction": "upload", "reason": "cut",
                  "old_mbps": 20.0, "new_mbps": 8.5, "applied": True},
                 {"time_ms": start + 13 * MINUTE, "event": "rate", "direction": "download", "reason": "decay",
                  "old_mbps": 50.0, "new_mbps": 45.0, "applied": True},
                 {"time_ms": start + 14 * MINUTE, "event": "reflector_rotated", "address": "192.0.2.9"},
                 {"time_ms": start + 15 * MINUTE, "event": "rate", "direction": "upload", "reason": "raise",
                  "old_mbps": 8.5, "new_mbps": 9.0, "applied": True}]
    sim.event(device_id, "autorate", {"severity": "info", "mode": "active", "decisions": decisions})
    ctl.http.wait(f"/api/alerts?device_id={device_id}", lambda b: b["alerts"], timeout=20)
    ctl.http.wait(f"/api/devices/{device_id}/series/probe.gateway.latency_ms?start={start}&end={now}&step=60000",
                  lambda b: len(b["points"]) >= 50, timeout=20)
    rates = ctl.http.wait(f"/api/devices/{device_id}/series/autorate.upload_mbps?start={start}&end={now}&step=1000",
                          lambda b: len(b["points"]) == 2, timeout=20)["points"]
    assert [(p["ts"], p["mean"]) for p in rates] == [(start + 12 * MINUTE, 8.5), (start + 15 * MINUTE, 9.0)]

    page.goto(f"{ctl.http.url}/#/device/{device_id}?range=1h")
    page.wait_for_selector("body[data-ready='device']")
    color = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--s1').trim()")
    for title in ("Latency", "Jitter", "Loss", "Throughput per interface", "Adaptive shaper rate"):
        assert page.evaluate(CANVAS_INK, [title, color]) > 200, title
    # The alert episode is shaded on the time axis: the error colour's tint fills a band.
    shade = page.evaluate("""() => { const u = document.querySelector('.uplot canvas');
        const d = u.getContext('2d').getImageData(0, 0, u.width, u.height).data; return d.length; }""")
    assert shade > 0
    assert page.locator(".plot").count() == 6
    legend = texts(page, ".uplot .u-legend .u-label")
    assert "gateway p50" in legend and "gateway p95" in legend


def test_an_agents_alert_appears_in_the_alerts_view_within_two_seconds(start_controller, sim, page):
    ctl = start_controller()
    device_id = open_page(ctl, sim, page, 0xC0_00_00_00_00_00, "/alerts", "alerts")
    opened = int(time.time() * 1000) - 5000
    sent = time.monotonic()
    sim.event(device_id, "qos_alert", {"severity": "critical", "state": "open", "command_id": "c9", "metric": "latency",
                                       "host": "gateway", "timestamp": opened, "ended_at": None, "value": 512.4,
                                       "threshold": 100.0, "threshold_type": "max", "unit": "ms", "duration_s": 5})
    page.wait_for_selector("#open-alerts tr[data-state='open']", timeout=2000)
    elapsed = time.monotonic() - sent
    assert elapsed < 2.0
    row = page.locator("#open-alerts tr[data-state='open']")
    text = row.inner_text()
    assert device_id in text and "critical" in text and "512 ms" in text and "latency" in text
    assert page.locator("#alert-count").inner_text() == "1"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "alerts_view_live.png"))
    # The link goes to that moment on the device's plots.
    row.locator("text=on the plot").click()
    page.wait_for_selector("body[data-ready='device']")
    assert f"at={opened}" in page.url and page.locator(".plot").count() == 5


def test_an_alert_raised_by_a_real_agent_shows_within_two_seconds_of_its_event(start_agent, start_controller,
                                                                              broker, page):
    agent = start_agent()
    ctl = start_controller()
    ctl.http.wait("/api/devices", lambda b: any(d["status"] == "online" for d in b["devices"]), timeout=20)
    page.goto(f"{ctl.http.url}/#/alerts")
    page.wait_for_selector("body[data-ready='alerts']")
    page.wait_for_selector("#conn.live")
    arrived = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dashboard-test-watcher")
    watcher.on_message = lambda *_: arrived.append(time.monotonic())
    watcher.connect("127.0.0.1", broker.plain_port)
    watcher.subscribe(f"rtk/v1/+/+/{agent.device_id}/evt/qos_alert", qos=1)
    watcher.loop_start()
    try:
        # Any round trip to the gateway is above 1 microsecond: the agent's own monitor opens an episode.
        ctl.http.post("/api/commands", {"device_id": agent.device_id, "op": "qos_performance_monitor", "args": {
            "monitor_duration": 60, "metrics": ["latency"], "alert_thresholds": {"latency_ms": 0.001}}}, expect=202)
        deadline = time.monotonic() + 45
        while not page.locator("#open-alerts tr[data-state='open']").count():
            assert time.monotonic() < deadline, "no alert in the page"
            time.sleep(0.05)
        shown = time.monotonic()
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    assert arrived and shown - arrived[0] < 2.0, (arrived, shown)
    text = page.locator("#open-alerts tr[data-state='open']").first.inner_text()
    assert agent.device_id in text and "latency" in text and "agent" in text


CONFIRM_S = 16.0  # above the apply's 10 s verification probe, which comes before its result, by 6 s for the page


def kernel_tree(agent_host):
    """The agent's uplink tree as the kernel has it, read in the agent's namespace."""
    from pyroute2 import NetNS

    def read():
        with NetNS(agent_host.ns.name) as ipr:
            return tcstate.read(ipr, agent_host.agent_if)
    # In a thread of its own: pyroute2 runs an asyncio loop, and Playwright's is running in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(read).result()


def result_of(command: dict) -> dict:
    """The agent's result in the command's one reply (as the page's resultOf reads it)."""
    message = command["replies"][0]["result"]
    return message.get("payload", message)["result"]


@pytest.mark.parametrize("confirm", [False, True], ids=["not_confirmed", "confirmed"])
def test_a_real_agents_plan_shows_its_tc_lines_and_its_apply_counts_down_to_revert_or_confirm(
        confirm, start_agent, start_controller, agent_host, page):
    agent = start_agent(security={"allow_router_changes": True}, shaping={"confirm_timeout_s": CONFIRM_S})
    ctl = start_controller()
    device_id = agent.device_id
    ctl.http.wait("/api/devices", lambda b: any(d["device_id"] == device_id and d["status"] == "online"
                                                for d in b["devices"]), timeout=20)
    before = kernel_tree(agent_host)
    page.goto(f"{ctl.http.url}/#/device/{device_id}")
    page.wait_for_selector("body[data-ready='device']")
    page.wait_for_selector("#conn.live")
    page.fill("#token", "test-token")
    page.click("#token-form button")

    page.click("#preview")
    page.wait_for_selector("#tc-lines", timeout=40000)
    (dry,) = ctl.http.get(f"/api/devices/{device_id}/commands")["commands"]
    plan = result_of(dry)["optimization_plan"]
    assert plan["tc_commands"] and page.locator("#tc-lines").inner_text().splitlines() == plan["tc_commands"]
    assert kernel_tree(agent_host).signature() == before.signature()  # a dry run changes nothing

    page.click("#apply")
    page.click("#apply-yes")
    page.wait_for_selector("#countdown", timeout=60000)
    shown_at = time.time()
    shown = int(page.locator("#countdown").inner_text().split()[0])
    applied = ctl.http.get(f"/api/devices/{device_id}/commands")["commands"][0]
    assert applied["args"]["dry_run"] is False
    execution = result_of(applied)["execution_result"]
    assert execution["state"] == "pending" and execution["confirm_timeout_s"] == CONFIRM_S
    # The page counts down to the agent's own deadline (same clock here); a tick is 250 ms.
    assert abs(shown - (execution["confirm_by_ms"] / 1000 - shown_at)) <= 1.5, (shown, execution)
    root = kernel_tree(agent_host).root
    assert root.kind == "htb" and any(f"dev {agent_host.agent_if} root handle {tcstate.fmt_handle(root.handle)} htb"
                                      in line for line in plan["tc_commands"]), plan["tc_commands"]
    time.sleep(1.2)
    assert int(page.locator("#countdown").inner_text().split()[0]) < shown

    if not confirm:
        page.wait_for_selector("#reverted", timeout=(CONFIRM_S + 10) * 1000)
        assert f"not confirmed within {CONFIRM_S:g} s" in page.locator("#reverted").inner_text()
        assert kernel_tree(agent_host).signature() == before.signature()
        return
    page.click("#confirm")
    page.wait_for_selector("#pending .confirmed", timeout=20000)
    # The agent's state says so, and so does the page's shaping panel drawn from it.
    ctl.http.wait(f"/api/devices/{device_id}", lambda d: (d.get("state") or {}).get("agent", {}).get(
        "shaping", {}).get("transaction") == execution["transaction"]
        and d["state"]["agent"]["shaping"]["state"] == "confirmed", timeout=20)
    page.wait_for_selector("#shaping [data-shaping-state='confirmed']", timeout=10000)
    # Past the deadline, the plan's htb root is still in place.
    time.sleep(max(0.0, execution["confirm_by_ms"] / 1000 + 2 - time.time()))
    assert not page.locator("#reverted").count()
    assert kernel_tree(agent_host).signature() != before.signature()
    assert kernel_tree(agent_host).root.describe() == root.describe()


def test_a_missing_or_invalid_token_is_refused_and_sends_nothing(start_controller, sim, page, console):
    ctl = start_controller()
    device_id = open_page(ctl, sim, page, 0xE0_00_00_00_00_00, "/device/{device_id}", "device")
    page.click("#ta")
    refused = page.wait_for_selector("#ta-out [data-refused]")
    assert refused.get_attribute("data-refused") == "401" and "bearer token is required" in refused.inner_text()
    page.fill("#token", "not-the-token")
    page.click("#token-form button")
    page.click("#ss-start")
    refused = page.wait_for_selector("#ss-out [data-refused]")
    assert refused.get_attribute("data-refused") == "403" and "not valid" in refused.inner_text()
    # The browser logs each refused request; nothing else.
    for status in ("401 (Unauthorized)", "403 (Forbidden)"):
        console.remove(f"Failed to load resource: the server responded with a status of {status}")
    assert ctl.http.get(f"/api/devices/{device_id}/commands")["commands"] == []
    assert ctl.http.get(f"/api/sessions?device_id={device_id}")["sessions"] == []
    # The right token: the same form starts a session, shown with its stop button.
    page.fill("#token", "test-token")
    page.click("#token-form button")
    page.click("#ss-start")
    page.wait_for_selector("#sessions [data-stop]")
    assert [s["status"] for s in ctl.http.get(f"/api/sessions?device_id={device_id}")["sessions"]] == ["active"]
    page.click("#sessions [data-stop]")
    page.wait_for_selector("#ss-start")
    assert [s["status"] for s in ctl.http.get(f"/api/sessions?device_id={device_id}")["sessions"]] == ["stopped"]


def test_phone_width_and_light_theme_with_a_lost_connection_shown(start_controller, sim, browser, broker):
    ctl = start_controller()
    device_id = device_ids(1, 0xF0_00_00_00_00_00)[0]
    sim.online(device_id)
    now = int(time.time() * 1000)
    sim.telemetry(device_id, minute_grid(15, now), 1000, probe_series(15 * 60, 2), uplink="eth0")
    ctl.http.wait("/api/fleet", lambda f: any(d["latest"]["latency"] for d in f["devices"]), timeout=20)
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="light")
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(ctl.http.url + "/")
        page.wait_for_selector(f"tr[data-device='{device_id}']")
        page.wait_for_selector("#conn.live")
        assert page.evaluate("document.documentElement.dataset.theme") == "light"
        # Nothing wider than the screen but the table, which scrolls in its own box.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "phone_fleet_light.png"), full_page=True)
        page.goto(f"{ctl.http.url}/#/device/{device_id}?range=15m")
        page.wait_for_selector("body[data-ready='device']")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(ARTIFACTS / "phone_device_light.png"), full_page=True)
        # The controller goes away: the page says so; it comes back: the page recovers.
        ctl.stop()
        page.wait_for_selector("#conn.lost", timeout=10000)
        page.screenshot(path=str(ARTIFACTS / "phone_connection_lost.png"))
        ctl.start()
        page.wait_for_selector("#conn.live", timeout=15000)
        page.wait_for_selector("text=Live connection recovered")
    finally:
        context.close()
    assert errors == []


def test_the_pages_endpoints_refuse_bad_input_precisely(start_controller, sim):
    ctl = start_controller()
    device_id = device_ids(1, 0xA1_00_00_00_00_00)[0]
    sim.online(device_id)
    ctl.http.wait("/api/devices", lambda b: b["devices"], timeout=10)
    for path, status, message in (
            ("/api/devices/XYZ/events", 400, "device_id: 'XYZ' is not 12 lower-case hex digits"),
            ("/api/devices/0123456789ab/commands", 404, "device 0123456789ab is not known to this controller"),
            (f"/api/devices/{device_id}/events?since=soon", 400, "since: 'soon' is not an integer (Unix time, ms)"),
            (f"/api/devices/{device_id}/events?limit=0", 400, "limit: 0 is below the minimum 1")):
        assert ctl.http.call("GET", path) == (status, {"error": {"status": status, "message": message}}), path
    assert ctl.http.get(f"/api/devices/{device_id}/events") == {"events": []}
    # The page and every file it names are served (uPlot from the package data, no other host).
    html = urllib.request.urlopen(ctl.http.url + "/", timeout=10).read().decode()
    files = re.findall(r'(?:src|href)="(/ui/[^"]+)"', html)
    assert "/ui/vendor/uPlot.iife.min.js" in files and "/ui/app.js" in files
    for path in files:
        assert urllib.request.urlopen(ctl.http.url + path, timeout=10).status == 200, path
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
