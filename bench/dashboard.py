"""Dashboard benchmark in Debian's chromium (Playwright), against a real controller and mosquitto.

  fleet view with 1,000 devices (15 minutes of 10-second samples each, published as agents publish
  telemetry/qos): time from navigation to the table's 1,000 rows painted;
  device view over 7 days of 1-minute data (5 series, read from the controller's per-minute tier at
  the page's 2-minute step): time from navigation to its plots painted;
  each the median of RUNS cold loads (a new browser context: nothing cached), beside the reference
  measured in the same run: the time to fetch the JSON the view needs (urllib, same machine), so the
  ratio is the page's own cost; and the page weight (JS + CSS served, bytes; target < 200 KB).

"Painted" is the page's `ready:<view>` performance mark (set once the view's DOM and canvases are
drawn) plus the next animation frame; first-contentful-paint is reported beside it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from fleet_sim import FleetSim, device_ids  # noqa: E402
from mqtt_harness import Broker  # noqa: E402
from report import write as write_report  # noqa: E402

from playwright.sync_api import sync_playwright  # noqa: E402


def _controller_process():
    """The tests' ControllerProcess, loaded by path: `controller` here is bench/controller.py."""
    spec = importlib.util.spec_from_file_location("controller_conftest", HERE.parent / "tests/controller/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ControllerProcess

DEVICES = int(__import__("os").environ.get("BENCH_DEVICES", 1000))
RUNS = 5
CHUNK = 100
MINUTE = 60_000
WEB = HERE.parent / "src/rtk_qos/controller/web/static"
PAINTED = """view => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => {
  const mark = performance.getEntriesByName(`ready:${view}`)[0];
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  done({ready_ms: mark.startTime, frame_ms: performance.now(), fcp_ms: fcp ? fcp.startTime : null});
})))"""


def series(count: int, seed: int) -> dict[str, list]:
    return {"probe.gateway.latency_ms": [round(10 + seed % 17 + (i % 13) / 4, 3) for i in range(count)],
            "probe.gateway.jitter_ms": [round(1 + (i % 7) / 5, 3) for i in range(count)],
            "probe.gateway.loss_pct": [round((i % 11 == 0) * 0.5, 3) for i in range(count)],
            "eth0.rx_mbps": [round(40 + (i * seed) % 30, 3) for i in range(count)],
            "eth0.tx_mbps": [round(4 + (i * seed) % 3, 3) for i in range(count)]}


def fetch_ms(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        json.loads(response.read())
    return (time.perf_counter() - start) * 1000


def wait(url: str, predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url, timeout=60) as response:
            if predicate(json.loads(response.read())):
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting on {url}")
        time.sleep(1)


def load(browser, url: str, view: str) -> dict:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-ready]", timeout=120_000)
    if page.evaluate("document.body.dataset.ready") != view:
        raise SystemExit(f"{url}: {page.inner_text('#view')[:500]}")
    figures = page.evaluate(PAINTED, view)
    context.close()
    if errors:
        raise SystemExit(f"page errors: {errors}")
    return figures


def median(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "broker").mkdir()
        broker = Broker(tmp / "broker")
        (tmp / "ctl").mkdir()
        ctl = _controller_process()(tmp / "ctl", broker.plain_port, log_level="info")
        sim = FleetSim(broker.plain_port)
        try:
            now = int(time.time() * 1000)
            start = now - now % MINUTE - 15 * MINUTE
            ids = device_ids(DEVICES)
            base = ctl.http.url
            t0 = time.monotonic()
            week = device_ids(1, 0xB0_00_00_00_00_00)[0]
            sim.online(week)
            week_start = now - now % MINUTE - 7 * 1440 * MINUTE
            sim.telemetry(week, week_start, MINUTE, series(7 * 1440, 3), uplink="eth0")
            # In steps the controller keeps up with: mosquitto drops what exceeds a client's queue
            # (max_queued_messages, 1000 by default).
            for first in range(0, DEVICES, CHUNK):
                for seed, device_id in enumerate(ids[first:first + CHUNK], start=first):
                    sim.online(device_id)
                    sim.telemetry(device_id, start, 10_000, series(90, seed), uplink="eth0")
                wait(f"{base}/api/devices", lambda b, n=min(first + CHUNK, DEVICES) + 1: len(b["devices"]) >= n, timeout=300)
            print(f"published {DEVICES} devices and a week of one device in {time.monotonic() - t0:.1f} s")
            wait(f"{base}/api/fleet", lambda f: sum(d["latest"]["latency"] is not None for d in f["devices"]) > DEVICES,
                 timeout=600)
            # The week is read from the per-minute tier once the rollup has passed it.
            end = now - now % (2 * MINUTE) + 2 * MINUTE
            week_url = f"{base}/api/devices/{week}/series/probe.gateway.latency_ms?start={end - 7 * 1440 * MINUTE}&end={end}&step={2 * MINUTE}"
            wait(week_url, lambda b: len(b["points"]) >= 7 * 720 - 2, timeout=600)
            print(f"stored in {time.monotonic() - t0:.1f} s")

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                fleet_runs = [load(browser, base + "/", "fleet") for _ in range(RUNS)]
                device_runs = [load(browser, f"{base}/#/device/{week}?range=7d", "device") for _ in range(RUNS)]
                browser.close()
            fleet_ref = [fetch_ms(f"{base}/api/fleet") + fetch_ms(f"{base}/api/qos/overview") for _ in range(RUNS)]
            series_names = json.loads(urllib.request.urlopen(f"{base}/api/devices/{week}").read())["series"]
            device_ref = [sum(fetch_ms(f"{base}/api/devices/{week}/series/{n}?start={end - 7 * 1440 * MINUTE}"
                                       f"&end={end}&step={2 * MINUTE}") for n in series_names) for _ in range(RUNS)]
        finally:
            sim.close()
            ctl.stop()
            broker.stop()

    weight = {path.name: path.stat().st_size for path in sorted(WEB.rglob("*")) if path.suffix in (".js", ".css")}
    total = sum(weight.values())
    fleet_ms, device_ms = median(fleet_runs, "frame_ms"), median(device_runs, "frame_ms")
    fleet_ref_ms, device_ref_ms = round(statistics.median(fleet_ref), 1), round(statistics.median(device_ref), 1)
    report = {
        "command": "python bench/dashboard.py --output bench/dashboard-report.json",
        "browser": "Debian chromium, headless, via Playwright; 1280x900; a new context per load (cold cache)",
        "runs": RUNS,
        "fleet_view": {
            "devices": DEVICES, "painted_ms_median": fleet_ms, "ready_ms_median": median(fleet_runs, "ready_ms"),
            "first_contentful_paint_ms_median": median(fleet_runs, "fcp_ms"),
            "reference_api_fetch_ms_median": fleet_ref_ms,
            "reference": "GET /api/fleet + /api/qos/overview from Python on the same machine, same run",
            "ratio_to_reference": round(fleet_ms / fleet_ref_ms, 2), "runs": fleet_runs},
        "device_view": {
            "range": "7d at 2-minute steps from the per-minute tier", "series": len(series_names),
            "points_per_series": 7 * 720, "painted_ms_median": device_ms,
            "ready_ms_median": median(device_runs, "ready_ms"),
            "first_contentful_paint_ms_median": median(device_runs, "fcp_ms"),
            "reference_api_fetch_ms_median": device_ref_ms,
            "reference": "GET of each of the device's series over the same range and step, sequentially, same run",
            "ratio_to_reference": round(device_ms / device_ref_ms, 2), "runs": device_runs},
        "page_weight": {"js_css_bytes": total, "target_bytes": 200_000, "files": weight,
                        "note": "uncompressed, as served (aiohttp's static route does not compress)"},
    }
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
