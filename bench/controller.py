"""Controller benchmark: ingest against a bare paho subscriber, alert-to-SSE latency, overview
latency, store bytes per device-day and memory, all against one mosquitto in one run.

  ingest (flood): a publisher process sends FLOOD telemetry/qos messages (one 1 Hz sample of 5
    series each, the agent's shape, 293 bytes) as fast as it can, at QoS 0 and at QoS 1; the rate
    is messages / (last one received - publisher start). Reference: a bare paho subscriber
    (counts, nothing else) on the same broker in the same run, in rounds that alternate with the
    controller (median of ROUNDS); the controller's count is of messages committed to its store
    (QoS 1: acknowledged only after the commit). Target >= 0.5.
  fleet (1 Hz): DEVICES devices each publish one telemetry/qos message a second for FLEET_S
    seconds (one connection carries them all), after their retained lwt/state/attr; meanwhile
    ALERTS_PER_S qos_alert events, each timed from its publish to its arrival on /api/events
    (SSE; target p99 < 100 ms), and the overview is fetched once a second (latency p50/p99).
  store: table sizes (SQLite dbstat) before and after the fleet phase: bytes per device-day at
    1 Hz of the raw tier, and the steady state per device with the default retention (raw 6 h,
    per-minute 14 days, per-hour 365 days) from the measured bytes per row of each tier.
  cpu: per message during each flood, the CPU time of the bare subscriber's process, of the
    controller's and of its receiver's (median of the rounds).
  memory: the controller's peak RSS (VmHWM) and its CPU over the fleet phase, of its own process
    and of its MQTT receiver child (controller/receiver.py) each.

The broker is the bench's own mosquitto (no queue limit, so a flood is never dropped by it).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from mqtt_harness import MOSQUITTO, free_port, wait_listening  # noqa: E402
from report import write as write_report  # noqa: E402
from agent import cpu_seconds, percentile  # noqa: E402

TOKEN = "bench-token"
SERIES = ("probe.gateway.latency_ms", "probe.gateway.jitter_ms", "probe.gateway.loss_pct", "eth0.rx_mbps",
          "eth0.tx_mbps")


def device_id(i: int) -> str:
    return f"{0xbe0000000000 + i:012x}"


def telemetry(i: int, ts: int, seq: int) -> bytes:
    values = [1.0 + (seq % 7) * 0.1, 0.2, 0.0, 3.5 + seq % 3, 0.8]
    return json.dumps({"schema": "telemetry.qos/1.0", "ts": ts, "device_id": device_id(i), "payload": {
        "uplink": "eth0", "start_ms": ts, "step_ms": 1000,
        "series": {name: [value] for name, value in zip(SERIES, values)}}}, separators=(",", ":")).encode()


def topic(i: int, kind: str, tenant: str = "bench") -> str:
    return f"rtk/v1/{tenant}/fleet/{device_id(i)}/{kind}"


# The reference's floods go to a tenant the controller does not watch: neither hears the other's.
REFERENCE_TENANT = "reference"


def _client(port: int, client_id: str, **kwargs):
    from paho.mqtt import client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, **kwargs)
    client.max_inflight_messages_set(1000)
    connected = threading.Event()
    client.on_connect = lambda c, *_: (c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
                                       connected.set())
    client.connect("127.0.0.1", port, 60)
    client.loop_start()
    assert connected.wait(10)
    return client


# ---- child processes --------------------------------------------------------------------------

def run_flood(port: int, count: int, qos: int, devices: int, reference: int) -> None:
    client = _client(port, f"bench-flood-{os.getpid()}")
    # Each message its own millisecond, two hours back: distinct samples, inside the raw tier's
    # retention (6 h), that the fleet phase's never meet.
    first = int(time.time() * 1000) - 7_200_000
    info = None
    for seq in range(count):
        device = seq % devices
        info = client.publish(topic(device, "telemetry/qos", REFERENCE_TENANT if reference else "bench"),
                              telemetry(device, first + seq, seq), qos=qos)
    info.wait_for_publish(120)
    time.sleep(0.5)
    client.loop_stop()
    client.disconnect()


def run_bare(port: int, count: int, qos: int) -> None:
    """The reference: a paho subscriber that only counts."""
    done = threading.Event()
    state = {"n": 0, "last": 0.0}

    def on_message(_c, _u, _msg):
        state["n"] += 1
        if state["n"] == count:
            state["last"] = time.monotonic()
            done.set()

    client = _client(port, f"bench-bare-{os.getpid()}")
    client.on_message = on_message
    client.subscribe(f"rtk/v1/{REFERENCE_TENANT}/+/+/telemetry/+", qos=qos)
    time.sleep(0.5)
    print("ready", flush=True)
    cpu = time.process_time()
    done.wait(300)
    print(json.dumps({"count": state["n"], "last": state["last"], "cpu_s": time.process_time() - cpu}), flush=True)


# ---- the bench --------------------------------------------------------------------------------

class Broker:
    def __init__(self, workdir: Path):
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "set_tcp_nodelay true\nmax_queued_messages 0\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class ControllerProc:
    def __init__(self, workdir: Path, broker_port: int, extra_toml: str = ""):
        """`extra_toml`: more tables of the configuration (controller_scale.py's store and scale)."""
        self.http_port = free_port()
        self.state = workdir / "controller"
        config = workdir / "controller.toml"
        config.write_text(f'state_dir = "{self.state}"\nlog_level = "warning"\ntenant = "bench"\n'
                          f'[broker]\nport = {broker_port}\n'
                          f'host = "127.0.0.1"\nclient_id = "bench-controller"\n[http]\nport = {self.http_port}\n'
                          f'token = "{TOKEN}"\n{extra_toml}')
        self.log = open(workdir / "controller.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "rtk_qos", "controller", "--config", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_listening(self.http_port)
        self.url = f"http://127.0.0.1:{self.http_port}"
        deadline = time.monotonic() + 30
        while not json.loads(self.get("/api/status"))["connected"]:  # connected: subscribed
            assert time.monotonic() < deadline, "the controller did not connect"
            time.sleep(0.1)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return response.read()

    def counter(self, kind: str) -> float:
        return json.loads(self.get("/api/status"))["counts"].get(kind, 0)

    @property
    def pids(self) -> dict[str, int]:
        """The controller's process and its receiver child's."""
        children = [int(c) for task in Path(f"/proc/{self.proc.pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
        return {"controller": self.proc.pid, "receiver": children[0]}

    def status(self, key: str, pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(key)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def flood(port: int, count: int, qos: int, devices: int, reference: bool) -> tuple[subprocess.Popen, float]:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, "--child-flood", str(port), str(count), str(qos), str(devices),
                             str(int(reference))])
    return proc, started


def bare_rate(port: int, count: int, qos: int, devices: int) -> float:
    return bare_flood(port, count, qos, devices)[0]


def bare_flood(port: int, count: int, qos: int, devices: int) -> tuple[float, float]:
    """The reference's rate, and its CPU time per message (us)."""
    sub = subprocess.Popen([sys.executable, __file__, "--child-bare", str(port), str(count), str(qos)],
                           stdout=subprocess.PIPE, text=True)
    assert sub.stdout.readline().strip() == "ready"
    pub, started = flood(port, count, qos, devices, reference=True)
    outcome = json.loads(sub.stdout.readline())
    pub.wait(120)
    sub.wait(10)
    if outcome["count"] != count:
        raise RuntimeError(f"the bare subscriber got {outcome['count']} of {count}")
    return count / (outcome["last"] - started), outcome["cpu_s"] / count * 1e6


def controller_rate(ctl: ControllerProc, port: int, count: int, qos: int, devices: int) -> tuple[float, dict]:
    """The rate, and the CPU time per message (us) of the controller's process and its receiver's."""
    base = ctl.counter("in_telemetry")
    pids = ctl.pids
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    pub, started = flood(port, count, qos, devices, reference=False)
    deadline = started + 300
    while ctl.counter("in_telemetry") < base + count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the controller stored {ctl.counter('in_telemetry') - base} of {count}")
        time.sleep(0.05)
    finished = time.monotonic()
    cpu = {name: (cpu_seconds(pid) - cpu[name]) / count * 1e6 for name, pid in pids.items()}
    pub.wait(120)
    return count / (finished - started), cpu


def settle(ctl: ControllerProc) -> None:
    """Wait until the controller has rolled up what the floods stored (their rows are two hours
    old): the fleet phase measures the steady state, not that backlog."""
    last, stable_since = -1.0, time.monotonic()
    while time.monotonic() - stable_since < 3.0:
        rows = ctl.counter("rollup_rows")
        if rows != last:
            last, stable_since = rows, time.monotonic()
        time.sleep(0.2)


def table_sizes(db_path: Path) -> dict[str, int]:
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    sizes = dict(db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
    rows = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("samples_raw", "samples_minute",
                                                                             "samples_hour")}
    db.close()
    return {"bytes": sizes, "rows": rows}


class SseListener(threading.Thread):
    def __init__(self, url: str, sent: dict):
        super().__init__(daemon=True)
        self.url = url
        self.sent = sent
        self.latencies: list[float] = []
        self.ready = threading.Event()
        self.ended = False  # the controller closed the stream (a client too far behind is cut off)

    def run(self):
        with urllib.request.urlopen(self.url + "/api/events", timeout=600) as stream:
            self.ready.set()
            kind = None
            for raw in stream:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "event":
                    data = json.loads(line[6:])
                    key = (data.get("payload") or {}).get("command_id")
                    at = time.monotonic()
                    if key in self.sent:
                        self.latencies.append((at - self.sent.pop(key)) * 1000)
        self.ended = True


def fleet_phase(ctl: ControllerProc, port: int, devices: int, seconds: int, alerts_per_s: float) -> dict:
    client = _client(port, "bench-fleet")
    now = int(time.time() * 1000)
    for i in range(devices):  # what an agent publishes at connect, retained
        for kind, schema, payload in (("lwt", "lwt/1.0", {"status": "online", "last_seen": now}),
                                      ("state", "state/1.0", {"health": "ok", "capabilities": {"diagnostics": []}}),
                                      ("attr", "attr/1.0", {"device_type": "router"})):
            client.publish(topic(i, kind), json.dumps({"schema": schema, "ts": now, "device_id": device_id(i),
                                                       "payload": payload}), qos=1, retain=True)
    deadline = time.monotonic() + 60
    while sum(d["status"] == "online" for d in json.loads(ctl.get("/api/devices"))["devices"]) < devices:
        assert time.monotonic() < deadline, "devices not discovered"
        time.sleep(0.5)
    sent: dict[str, float] = {}
    sse = SseListener(ctl.url, sent)
    sse.start()
    sse.ready.wait(10)
    overview_ms, inbox_max = [], 0
    pids = ctl.pids
    cpu0, t0 = {k: cpu_seconds(pid) for k, pid in pids.items()}, time.monotonic()
    base = ctl.counter("in_telemetry")
    alert_every = 1.0 / alerts_per_s
    next_alert = t0
    alert_seq = 0
    for second in range(seconds):
        tick = t0 + second
        ts = int(time.time() * 1000)
        for i in range(devices):
            # Spread over the second, as 1,000 independent devices would be.
            due = tick + i / devices
            while True:
                now_m = time.monotonic()
                if now_m >= next_alert:
                    alert_seq += 1
                    key = f"bench-alert-{alert_seq}"
                    event = {"schema": "evt.qos_alert/1.0", "ts": int(time.time() * 1000),
                             "device_id": device_id(alert_seq % devices), "payload": {
                                 "event_type": "qos_alert", "severity": "warning", "state": "open",
                                 "command_id": key, "metric": "latency", "host": "gateway", "value": 120.0,
                                 "threshold": 100.0, "threshold_type": "max", "unit": "ms",
                                 "timestamp": int(time.time() * 1000), "duration_s": 3}}
                    sent[key] = time.monotonic()
                    client.publish(topic(alert_seq % devices, "evt/qos_alert"), json.dumps(event), qos=1)
                    next_alert += alert_every
                if now_m >= due:
                    break
                time.sleep(min(due, next_alert) - now_m)
            client.publish(topic(i, "telemetry/qos"), telemetry(i, ts, second), qos=0)
        began = time.monotonic()
        ctl.get("/api/qos/overview")
        overview_ms.append((time.monotonic() - began) * 1000)
        inbox_max = max(inbox_max, json.loads(ctl.get("/api/status"))["inbox"])
    elapsed = time.monotonic() - t0
    time.sleep(2.0)
    cpu = {k: cpu_seconds(pid) - cpu0[k] for k, pid in pids.items()}
    ingested = ctl.counter("in_telemetry") - base
    client.loop_stop()
    client.disconnect()
    lost_alerts = len(sent)
    return {"devices": devices, "seconds": seconds, "telemetry_sent": devices * seconds,
            "telemetry_ingested": int(ingested), "ingest_per_s": round(ingested / elapsed, 1),
            "inbox_max": inbox_max,
            "cpu_percent_of_one_core": {k: round(100 * v / elapsed, 1) for k, v in cpu.items()},
            "alerts_sent": alert_seq, "alerts_not_seen_on_sse": lost_alerts, "sse_stream_cut": sse.ended,
            "alert_to_sse_ms": {"p50": round(percentile(sse.latencies, 0.5), 2),
                                "p99": round(percentile(sse.latencies, 0.99), 2),
                                "max": round(max(sse.latencies), 2), "samples": len(sse.latencies)},
            "overview_ms": {"p50": round(percentile(overview_ms, 0.5), 2),
                            "p99": round(percentile(overview_ms, 0.99), 2), "samples": len(overview_ms)}}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("--child-flood", "--child-bare"):
        args = [int(a) for a in sys.argv[2:]]
        run_flood(*args) if sys.argv[1] == "--child-flood" else run_bare(*args)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output")
    parser.add_argument("--flood", type=int, default=30000, dest="flood_count")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--fleet-seconds", type=int, default=60)
    parser.add_argument("--alerts-per-s", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", action="store_true", help="the fleet-scale bench instead (controller_scale.py)")
    parser.add_argument("--scale-devices", type=int, default=10000)
    parser.add_argument("--scale-seconds", type=int, default=30)
    ns = parser.parse_args()
    if ns.scale:
        from controller_scale import run
        return run(ns.output, ns.scale_devices, ns.scale_seconds, ns.alerts_per_s, ns.flood_count, ns.rounds)
    workdir = Path(tempfile.mkdtemp(prefix="rtk-qos-bench-controller-"))
    broker = Broker(workdir)
    report: dict = {"machine": {"cpus": os.cpu_count(), "note": "shared with other work; ratios are in-run"}}
    try:
        report["machine"]["load_average_at_start"] = os.getloadavg()
        ctl = ControllerProc(workdir, broker.port)
        try:
            # Rounds alternate the reference and the controller, so a neighbour's load hits both alike.
            rounds: dict = {0: {"bare": [], "controller": []}, 1: {"bare": [], "controller": []}}
            cpu: dict = {0: collections.defaultdict(list), 1: collections.defaultdict(list)}  # us per message
            for _ in range(ns.rounds):
                for qos in (0, 1):
                    rate, cpu_bare = bare_flood(broker.port, ns.flood_count, qos, ns.devices)
                    rounds[qos]["bare"].append(rate)
                    cpu[qos]["bare_paho"].append(cpu_bare)
                    rate, cpu_mine = controller_rate(ctl, broker.port, ns.flood_count, qos, ns.devices)
                    rounds[qos]["controller"].append(rate)
                    for name, value in cpu_mine.items():
                        cpu[qos][name].append(value)
            ingest = {}
            for qos, got in rounds.items():
                bare, mine = percentile(got["bare"], 0.5), percentile(got["controller"], 0.5)
                ingest[f"qos{qos}"] = {"bare_paho_msgs_per_s": round(bare), "controller_msgs_per_s": round(mine),
                                       "ratio": round(mine / bare, 3), "target_ratio": 0.5,
                                       "rounds": {k: [round(v) for v in vs] for k, vs in got.items()},
                                       "cpu_us_per_message": {k: round(percentile(vs, 0.5), 1)
                                                              for k, vs in cpu[qos].items()}}
            report["ingest_flood"] = {"messages": ns.flood_count,
                                      "message_bytes": len(telemetry(0, int(time.time() * 1000), 0)),
                                      "rounds": ns.rounds, "figure": "median of the rounds", **ingest}
            settle(ctl)
            before = table_sizes(ctl.state / "controller.db")
            report["fleet_1hz"] = fleet_phase(ctl, broker.port, ns.devices, ns.fleet_seconds, ns.alerts_per_s)
            report["fleet_1hz"]["alert_to_sse_target_p99_ms"] = 100
            after = table_sizes(ctl.state / "controller.db")
            report["memory"] = {f"{name}_{figure}_mb": round(ctl.status(key, pid) / 2**20, 1)
                                for name, pid in ctl.pids.items()
                                for figure, key in (("rss_peak", "VmHWM"), ("rss", "VmRSS"))}
        finally:
            ctl.stop()
        report["store"] = store_figures(before, after, ns.devices, ns.fleet_seconds, workdir)
        report["machine"]["load_average_at_end"] = os.getloadavg()
    finally:
        broker.stop()
    print(json.dumps(report, indent=2))
    write_report(report, ns.output)
    return 0


def store_figures(before: dict, after: dict, devices: int, seconds: int, workdir: Path) -> dict:
    raw_bytes = after["bytes"]["samples_raw"] - before["bytes"]["samples_raw"]
    raw_rows = after["rows"]["samples_raw"] - before["rows"]["samples_raw"]
    device_days = devices * seconds / 86400
    per_row = {"raw": raw_bytes / raw_rows}
    # The aggregate tiers' bytes per row, from a store filled for the purpose: 3 h of 1 Hz samples.
    per_row.update(aggregate_row_bytes(workdir))
    series = len(SERIES) + 1  # and the derived uplink.throughput_mbps
    steady = steady_state_bytes(per_row, series)
    return {"series_per_device": series, "raw_rows_added": raw_rows, "raw_bytes_added": raw_bytes,
            "raw_bytes_per_device_day_at_1hz": round(raw_bytes / device_days),
            "bytes_per_row": {k: round(v, 1) for k, v in per_row.items()},
            "steady_state_bytes_per_device_default_retention": round(steady),
            "note": "raw 6 h + per-minute 14 days + per-hour 365 days, from the measured bytes per row"}


def steady_state_bytes(per_row: dict, series: int) -> float:
    """What one device holds with the default retention, from bytes per row of each tier."""
    return (per_row["raw"] * series * 3600 * 6 + per_row["minute"] * series * 1440 * 14
            + per_row["hour"] * series * 24 * 365)


def aggregate_row_bytes(workdir: Path) -> dict:
    from rtk_qos.controller.store import HOUR_MS, open_store
    path = workdir / "tiers.db"
    store = open_store(f"sqlite://{path}")
    t0 = int(time.time() * 1000) - 4 * HOUR_MS
    t0 -= t0 % HOUR_MS
    with store.transaction():
        for d in range(20):
            store.add_samples((device_id(d), name, t0 + s * 1000, float(s % 97))
                              for name in SERIES for s in range(3 * 3600))
        while store.rollup(t0 + 4 * HOUR_MS):  # a bounded share of the series per call: to the end
            pass
    store.close()
    sizes = table_sizes(path)
    return {"minute": sizes["bytes"]["samples_minute"] / sizes["rows"]["samples_minute"],
            "hour": sizes["bytes"]["samples_hour"] / sizes["rows"]["samples_hour"]}


if __name__ == "__main__":
    sys.exit(main())
