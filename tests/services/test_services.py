"""The process's shared services and the import rules between the parts."""
import ast
import json
import pathlib
import sys

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "rtk_qos"


def _imports(path: pathlib.Path) -> set[str]:
    """Modules of ours a file imports, as dotted names relative to rtk_qos (level-1 imports resolved)."""
    package = path.parent.relative_to(SRC).parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[:len(package) - node.level + 1])
            module = base + (node.module.split(".") if node.module else [])
            out.update(".".join(module + ([a.name] if not node.module else [])) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module.startswith("rtk_qos"):
            out.add(node.module.removeprefix("rtk_qos."))
    return out


def test_ctl_does_not_import_cli_and_services_know_no_agent_or_command():
    assert not {m for m in _imports(SRC / "ctl.py") if m == "cli" or m.startswith("cli.")}
    for path in (SRC / "services").glob("*.py"):
        assert not {m for m in _imports(path) if m.startswith(("agent", "commands", "cli"))}, path.name
    for path in (SRC / "collectors").glob("*.py"):
        assert not {m for m in _imports(path) if m.startswith(("agent", "commands", "services", "protocol"))}, path


def test_the_link_sampler_hands_each_tick_to_its_subscribers(netns_pair):
    # A's link to B carries a ping flood while the sampler ticks: the subscriber sees its rates.
    script = f"""
import json, subprocess, threading, time
from rtk_qos.services import LinkSampler
sampler = LinkSampler()
seen = []
unsubscribe = sampler.subscribe(lambda reading: seen.append(sorted(reading.rates)))
flood = subprocess.Popen(["ping", "-q", "-i", "0.01", "-c", "150", {netns_pair.b_addr!r}], stdout=subprocess.DEVNULL)
for _ in range(3):
    sampler.tick()
    time.sleep(0.5)
unsubscribe()
sampler.tick()
flood.wait()
rates = sampler.rates()[{netns_pair.a_if!r}]
print(json.dumps(dict(seen=seen, tx_bytes_per_s=rates[1], source=sampler.source)))
"""
    out = json.loads(netns_pair.a.run(sys.executable, "-c", script).stdout)
    # The first tick has no rates yet; the next two list every link; none after unsubscribing.
    assert out["seen"] == [[], ["lo", netns_pair.a_if], ["lo", netns_pair.a_if]]
    assert out["tx_bytes_per_s"] > 0


def test_a_subscription_to_the_continuous_probe_spans_its_segments(netns_pair):
    # Segments of 1 s instead of 5 min: the subscription sees four of them, numbered on.
    script = """
import json, threading, time
from rtk_qos.services import probing
probing.SEGMENT_S = 1.0
stop = threading.Event()
probe = probing.ContinuousProbe([], 0.2, 0.5, stop)
probe.start()
subscription, why = probe.subscribe_target(probing.GATEWAY, 5.0)
replies = []
subscription.on_reply(replies.append)
time.sleep(4.5)
report = subscription.close()
live = subscription.live_loss(2.0)
stop.set()
probe.join(2.0)
print(json.dumps(dict(why=why, address=report.address, method=report.method, seqs=list(report.seqs), sent=report.sent,
                      received=report.received, reordered=report.reordered, replies=len(replies), live=live)))
"""
    out = json.loads(netns_pair.a.run(sys.executable, "-c", script).stdout)
    assert out["why"] is None and out["address"] == netns_pair.b_addr and out["method"] == "icmp-raw"
    seqs = out["seqs"]
    assert seqs == sorted(set(seqs)) and len(seqs) >= 15  # about 5 a second, each once, across segments
    assert max(seqs) >= 15  # numbering went on past the first segment's 5 probes
    assert out["sent"] == out["received"] == out["replies"] == len(seqs) and out["reordered"] == 0
    assert out["live"] == 0.0
