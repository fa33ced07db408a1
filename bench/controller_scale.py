"""The controller at fleet scale (`bench/controller.py --scale`): DEVICES simulated devices at 1 Hz
against 1, 2 and 3 controller instances over one PostgreSQL and one mosquitto, all in one run.

  bare_paho_msgs_per_s: a paho subscriber that only counts, receiving a flood of FLOOD
    telemetry-sized messages at QoS 1 (bench/controller.py's reference, median of ROUNDS).
  instances: for each count, fresh instances (scale.partitions PARTITIONS, the default lease)
    over the same database; once they have dealt the partitions, the fleet (bench/fleet_publisher.py,
    its own process) sends each device's telemetry/qos once a second for SECONDS at QoS 1, and
    ALERTS_PER_S evt/qos_alert. ingest_msgs_per_s: telemetry messages ingested (each instance's
    `in_telemetry`) over the stream, per instance and in total; backlog: what waited; drain_s:
    after the stream, until every message published is stored; cpu_percent_of_one_core: each
    instance (its process and its receiver child), PostgreSQL (all its processes), mosquitto and
    the publisher over the stream: where the two cores went.
  alert_to_sse_ms: from an alert's publish (its `sent_ns`) to its arrival on the first instance's
    /api/events (the owner's note, passed on by NOTIFY when another instance owns the device);
    overview_ms: /api/qos/overview of the first instance, every OVERVIEW_EVERY_S during the stream.
  new_device_window_ms (2-instance phase, after the stream): NEWCOMERS devices never seen before
    publish their retained lwt and at once a telemetry/qos every NEWCOMER_EVERY_MS: from the lwt
    to the first sample stored, per device (what came earlier reached no one).
  postgres_bytes_per_device_day: the growth of samples_raw (heap, index, TOAST) and of the whole
    database during the 1-instance phase (stream and drain), per device-day at 1 Hz.
  failover: in the last phase one instance is killed (SIGKILL) halfway through the stream;
    published (telemetry the broker acknowledged), stored (distinct samples of it in the
    database), lost, stored_twice (rows beyond the distinct (series, ts) keys).

Everything runs on this machine, shared with other work: the load average is in the report.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from agent import cpu_seconds, percentile  # noqa: E402
from controller import Broker, ControllerProc, bare_rate  # noqa: E402
from fleet_sim import sse  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402
from report import write as write_report  # noqa: E402

PARTITIONS = 32
OVERVIEW_EVERY_S = 5  # a dashboard's refresh; once a second, the overview itself took a share of the database
NEWCOMERS = 20
NEWCOMER_EVERY_MS = 5
FLEET_FILTER = "left(device_id, 2) = 'be'"  # bench/controller.py's device ids


class Instance(ControllerProc):
    """A controller of several, over the bench's PostgreSQL."""

    def __init__(self, workdir: Path, broker_port: int, store_url: str):
        workdir.mkdir(parents=True)
        super().__init__(workdir, broker_port, f'[store]\nurl = "{store_url}"\n[scale]\npartitions = {PARTITIONS}\n')

    def fetch(self, path: str):
        return json.loads(self.get(path))

    def cpu(self) -> float:
        """Its process and its receiver child."""
        return tree_cpu(self.proc.pid)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)
        self.log.close()


class Sse(threading.Thread):
    """An instance's /api/events: the arrival time of each bench alert (by its command id)."""

    def __init__(self, url: str, arrived: dict):
        super().__init__(daemon=True)
        self.url = url
        self.arrived = arrived
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            for kind, data in sse(self.url, self.ready):
                at = time.time_ns()
                payload = data.get("payload") or {}
                key = payload.get("command_id")
                if kind == "event" and isinstance(key, str) and key.startswith("bench-scale-"):
                    self.arrived.setdefault(key, (at - payload["sent_ns"]) / 1e6)
        except OSError:  # the instance was killed or stopped
            pass


def query(url: str, sql: str, params=()) -> list:
    import psycopg
    with psycopg.connect(url, autocommit=True) as db:
        return db.execute(sql, params).fetchall()


def stored(url: str, first_ts: int, last_ts: int) -> tuple[int, int]:
    """(rows, distinct (series, ts)) of the stream's probe latency samples: one per message."""
    return tuple(query(url, f"SELECT COUNT(*), COUNT(DISTINCT (r.series_id, r.ts)) FROM samples_raw r JOIN series s "
                            f"ON s.id = r.series_id WHERE s.name = 'probe.gateway.latency_ms' AND left(s.device_id, 2) = 'be' "
                            f"AND r.ts BETWEEN %s AND %s", (first_ts, last_ts))[0])


def sizes(url: str) -> dict:
    return dict(query(url, "SELECT 'samples_raw', pg_total_relation_size('samples_raw') UNION ALL "
                           "SELECT 'database', pg_database_size(current_database())"))


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its descendants."""
    try:
        children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
        return cpu_seconds(pid) + sum(tree_cpu(child) for child in children)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0  # gone meanwhile


def wait_dealt(instances: list[Instance], timeout: float = 120) -> float:
    began = time.monotonic()
    while True:
        held = sorted(p for i in instances for p in i.fetch("/api/status")["scale"]["partitions"])
        if held == list(range(PARTITIONS)):
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"partitions not dealt after {timeout} s: {held}")
        time.sleep(0.5)


def publisher(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "fleet_publisher.py"), *map(str, args)],
                            stdout=subprocess.PIPE, text=True)


def phase(workdir: Path, broker_port: int, url: str, others: dict, count: int, devices: int, seconds: int, alerts_per_s: float,
          kill: bool, newcomers: bool) -> dict:
    began = time.monotonic()
    instances = [Instance(workdir / f"instances{count}-{k}", broker_port, url) for k in range(count)]
    try:
        dealt_s = wait_dealt(instances)
        while True:  # the partitions' sessions have every device's retained lwt
            online = query(url, f"SELECT COUNT(*) FROM devices WHERE status = 'online' AND {FLEET_FILTER}")[0][0]
            if online >= devices:
                break
            if time.monotonic() - began > 300:
                raise RuntimeError(f"{online} of {devices} devices online after 300 s")
            time.sleep(0.5)
        ready_s = time.monotonic() - began
        arrived: dict = {}
        listener = Sse(instances[0].url, arrived)  # the last instance is the one killed
        listener.start()
        listener.ready.wait(30)
        size0 = sizes(url)
        cpu0 = [i.cpu() for i in instances]
        others0 = {name: tree_cpu(pid) for name, pid in others.items()}
        in0 = [i.fetch("/api/status")["counts"].get("in_telemetry", 0) for i in instances]
        fleet = publisher("stream", broker_port, devices, seconds, alerts_per_s)
        publisher_cpu = 0.0
        t0 = time.monotonic()
        overview_ms, backlog_max, killed = [], 0, None
        next_overview = t0 + 1.0
        while fleet.poll() is None:
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0) % 1.0))
            publisher_cpu = tree_cpu(fleet.pid) or publisher_cpu
            live = [i for i in instances if i is not killed]
            if time.monotonic() >= next_overview:
                next_overview += OVERVIEW_EVERY_S
                asked = time.monotonic()
                instances[0].fetch("/api/qos/overview")
                overview_ms.append((time.monotonic() - asked) * 1000)
            backlog_max = max(backlog_max, sum(i.fetch("/api/status")["inbox"] for i in live))
            if kill and killed is None and time.monotonic() - t0 >= seconds / 2:
                killed = instances[-1]
                killed.stop(signal.SIGKILL)
        stream_s = time.monotonic() - t0
        sent = json.loads(fleet.stdout.read())
        ingested = [(i.fetch("/api/status")["counts"].get("in_telemetry", 0) - base) if i is not killed else None
                    for i, base in zip(instances, in0)]
        cpu = {"instances": [round(100 * (i.cpu() - c) / stream_s, 1) if i is not killed else None
                             for i, c in zip(instances, cpu0)],
               **{name: round(100 * (tree_cpu(pid) - others0[name]) / stream_s, 1) for name, pid in others.items()},
               "publisher": round(100 * publisher_cpu / stream_s, 1)}
        published = sent["telemetry_sent"]
        drain0 = time.monotonic()
        while stored(url, sent["first_ts"], sent["last_ts"])[1] < published and time.monotonic() - drain0 < 300:
            time.sleep(3.0)  # the count itself is work for the database: not too often
        drain_s = time.monotonic() - drain0
        rows, distinct = stored(url, sent["first_ts"], sent["last_ts"])
        size1 = sizes(url)
        latencies = list(arrived.values())
        outcome = {
            "count": count, "partitions_dealt_s": round(dealt_s, 1), "ready_s": round(ready_s, 1),
            "stream_s": round(stream_s, 1), "telemetry_published": published, "publisher_max_lag_ms": sent["max_lag_ms"],
            "ingest_msgs_per_s": round(sum(n for n in ingested if n is not None) / stream_s, 1),
            "ingest_msgs_per_s_per_instance": [None if n is None else round(n / stream_s, 1) for n in ingested],
            "offered_msgs_per_s": round(published / stream_s, 1), "backlog_max": backlog_max,
            "drain_s": round(drain_s, 1), "stored": distinct,
            "cpu_percent_of_one_core": cpu,
            "alert_to_sse_ms": {"p50": round(percentile(latencies, 0.5), 2) if latencies else None,
                                "p99": round(percentile(latencies, 0.99), 2) if latencies else None,
                                "max": round(max(latencies), 2) if latencies else None,
                                "seen": len(latencies), "sent": sent["alerts_sent"]},
            "overview_ms": {"p50": round(percentile(overview_ms, 0.5), 1), "max": round(max(overview_ms), 1),
                            "samples": len(overview_ms)},
            "growth_bytes": {k: size1[k] - size0[k] for k in size0},
        }
        if newcomers:
            outcome["new_device_window_ms"] = new_device_window(broker_port, url, devices)
            outcome["discovery_ms_by_instance"] = [i.fetch("/api/status")["scale"]["discovery_ms"] for i in instances]
        if kill:
            outcome["failover"] = {"killed_after_s": round(seconds / 2, 1), "published": published, "stored": distinct,
                                   "lost": published - distinct, "stored_twice": rows - distinct}
        return outcome
    finally:
        for instance in instances:
            instance.stop()


def new_device_window(broker_port: int, url: str, first: int) -> dict:
    fleet = publisher("newcomers", broker_port, first, NEWCOMERS, 2.0, NEWCOMER_EVERY_MS)
    sent = json.loads(fleet.stdout.read())
    fleet.wait()
    windows, deadline = {}, time.monotonic() + 60
    while len(windows) < NEWCOMERS and time.monotonic() < deadline:
        windows = dict(query(url, "SELECT s.device_id, MIN(r.ts) - %s FROM samples_raw r JOIN series s ON "
                                  "s.id = r.series_id WHERE s.device_id = ANY(%s) AND s.name = "
                                  "'probe.gateway.latency_ms' GROUP BY 1", (sent["t0_ms"], sent["devices"])))
        time.sleep(0.5)
    found = sorted(windows.values())
    return {"devices": NEWCOMERS, "every_ms": NEWCOMER_EVERY_MS, "with_samples": len(found),
            "p50": percentile(found, 0.5) if found else None, "max": max(found) if found else None}


def run(output, devices: int, seconds: int, alerts_per_s: float, flood: int, rounds: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rtk-qos-bench-scale-"))
    report: dict = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                                "note": "one 2-core machine shared with other work: broker, PostgreSQL, publisher "
                                        "and every instance on it"},
                    "devices": devices, "rate_hz": 1, "partitions": PARTITIONS, "stream_s": seconds}
    broker = Broker(workdir)
    pg = PostgresServer()
    try:
        url = pg.create_database()
        bare = [bare_rate(broker.port, flood, 1, devices) for _ in range(rounds)]
        report["bare_paho_msgs_per_s"] = round(percentile(bare, 0.5))
        report["bare_paho_rounds"] = [round(r) for r in bare]
        # The fleet announces itself (retained) before any instance runs: the first lobby hears it all.
        announce = publisher("announce", broker.port, devices)
        report["announce"] = json.loads(announce.stdout.read())
        announce.wait()
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
        others = {"postgresql": postmaster, "mosquitto": broker.proc.pid}
        phases = [phase(workdir, broker.port, url, others, count, devices, seconds, alerts_per_s, kill=count == 3,
                        newcomers=count == 2) for count in (1, 2, 3)]
        report["instances"] = phases
        report["failover"] = phases[-1].pop("failover")
        one = phases[0]
        device_days = one["telemetry_published"] / 86400  # one message a device-second
        report["postgres_bytes_per_device_day"] = {k: round(v / device_days) for k, v in one["growth_bytes"].items()}
        report["alert_to_sse_ms"] = {p["count"]: p["alert_to_sse_ms"] for p in phases}
        report["overview_ms_at_devices"] = {p["count"]: p["overview_ms"] for p in phases}
        report["machine"]["load_average_at_end"] = os.getloadavg()
    finally:
        pg.stop()
        broker.stop()
    print(json.dumps(report, indent=2))
    write_report(report, output)
    return 0
