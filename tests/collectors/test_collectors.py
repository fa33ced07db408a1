"""Collectors against a live kernel, inside namespaces the tests build."""
import json
import subprocess
import sys

import pytest

RUN = """
import json, sys
from rtk_qos.collectors import flows, links, probe, snmp
print(json.dumps(eval(sys.argv[1])))
"""


def call(ns, expression, timeout=60):
    return json.loads(ns.run(sys.executable, "-c", RUN, expression, timeout=timeout).stdout)


def test_links_routes_and_speed(netns_pair):
    ns = netns_pair.a
    info = call(ns, f"links.link({netns_pair.a_if!r}).__dict__")
    assert info["kind"] == "virtual" and info["up"] and not info["loopback"] and info["mac"]
    assert info["speed_mbps"] is None and "nominal" in info["speed_reason"]  # veth claims 10000
    assert call(ns, "links.link('lo').__dict__")["loopback"]
    assert call(ns, "links.link('nosuch0')") is None
    gateway = call(ns, "links.default_gateway(4).__dict__")
    assert gateway == {"family": 4, "gateway": netns_pair.b_addr, "ifname": netns_pair.a_if, "metric": 0}
    assert call(ns, "links.primary_interface().name") == netns_pair.a_if
    assert call(netns_pair.b, "links.default_gateway(4)") is None  # B has no default route
    ns.run("ip", "-6", "addr", "add", "fd00:77::1/64", "dev", netns_pair.a_if, "nodad")
    ns.run("ip", "-6", "route", "add", "default", "via", "fd00:77::2", "metric", "5")
    assert call(ns, "links.default_gateway(6).gateway") == "fd00:77::2"
    assert call(ns, f"links.active_interfaces({{'lo': 10, {netns_pair.a_if!r}: 5, 'gone': 9}})") == [netns_pair.a_if]


def test_echo_probe_counts_loss_bursts_from_replies_switched_off(netns_pair):
    # B answers the first probes, then ignores echo for a stretch, then answers again.
    script = f"""
import json, subprocess
from rtk_qos.collectors.probe import Prober
def toggle(value):
    subprocess.run(["ip", "netns", "exec", {netns_pair.b.name!r}, "sysctl", "-qw",
                    f"net.ipv4.icmp_echo_ignore_all={{value}}"], check=True)
def on_reply(_address, seq, rtt):
    if seq == 3:
        toggle(1)
        import threading
        threading.Timer(0.45, toggle, args=(0,)).start()
address = {netns_pair.b_addr!r}
report = Prober([address], interval=0.1, timeout=0.5, fallback=False).run(2.0, on_reply=on_reply)[address]
print(json.dumps(dict(sent=report.sent, received=report.received, lost=report.lost,
                      bursts=report.loss_bursts, rtts=list(report.rtts_ms), method=report.method,
                      dup=report.duplicates, reordered=report.reordered, pct=report.loss_percent)))
"""
    out = json.loads(netns_pair.a.run(sys.executable, "-c", script).stdout)
    assert out["sent"] == 20 and out["method"] == "icmp-raw"
    assert out["received"] + out["lost"] == 20
    # About 4 probes fall in the 0.45 s without replies: one burst, nothing else lost.
    assert len(out["bursts"]) == 1 and 3 <= out["bursts"][0] <= 6, out
    assert out["pct"] == pytest.approx(100 * out["lost"] / 20)
    assert out["dup"] == 0 and out["reordered"] == 0
    assert all(0 < rtt < 20 for rtt in out["rtts"])


def test_gateway_probe_without_a_default_route_says_why(netns_pair):
    assert call(netns_pair.b, "probe.gateway_address()") == [None, "no default gateway to probe"]


def test_socket_flows_see_a_tcp_connection_and_its_rtt(netns_pair):
    server = netns_pair.b.popen(sys.executable, "-c", """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7001)); s.listen()
c, _ = s.accept()
while c.recv(65536):
    pass
""")
    try:
        script = f"""
import json, socket, time
from rtk_qos.collectors import flows
c = socket.create_connection(({netns_pair.b_addr!r}, 7001), timeout=5)
for _ in range(20):
    c.sendall(b"x" * 1000); time.sleep(0.01)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(({netns_pair.b_addr!r}, 9))
loop = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); loop.connect(("127.0.0.1", 9))
print(json.dumps([flows.socket_flows(), flows.flow_count()]))
"""
        sockets, count = json.loads(netns_pair.a.run(sys.executable, "-c", script).stdout)
    finally:
        server.kill()
        server.wait()
    assert sockets["tcp"] == 1 and sockets["udp"] == 1 and sockets["source"] == "sock_diag"
    assert sockets["tcp_rtt_ms"]["count"] == 1 and 0 < sockets["tcp_rtt_ms"]["mean"] < 50
    assert count[0] == 2 and count[1].startswith("sock_diag")


IPV6_BACKGROUND = 6
UDP_BURST = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])):
    s.sendto(b"y" * 200, (sys.argv[1], int(sys.argv[2])))
"""


def test_protocol_counters_split_local_and_forwarded_traffic(netns_chain):
    chain = netns_chain
    sink = chain.c.popen(sys.executable, "-c", "import socket, time; s = socket.socket(2, 2); "
                         "s.bind(('0.0.0.0', 5005)); print(flush=True); time.sleep(60)", stdout=subprocess.PIPE)
    sink.stdout.readline()  # bound: no port-unreachable replies to skew the count
    # Conntrack only tracks where a netfilter hook asks for it, as NAT does on a router.
    chain.b.run("nft", "-f", "-", input="table inet rtkq { chain track { type filter hook forward priority 0; "
                                        "ct state new,established counter; }; }")
    chain.b.sysctl("net.netfilter.nf_conntrack_acct", "1")
    before = call(chain.b, "snmp.read_snmp()")
    chain.a.run(sys.executable, "-c", UDP_BURST, chain.c_addr, "5005", "300")
    chain.a.run("ping", "-c", "20", "-i", "0.01", "-q", chain.c_addr)
    chain.b.run("ping", "-c", "10", "-i", "0.01", "-q", chain.a_addr)
    after = call(chain.b, "snmp.read_snmp()")
    sink.kill()
    sink.wait()
    dist = call(chain.b, f"snmp.protocol_distribution({before!r}, {after!r})")
    # B forwarded 300 UDP + 20 requests + 20 replies, and itself pinged A 10 times.
    assert dist["forwarded_packets"] == 340
    assert dist["forwarded_by_protocol"] == {"tcp": 0, "udp": 300, "icmp": 40, "other": 0}
    # B's own IPv6 housekeeping (MLD reports, router solicitations) may add a few ICMPv6 messages.
    assert 60 <= dist["packets"]["icmp"] <= 60 + IPV6_BACKGROUND and dist["packets"]["udp"] == 300
    assert 20 <= dist["local_packets"] <= 20 + IPV6_BACKGROUND
    assert dist["udp"] == pytest.approx(100 * 300 / dist["packets"]["total"], abs=0.01) and "conntrack" in dist["source"]


def test_forwarded_traffic_without_conntrack_accounting_says_why(netns_chain):
    chain = netns_chain
    before = call(chain.b, "snmp.read_snmp()")
    chain.a.run("ping", "-c", "5", "-i", "0.01", "-q", chain.c_addr)
    after = call(chain.b, "snmp.read_snmp()")
    dist = call(chain.b, f"snmp.protocol_distribution({before!r}, {after!r})")
    assert dist["forwarded_packets"] == 10 and dist["forwarded_by_protocol"] is None
    assert "nf_conntrack_acct" in dist["unavailable"]["forwarded_split"]


def test_tcp_quality_reports_rates_or_reasons():
    from rtk_qos.collectors import snmp
    quiet = snmp.tcp_quality({}, {"TcpExt.TCPOFOQueue": 0})
    assert quiet["retransmit_percent"] is None and "sent no TCP" in quiet["unavailable"]["retransmit_percent"]
    busy = snmp.tcp_quality({"Tcp.OutSegs": 100, "Tcp.InSegs": 50, "Tcp.RetransSegs": 1, "TcpExt.TCPOFOQueue": 2},
                            {"Tcp.OutSegs": 300, "Tcp.InSegs": 150, "Tcp.RetransSegs": 5, "TcpExt.TCPOFOQueue": 3})
    assert busy["retransmit_percent"] == 2.0 and busy["out_of_order_percent"] == 1.0


def test_prober_covers_ipv6_and_falls_back_to_tcp_and_udp(netns_pair):
    a, b = netns_pair.a, netns_pair.b
    a.run("ip", "-6", "addr", "add", "fd00:78::1/64", "dev", netns_pair.a_if, "nodad")
    b.run("ip", "-6", "addr", "add", "fd00:78::2/64", "dev", netns_pair.b_if, "nodad")
    b.run("ip", "addr", "add", "10.76.0.2/24", "dev", netns_pair.b_if)
    a.run("ip", "addr", "add", "10.76.0.1/24", "dev", netns_pair.a_if)
    # B drops ICMP echo for 10.76.0.2 only, and answers UDP port 7 with ICMP port unreachable;
    # its TCP port 80 is filtered, so the prober must get to UDP. Linux limits port-unreachable
    # messages (1 per second per peer by default), which would read as loss at 5 probes/s.
    b.sysctl("net.ipv4.icmp_ratelimit", "0")
    b.run("nft", "-f", "-", input="table inet rtkq { chain in { type filter hook input priority 0; "
          "ip daddr 10.76.0.2 icmp type echo-request drop; ip daddr 10.76.0.2 tcp dport 80 drop; }; }")
    script = f"""
import json
from rtk_qos.collectors.probe import Prober
reports = Prober(["fd00:78::2", "10.76.0.2"], interval=0.2, timeout=0.5).run(4.0)
print(json.dumps({{a: dict(method=r.method, sent=r.sent, received=r.received, tried=r.tried,
                          rtts=list(r.rtts_ms)) for a, r in reports.items()}}))
"""
    out = json.loads(a.run(sys.executable, "-c", script).stdout)
    v6 = out["fd00:78::2"]
    assert v6["method"] == "icmp-raw" and v6["sent"] == 20 and v6["received"] == 20 and v6["tried"] == []
    assert all(0 < rtt < 20 for rtt in v6["rtts"])
    udp = out["10.76.0.2"]
    assert udp["method"] == "udp:7" and udp["tried"] == ["icmp-raw", "tcp-connect:80"]
    assert udp["received"] == udp["sent"] > 0


def test_names_resolve_once_and_failures_are_per_host(netns_pair):
    out = call(netns_pair.a, "probe.resolve_hosts(['127.0.0.1', 'localhost', 'fd00::5', 'bad..name'], timeout=5)")
    assert out["127.0.0.1"] == ["127.0.0.1", None] and out["localhost"][0] == "127.0.0.1"
    assert out["fd00::5"] == ["fd00::5", None]
    assert out["bad..name"][0] is None and out["bad..name"][1].startswith("cannot resolve 'bad..name'")


def test_prober_tells_loss_duplicates_and_reordering_apart(netns_pair):
    import pathlib
    reflector = pathlib.Path(__file__).resolve().parents[1] / "reflector.py"
    netns_pair.b.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
    schedule = {"base_ms": 5, "slow": [[5, 5, 250]], "drop": [10, 11], "duplicate": [8]}
    proc = netns_pair.b.popen(sys.executable, str(reflector), json.dumps(schedule), stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        script = f"""
import json
from rtk_qos.collectors.probe import Prober
r = Prober([{netns_pair.b_addr!r}], interval=0.1, timeout=1.0).run(2.0)[{netns_pair.b_addr!r}]
print(json.dumps(dict(sent=r.sent, received=r.received, lost=r.lost_seqs, dup=r.duplicates, reordered=r.reordered,
                      seqs=list(r.seqs), rtts=list(r.rtts_ms))))
"""
        out = json.loads(netns_pair.a.run(sys.executable, "-c", script).stdout)
    finally:
        proc.kill()
        proc.wait()
    assert out["sent"] == 20 and out["received"] == 18 and out["lost"] == [10, 11]
    assert out["dup"] == 1 and out["reordered"] == 1
    # Seq 5 came back 250 ms late, after 6 and 7: reordered, and its RTT says so.
    assert out["seqs"].index(5) > out["seqs"].index(7)
    assert 250 <= out["rtts"][out["seqs"].index(5)] < 270
    assert all(5 <= rtt < 15 for seq, rtt in zip(out["seqs"], out["rtts"]) if seq != 5)


def test_two_probers_on_one_host_at_once_count_only_their_own_replies(netns_pair):
    # Raw ICMP sockets (root, ping_group_range excluding us) see every echo reply: each prober
    # must keep to its own, with exact counts, when both probe the same host in one process.
    netns_pair.a.sysctl("net.ipv4.ping_group_range", "1 0")
    script = f"""
import json, threading
from rtk_qos.collectors.probe import Prober
reports, probers = {{}}, [Prober([{netns_pair.b_addr!r}], interval=0.05, timeout=1.0) for _ in range(3)]
def run(i):
    reports[i] = probers[i].run(2.0)[{netns_pair.b_addr!r}]
threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps([dict(method=r.method, sent=r.sent, received=r.received, dup=r.duplicates, lost=r.lost,
                       seqs=sorted(r.seqs)) for r in reports.values()] + [len({{p.ident for p in probers}})]))
"""
    *reports, distinct = json.loads(netns_pair.a.run(sys.executable, "-c", script).stdout)
    assert [(r["method"], r["sent"], r["received"], r["dup"], r["lost"]) for r in reports] == [
        ("icmp-raw", 40, 40, 0, 0)] * 3
    assert all(r["seqs"] == list(range(40)) for r in reports)
    assert distinct == 3


def test_a_reply_with_our_identifier_but_not_our_payload_is_not_ours(netns_pair):
    import pathlib
    reflector = pathlib.Path(__file__).resolve().parents[1] / "reflector.py"
    netns_pair.b.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
    netns_pair.a.sysctl("net.ipv4.ping_group_range", "1 0")
    # The forged replies arrive at once, the real ones 20 ms later: taking a forged one would
    # give an RTT under 20 ms and count the real one as a duplicate.
    schedule = {"base_ms": 20, "foreign": [2, 3, 4, 7]}
    proc = netns_pair.b.popen(sys.executable, str(reflector), json.dumps(schedule), stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        script = f"""
import json
from rtk_qos.collectors.probe import Prober
r = Prober([{netns_pair.b_addr!r}], interval=0.1, timeout=1.0).run(1.0)[{netns_pair.b_addr!r}]
print(json.dumps(dict(sent=r.sent, received=r.received, dup=r.duplicates, rtts=list(r.rtts_ms))))
"""
        out = json.loads(netns_pair.a.run(sys.executable, "-c", script).stdout)
    finally:
        proc.kill()
        proc.wait()
    assert (out["sent"], out["received"], out["dup"]) == (10, 10, 0)
    assert all(rtt >= 20 for rtt in out["rtts"])


def test_names_idna_cannot_encode_fail_alone(netns_pair):
    out = call(netns_pair.a, f"probe.resolve_hosts(['{'a' * 64}.example', '127.0.0.1'], timeout=5)")
    assert out["127.0.0.1"] == ["127.0.0.1", None]
    address, why = out["a" * 64 + ".example"]
    assert address is None and why.startswith(f"cannot resolve '{'a' * 64}.example': ") and "label" in why


def test_a_hung_resolver_holds_a_bounded_number_of_threads(netns_pair):
    import pathlib
    # A name server that takes queries and never answers, in A's namespace.
    etc = pathlib.Path("/etc/netns") / netns_pair.a.name
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    try:
        script = """
import json, socket, threading
from rtk_qos.collectors import probe
silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); silent.bind(("127.0.0.1", 53))
before = threading.active_count()
first = probe.resolve_hosts([f"host{i}.hang.test" for i in range(40)], timeout=1)
during = threading.active_count() - before
second = probe.resolve_hosts(["another.hang.test"], timeout=1)
print(json.dumps(dict(first=sorted({why for _, why in first.values()}), during=during,
                      second=second["another.hang.test"], limit=probe.RESOLVER_THREADS)))
"""
        out = json.loads(netns_pair.a.run(sys.executable, "-c", script).stdout)
    finally:
        for name in ("resolv.conf", "hosts"):
            (etc / name).unlink()
        etc.rmdir()
    assert out["limit"] == 8 and out["during"] == 8
    assert len(out["first"]) == 40 and all(why.endswith("no answer within 1 s") for why in out["first"])
    assert out["second"] == [None, "cannot resolve 'another.hang.test': every one of the 8 resolver threads "
                                   "is still waiting for an earlier lookup"]


def test_collectors_share_one_shape_and_read_in_a_namespace(netns_pair):
    listing = json.loads(netns_pair.a.run(sys.executable, "-m", "rtk_qos", "collect", "--list").stdout)
    assert sorted(listing) == ["flows", "links", "probe", "snmp"]
    assert all(c["cost"] and c["summary"] for c in listing.values())
    assert [name for name, c in listing.items() if not c["enabled"]] == ["probe"]  # it sends packets
    default = json.loads(netns_pair.a.run(sys.executable, "-m", "rtk_qos", "collect").stdout)
    assert sorted(default) == ["flows", "links", "snmp"]
    out = json.loads(netns_pair.a.run(sys.executable, "-m", "rtk_qos", "collect", "links", "probe").stdout)
    assert sorted(out) == ["links", "probe"]
    assert {link["name"] for link in out["links"]["links"]} == {"lo", netns_pair.a_if}
    assert out["links"]["default_routes"] == [{"family": 4, "gateway": netns_pair.b_addr, "ifname": netns_pair.a_if,
                                               "metric": 0}]
    probe = out["probe"]
    assert (probe["gateway"], probe["sent"], probe["received"], probe["loss_percent"]) == (netns_pair.b_addr, 3, 3, 0)
    assert default["snmp"]["counters"]["Ip.InReceives"] >= 0
    assert default["flows"]["sockets"]["source"] == "sock_diag"
    wrong = netns_pair.a.run(sys.executable, "-m", "rtk_qos", "collect", "nope", check=False)
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "error: no collector named 'nope'; known: flows, links, probe, snmp"
