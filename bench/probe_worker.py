"""Runs inside the benchmark's namespace (see probe.py): measures, prints one JSON object."""
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

from rtk_qos.collectors.probe import Prober

probes, cpu_seconds, hosts = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
target = "10.90.1.1"
interval = 0.05

# Warm the path (ARP) so neither side pays for it.
subprocess.run(["ping", "-c", "3", "-i", "0.05", "-q", target], check=True, capture_output=True)

# Accuracy: both at once, same host, same interval.
ping = subprocess.Popen(["ping", "-c", str(probes), "-i", str(interval), "-s", "56", target],
                        stdout=subprocess.PIPE, text=True)
ours = Prober([target], interval=interval, timeout=1.0, fallback=False).run(probes * interval)[target]
ping_out, _ = ping.communicate()
ping_rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", ping_out)]
our_rtts = list(ours.rtts_ms)
accuracy = {
    "probes": probes, "interval_s": interval,
    "rtk_mean_us": round(statistics.mean(our_rtts) * 1000, 2),
    "ping_mean_us": round(statistics.mean(ping_rtts) * 1000, 2),
    "rtk_median_us": round(statistics.median(our_rtts) * 1000, 2),
    "ping_median_us": round(statistics.median(ping_rtts) * 1000, 2),
    "mean_difference_us": round((statistics.mean(our_rtts) - statistics.mean(ping_rtts)) * 1000, 2),
    "rtk_received": len(our_rtts), "ping_received": len(ping_rtts), "target_abs_difference_us": 50,
    "method": ours.method,
}

# CPU: 50 hosts at 10 probes/s for cpu_seconds.
addresses = [f"10.90.1.{i + 1}" for i in range(hosts)]
for address in addresses:  # resolve every neighbour first
    subprocess.run(["ping", "-c", "1", "-W", "1", "-q", address], capture_output=True)
t0, c0 = time.monotonic(), os.times()
reports = Prober(addresses, interval=0.1, timeout=1.0, fallback=False).run(cpu_seconds)
t1, c1 = time.monotonic(), os.times()
ours_cpu = (c1.user - c0.user) + (c1.system - c0.system)
count = int(cpu_seconds / 0.1)
pings = [subprocess.Popen(["ping", "-c", str(count), "-i", "0.1", "-q", a], stdout=subprocess.DEVNULL)
         for a in addresses]
for p in pings:
    p.wait()
c2 = os.times()
ping_cpu = (c2.children_user - c1.children_user) + (c2.children_system - c1.children_system)
sent = sum(r.sent for r in reports.values())
received = sum(r.received for r in reports.values())
cpu = {
    "hosts": hosts, "probes_per_second_per_host": 10, "seconds": round(t1 - t0, 1),
    "sent": sent, "received": received,
    "rtk_cpu_percent_of_one_core": round(100 * ours_cpu / (t1 - t0), 2),
    "ping_processes_cpu_percent_of_one_core": round(100 * ping_cpu / (t1 - t0), 2),
    "rtk_cpu_us_per_probe": round(1e6 * ours_cpu / max(sent, 1), 1),
}
print(json.dumps({"rtt_accuracy": accuracy, "cpu_50_hosts": cpu}))
