"""qos_traffic_analysis end to end: the real CLI in a namespace, real packets, checked totals.

Each test builds two hosts (namespaces A and B joined by a veth pair; B is A's
default gateway), runs `rtk-qos run qos_traffic_analysis` inside A, and sends a
known amount of UDP from A to a sink in B while it runs.
"""
import json
import signal
import subprocess
import sys
import time

import pytest

# A datagram of PAYLOAD bytes is PAYLOAD + 8 (UDP) + 20 (IPv4) + 14 (Ethernet) bytes on a veth.
PAYLOAD = 1000
FRAME = PAYLOAD + 8 + 20 + 14
SINK_PORT = 9999
# Background frames that may cross the link during a run (ARP, IPv6 neighbour and router
# solicitations, gateway probes): bounds the slack on exact totals.
BACKGROUND_FRAMES = 40
BACKGROUND_BYTES = BACKGROUND_FRAMES * 200

SENDER = """
import socket, sys, time
host, port, count, rate, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"x" * size
start = time.monotonic()
for i in range(count):
    delay = start + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    s.sendto(payload, (host, port))
"""

SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    s.recv(65536)
"""


@pytest.fixture
def hosts(netns_pair):
    sink = netns_pair.b.popen(sys.executable, "-c", SINK, str(SINK_PORT))
    yield netns_pair
    sink.kill()
    sink.wait()


def send(pair, count, rate):
    pair.a.run(sys.executable, "-c", SENDER, pair.b_addr, str(SINK_PORT), str(count), str(rate),
               str(PAYLOAD), timeout=60)


class Analysis:
    """The CLI running in a namespace; progress lines are read as they come."""

    def __init__(self, ns, *flags):
        self.proc = ns.popen(sys.executable, "-m", "rtk_qos", "run", "qos_traffic_analysis", "--compact",
                             *flags, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.progress = []

    def wait_for_sample(self, number, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            message = json.loads(line)
            self.progress.append(message)
            if message.get("stage") == "sample" and message["sample"] >= number:
                return message
        raise AssertionError(f"no progress sample {number}; got {self.progress}")

    def result(self, timeout=60):
        out, err = self.proc.communicate(timeout=timeout)
        self.progress += [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert out, f"no result printed; stderr: {err}"
        return self.proc.returncode, json.loads(out)


def stats_of(result, name):
    return next(s for s in result["result"]["interface_stats"] if s["interface"] == name)


@pytest.mark.guest(host=True)  # the live sampler on the guest rig's kernel too (tests/guest)
def test_known_udp_traffic_is_counted_exactly_and_rated_from_elapsed_time(hosts):
    count, rate = 1500, 1000.0
    run = Analysis(hosts.a, "--duration", "5", "--interfaces", hosts.a_if, "--analysis-type", "realtime")
    run.wait_for_sample(1)
    send(hosts, count, rate)
    code, message = run.result()
    assert code == 0 and message["status"] == "completed", message
    result = message["result"]
    iface = stats_of(message, hosts.a_if)
    # Totals: every datagram, and nothing but a little background.
    assert count <= iface["tx_packets"] <= count + BACKGROUND_FRAMES
    assert count * FRAME <= iface["tx_bytes"] <= count * FRAME + BACKGROUND_BYTES
    assert iface["rx_bytes"] <= BACKGROUND_BYTES
    summary = result["analysis_summary"]
    assert summary["total_bytes"] == iface["rx_bytes"] + iface["tx_bytes"]
    assert summary["samples"] == 5 and 4.5 <= summary["analysis_duration"] <= 6.5
    # The average divides by the measured duration (1 % covers the 3-decimal rounding).
    expected_avg = iface["tx_bytes"] * 8 / summary["analysis_duration"] / 1e6
    assert iface["avg_tx_mbps"] == pytest.approx(expected_avg, rel=0.01, abs=0.002)
    # The sender paces 1000 frames/s = 8.336 Mbit/s; a busy 2-core machine may bunch
    # sends across a sample boundary, so the peak sample is allowed 30 % either way.
    assert iface["peak_tx_mbps"] == pytest.approx(rate * FRAME * 8 / 1e6, rel=0.3)
    assert iface["peak_tx_mbps"] >= iface["avg_tx_mbps"]
    assert iface["state"] == "present" and iface["counter_resets"] == 0
    # Virtual links have no speed: utilisation is null and says why.
    assert iface["utilization_percent"] is None and iface["unavailable"]["utilization_percent"]
    samples = [p for p in run.progress if p.get("stage") == "sample"]
    assert [p["sample"] for p in samples] == [1, 2, 3, 4, 5]
    assert max(p["interfaces"][hosts.a_if]["tx_mbps"] for p in samples) == pytest.approx(
        iface["peak_tx_mbps"], rel=0.01)
    assert set(result) >= {"analysis_summary", "interface_stats", "performance_grade", "qos_metrics"}


def test_comprehensive_run_measures_protocols_patterns_and_the_gateway(hosts):
    run = Analysis(hosts.a, "--duration", "8", "--analysis-type", "realtime")
    run.wait_for_sample(2)
    send(hosts, 800, 2000.0)
    run.wait_for_sample(5)
    send(hosts, 800, 2000.0)
    code, message = run.result()
    assert code == 0, message
    result = message["result"]
    assert result["analysis_summary"]["interfaces"] == [hosts.a_if]  # auto-detected: up, not lo, active
    qos = result["qos_metrics"]
    assert qos["latency_target"] == hosts.b_addr
    assert qos["avg_latency_ms"] is not None and 0 < qos["avg_latency_ms"] < 50
    assert qos["packet_loss_percent"] == 0 and qos["probes_sent"] >= 6
    assert qos["jitter_ms"] is not None and qos["jitter_ms"] >= 0
    dist = result["protocol_distribution"]
    assert dist["udp"] > 80, dist
    patterns = result["traffic_patterns"]
    assert patterns["bursts"] == 2, patterns
    assert patterns["burst_frequency"] == pytest.approx(2 / (8 / 60), rel=0.01)
    assert patterns["avg_packet_size"] == pytest.approx(FRAME, rel=0.1)
    assert isinstance(patterns["flow_count"], int) and patterns["flow_count_source"]
    assert 1 <= len(patterns["peak_periods"]) <= 5 and patterns["peak_hours"]
    assert result["performance_grade"] in "ABCDF"


def test_an_interface_that_does_not_exist_is_named_in_the_error(netns_pair):
    proc = netns_pair.a.run(sys.executable, "-m", "rtk_qos", "run", "qos_traffic_analysis", "--compact",
                            "--duration", "1", "--interfaces", netns_pair.a_if, "nosuch0", check=False)
    assert proc.returncode == 1
    message = json.loads(proc.stdout)  # the flat cmd.error/1.0 the agent would publish
    assert message["schema"] == "cmd.error/1.0" and message["status"] == "failed"
    assert message["error_code"] == 1006
    assert "'nosuch0'" in message["error"] and netns_pair.a_if in message["error_details"]


def test_an_interface_that_vanishes_mid_run_is_reported_not_a_crash(hosts):
    hosts.a.run("ip", "link", "add", "gone0", "type", "veth", "peer", "name", "gone1")
    hosts.a.run("ip", "link", "set", "gone0", "up")
    run = Analysis(hosts.a, "--duration", "4", "--interfaces", hosts.a_if, "gone0", "--analysis-type", "realtime")
    run.wait_for_sample(1)
    hosts.a.run("ip", "link", "del", "gone0")
    code, message = run.result()
    assert code == 0 and message["status"] == "completed"
    gone = stats_of(message, "gone0")
    assert gone["state"] == "vanished" and gone["vanished_at_ms"]
    assert any("gone0 vanished" in w for w in message["result"]["warnings"])
    assert stats_of(message, hosts.a_if)["state"] == "present"


def test_ctrl_c_returns_what_was_measured_as_cancelled(hosts):
    run = Analysis(hosts.a, "--duration", "60", "--interfaces", hosts.a_if, "--analysis-type", "realtime")
    run.wait_for_sample(2)
    run.proc.send_signal(signal.SIGINT)
    code, message = run.result(timeout=15)
    assert code == 0 and message["status"] == "cancelled"
    assert 2 <= message["result"]["analysis_summary"]["samples"] < 60
    assert any("stopped early (cancelled)" in w for w in message["result"]["warnings"])


@pytest.mark.parametrize("flags, expected", [
    (["--duration", "0"], "args.duration: 0 is below the minimum 1"),
    (["--duration", "3601"], "args.duration: 3601 is above the maximum 3600"),
    (["--args", '{"duration": 5, "bogus": 1}'], "args.bogus: unknown argument"),
    (["--args", '{"duration": "5"}'], "args.duration: expected an integer, got string '5'"),
    (["--args", '{"duration": 5, "interfaces": ["a/b"]}'], "args.interfaces[0]: 'a/b' is not a network interface name"),
    (["--args", "[1]"], "--args must be a JSON object"),
    (["--args", "{"], "--args is not valid JSON"),
])
def test_bad_arguments_are_refused_with_the_field_named(flags, expected):
    proc = subprocess.run([sys.executable, "-m", "rtk_qos", "run", "qos_traffic_analysis", *flags],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr


def test_sampling_interval_above_duration_is_refused():
    proc = subprocess.run([sys.executable, "-m", "rtk_qos", "run", "qos_traffic_analysis", "--compact",
                           "--duration", "2", "--sampling-interval", "5"], capture_output=True, text=True, timeout=30)
    message = json.loads(proc.stdout)
    assert message["error"].endswith("args.sampling_interval: 5 is above args.duration 2")
