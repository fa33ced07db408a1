"""Agent benchmarks through a real broker; every figure beside a reference from the same run.

  ack latency p50/p99 while four long commands run, against the broker's own
  round trip (a client publishing to a topic it subscribes to: the floor any ack
  pays); request handling rate (requests answered per second, pipelined);
  idle CPU (% of one core over 60 s of 1 Hz sampling and telemetry) and resident
  memory, against a bare Python that imports only paho-mqtt; and whether
  pyroute2 or scikit-learn were imported by an idle agent (they must not be).

Targets (reported, never asserted): ack p99 < 20 ms on loopback with four long
commands running; idle CPU < 0.5 % of one core; RSS < 40 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from mqtt_harness import AgentHost, Broker, Controller, flat_request, to_toml  # noqa: E402
from netns import Netns  # noqa: E402
from report import write as write_report  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Heavy packages only the commands that need them may import (shaping: pyroute2; the
# scikit-learn backend: sklearn, numpy): on a router each costs megabytes the idle agent must not pay.
MUST_NOT_IMPORT = ("pyroute2", "sklearn", "numpy")
# The positive control: every agent imports paho, so a log without it means the check sees nothing.
MUST_IMPORT = ("paho",)
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([A-Za-z_]\w*)", re.M)


def imported_packages(importtime_log: str) -> set[str]:
    """Top-level packages a `python -X importtime` log shows as imported."""
    return set(IMPORT_LINE.findall(importtime_log))


def import_problems(importtime_log: str) -> list[str]:
    seen = imported_packages(importtime_log)
    return ([f"{name} was imported by the agent" for name in MUST_NOT_IMPORT if name in seen]
            + [f"{name} is not in the import log: the check cannot see the agent's imports"
               for name in MUST_IMPORT if name not in seen])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def start_agent(workdir: Path, port: int, host: AgentHost, **limits) -> tuple[subprocess.Popen, str]:
    """The agent in its own namespace, as on a router: its default gateway (continuously probed,
    like a real one) is this machine's end of a veth, where the broker listens too."""
    config = {"device_id": "0000000be0c4", "tenant": "bench", "site": "lab", "state_dir": str(workdir / "state"),
              "log_level": "warning", "broker": {"host": host.gateway, "port": port},
              "limits": {"max_running": 12, "max_queued": 500, **limits},
              "telemetry": {"network_period_s": 10, "state_period_s": 60, "sample_period_s": 1.0}}
    path = workdir / "agent.toml"
    path.write_text(to_toml(config))
    log = open(workdir / "agent.log", "w")
    # -X importtime logs every module the agent imports: proof of what an idle agent loads.
    proc = host.ns.popen(sys.executable, "-X", "importtime", "-m", "rtk_qos", "agent", "--config", str(path),
                         stdout=log, stderr=subprocess.STDOUT)
    return proc, f"rtk/v1/bench/lab/{config['device_id']}"


def broker_round_trip(ctl: Controller, n: int) -> list[float]:
    topic = f"bench/echo/{uuid.uuid4().hex[:6]}"
    ctl.subscribe(topic)
    out = []
    for i in range(n):
        marker = f"echo-{i}"
        sent = ctl.publish(topic, json.dumps({"id": marker}))
        got = ctl.wait_for(lambda m, marker=marker: m.topic == topic and m.body.get("id") == marker, timeout=5)[0]
        out.append(got.at - sent)
    return out


def ack_latency(ctl: Controller, base: str, n: int) -> tuple[list[float], list[str]]:
    long_ids = []
    for _ in range(4):
        request = flat_request("qos_traffic_analysis", {"duration": 600, "analysis_type": "basic",
                                                         "interfaces": ["lo"]})
        ctl.publish(f"{base}/cmd/req", request)
        long_ids.append(request["id"])
    for command_id in long_ids:
        ctl.wait_reply(command_id, "ack", timeout=10)
    latencies = []
    for _ in range(n):
        request = flat_request("qos_traffic_analysis", {"duration": 1, "analysis_type": "basic", "interfaces": ["lo"]})
        sent = ctl.publish(f"{base}/cmd/req", request)
        latencies.append(ctl.wait_reply(request["id"], "ack", timeout=10).at - sent)
        time.sleep(0.05)
    return latencies, long_ids


def request_rate(ctl: Controller, base: str, n: int) -> float:
    """Pipelined requests, each answered by an ack and an error (cancel of an unknown id):
    the dispatch path alone, without any command's own run time."""
    ids = [f"rate-{uuid.uuid4().hex[:10]}" for _ in range(n)]
    start = time.monotonic()
    for command_id in ids:
        ctl.client.publish(f"{base}/cmd/req", json.dumps(flat_request("qos_cancel", {"id": "nothing"}, command_id)),
                           qos=1)
    wanted = set(ids)
    ctl.wait_for(lambda m: m.body.get("id") in wanted and m.topic.endswith("/cmd/res"), timeout=120, count=n)
    return n / (time.monotonic() - start)


def bare_python_rss() -> float:
    proc = subprocess.Popen([sys.executable, "-c", "import paho.mqtt.client, time; time.sleep(30)"])
    time.sleep(2)
    try:
        return rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", help="write the JSON report here")
    parser.add_argument("--acks", type=int, default=100)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--idle-seconds", type=float, default=60)
    ns = parser.parse_args()
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="rtk-qos-bench-") as tmp:
        work = Path(tmp)
        (work / "broker").mkdir()
        broker = Broker(work / "broker")
        host = AgentHost(Netns(f"rtkbench-agent{os.getpid()}"), os.getpid() % 250 + 1)
        agent, base = start_agent(work, broker.port, host)
        try:
            ctl = Controller(broker.plain_port)
            ctl.subscribe(f"{base}/cmd/ack", f"{base}/cmd/res", f"{base}/lwt")
            ctl.wait_for(lambda m: m.topic.endswith("/lwt") and m.body.get("status") == "online", timeout=20)
            floor = broker_round_trip(ctl, ns.acks)
            acks, long_ids = ack_latency(ctl, base, ns.acks)
            report["ack_latency_ms"] = {
                "p50": round(percentile(acks, 0.5) * 1e3, 3), "p99": round(percentile(acks, 0.99) * 1e3, 3),
                "broker_round_trip_p50": round(percentile(floor, 0.5) * 1e3, 3),
                "broker_round_trip_p99": round(percentile(floor, 0.99) * 1e3, 3),
                "ratio_p50": round(percentile(acks, 0.5) / percentile(floor, 0.5), 2),
                "with_long_commands_running": 4, "samples": len(acks), "target_p99_ms": 20}
            for command_id in long_ids:
                ctl.publish(f"{base}/cmd/req", flat_request("qos_cancel", {"id": command_id}))
            time.sleep(3)  # the quick commands drain
            report["requests_per_second"] = round(request_rate(ctl, base, ns.requests), 1)
            ctl.close()
            time.sleep(2)
            cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
            time.sleep(ns.idle_seconds)
            cpu1, t1 = cpu_seconds(agent.pid), time.monotonic()
            report["idle"] = {"cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
                              "seconds": round(t1 - t0, 1), "target_cpu_percent": 0.5,
                              "rss_mb": round(rss_mb(agent.pid), 1), "bare_python_paho_rss_mb": round(bare_python_rss(), 1),
                              "target_rss_mb": 40}
        finally:
            agent.terminate()
            agent.wait(timeout=20)
            broker.stop()
            host.delete()
        imports = (work / "agent.log").read_text(errors="replace")
        seen = imported_packages(imports)
        problems = import_problems(imports)
        report["idle"]["imported"] = {name: name in seen for name in MUST_IMPORT + MUST_NOT_IMPORT}
        report["idle"]["import_check"] = problems or "ok"
    print(json.dumps(report, indent=2))
    write_report(report, ns.output)
    if problems:
        sys.exit("import check failed: " + "; ".join(problems))


if __name__ == "__main__":
    main()
