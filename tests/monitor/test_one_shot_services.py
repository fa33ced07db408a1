"""A one-shot `rtk-qos run` starts the process's own sampler and gateway probe, and the performance
monitor subscribes to them: the gateway's figures come from the shared probe, the uplink's
throughput from the shared sampler, and the gateway is probed once a second, not twice."""
import json
import re
import sys

DURATION = 60  # the protocol's minimum


def test_a_one_shot_monitor_uses_the_processs_own_services(netns_pair):
    a = netns_pair.a
    a.run("nft", "-f", "-", input=(
        "table inet rtkq_count { chain out { type filter hook output priority 0; "
        f"ip daddr {netns_pair.b_addr} icmp type echo-request counter; }}; }}"))
    run = a.run(sys.executable, "-m", "rtk_qos", "run", "qos_performance_monitor", "--monitor-duration",
                str(DURATION), "--metrics", "latency", "packet_loss", "throughput", "--target-hosts",
                netns_pair.b_addr, "--compact", timeout=DURATION + 30)
    body = json.loads(run.stdout)["result"]
    sent = int(re.search(r"counter packets (\d+)",
                         a.run("nft", "list", "table", "inet", "rtkq_count").stdout).group(1))
    [host] = body["hosts"]
    assert host["address"] == netns_pair.b_addr and host["method"] == "icmp-raw"
    assert DURATION - 2 <= host["sent"] <= DURATION + 1 and host["received"] == host["sent"]
    assert body["performance_metrics"]["packet_loss"]["total_percent"] == 0
    throughput = body["performance_metrics"]["throughput"]
    assert throughput["interface"] == netns_pair.a_if and DURATION - 2 <= throughput["samples"] <= DURATION + 1
    # One probe a second from the process's continuous probe, none of the monitor's own.
    assert DURATION - 1 <= sent <= DURATION + 8, sent
