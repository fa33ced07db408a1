"""telemetry/qos batches: an exact 1 s grid, nulls for seconds without a value, early breaks."""
import math

from rtk_qos.agent.qos_telemetry import QosBatch

RATES = {"eth0": {"rx_mbps": 1.0, "tx_mbps": 2.0, "rx_pps": 5.0}}


def probes(latency):
    return {"gateway": {"latency_ms": latency, "jitter_ms": math.nan, "loss_pct": 0.0}}


def test_a_batch_leaves_every_period_with_one_value_per_second():
    batch = QosBatch(period_s=3, step_s=1)
    out = [batch.add(10_000 + 1000 * i, RATES, probes(1.5 + i)) for i in range(3)]
    assert out[:2] == [[], []]
    (payload,) = out[2]
    assert payload["start_ms"] == 10_000 and payload["step_ms"] == 1000
    assert payload["series"]["probe.gateway.latency_ms"] == [1.5, 2.5, 3.5]
    assert payload["series"]["probe.gateway.jitter_ms"] == [None, None, None]
    assert payload["series"]["eth0.tx_mbps"] == [2.0] * 3 and "eth0.rx_pps" not in payload["series"]


def test_a_late_tick_or_a_new_series_ends_the_batch_early():
    batch = QosBatch(period_s=10, step_s=1)
    batch.add(0, RATES, probes(1.0))
    (early,) = batch.add(2600, RATES, probes(2.0))  # 1.6 s late: off the grid
    assert early["start_ms"] == 0 and early["series"]["probe.gateway.latency_ms"] == [1.0]
    (changed,) = batch.add(3600, {}, probes(3.0))  # eth0 went away
    assert changed["start_ms"] == 2600 and len(changed["series"]) == 5
    assert batch.take()["series"] == {"probe.gateway.latency_ms": [3.0], "probe.gateway.jitter_ms": [None],
                                      "probe.gateway.loss_pct": [0.0]}
