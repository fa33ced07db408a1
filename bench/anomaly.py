"""Anomaly detection costs, each beside a reference measured in the same run.

  streaming detector (native/detect.c) per sample, against the native rolling
  z-score update (the cheapest per-sample statistic the core has) and NAB's
  windowed Gaussian in Python (bench/nab.py);
  qos_anomaly_detection over 7 days of 1-minute history with 4 metric series
  (detection window 1 day): the statistical method, the Isolation Forest with
  the native backend and with scikit-learn's (fit + score, as the command runs them).

Targets (reported, never asserted): streaming detector < 2 us per sample;
statistical < 10 ms; native forest >= 10x faster than scikit-learn at equal quality
(the quality comparison is bench/iforest.py's). Writes a JSON report with --output.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time

from rtk_qos import _core
from rtk_qos.commands import anomaly_detection as command
from rtk_qos.agent.recorder import DETECTOR_SETTINGS
from rtk_qos.commands.base import Clock, Context
from rtk_qos.commands.runner import execute, prepare
from rtk_qos.history import HistoryStore

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import labelled  # noqa: E402
import nab  # noqa: E402
from report import write as write_report  # noqa: E402

DAY_MIN = 1440


def best_of(fn, repeat=7) -> float:
    """Best wall time of `repeat` runs, seconds: the least disturbed by a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def streaming(samples: int = 200_000) -> dict:
    rng = random.Random(1)
    _times, values, _ = labelled.series(rng, ("spike",), False, days=samples // DAY_MIN + 1)
    values = values[:samples]
    times = [60.0 * i for i in range(len(values))]
    detector = best_of(lambda: _core.Detector().run(times, values), 3) / len(values)
    # The agent's settings on the same samples: 139 days of them, so that, as in an agent that
    # has run two weeks, all views score (the time of day from day 2, of week from week 2).
    agent = best_of(lambda: _core.Detector(**DETECTOR_SETTINGS).run(times, values), 3) / len(values)

    def rolling():
        r = _core.Rolling(512)
        for v in values:
            r.push(v)
    # The rolling loop pays a Python call per sample: subtract an empty loop of the same shape.
    empty = best_of(lambda: [None for _v in values], 3)
    rolling_s = (best_of(rolling, 3) - empty) / len(values)
    n_gauss = 20_000
    gauss = nab.WindowedGaussian()
    gauss_s = best_of(lambda: [gauss.update(t, v) for t, v in zip(times[:n_gauss], values[:n_gauss])], 1) / n_gauss
    return {"detector_us": detector * 1e6, "agent_detector_us": agent * 1e6, "rolling_zscore_us": rolling_s * 1e6, "windowed_gaussian_python_us":
            gauss_s * 1e6, "detector_memory_bytes": _core.Detector.memory_bytes(),
            "agent_detector_memory_bytes": _core.Detector.memory_bytes(**DETECTOR_SETTINGS)}


def week_of_history(seed: int = 7) -> tuple[HistoryStore, int]:
    """8 days of per-minute rx/tx throughput, error rate and gateway latency ending now."""
    rng = random.Random(seed)
    days = 8
    _t, rx, _ = labelled.series(rng, ("level_shift",), False, days=days)
    _t, tx, _ = labelled.series(rng, ("spike",), True, days=days)
    now = int(time.time()) // 60 * 60
    store = HistoryStore()
    for k in range(days * DAY_MIN):
        t = now - (days * DAY_MIN - 1 - k) * 60
        store.push("eth0.rx_mbps", t, rx[k])
        store.push("eth0.tx_mbps", t, tx[k])
        store.push("eth0.error_rate", t, 0.01 * rng.random() if rng.random() < 0.3 else 0.0)
        store.push("probe.gateway.latency_ms", t, 2 + rng.expovariate(2) + rx[k] / 400)
    return store, now


COMMAND_ARGS = {"detection_window": 86400, "baseline_period": 7 * 86400,
                "metrics": ["throughput", "error_rate", "latency"]}


def detection(store: HistoryStore, now: int) -> dict:
    last = now // 60
    split = last - DAY_MIN + 1
    first = split - 7 * DAY_MIN
    metrics = {"eth0.rx_mbps": "throughput", "eth0.tx_mbps": "throughput", "eth0.error_rate": "error_rate",
               "probe.gateway.latency_ms": "latency"}

    def read():
        return [command._read(store, name, metric, first, split, last) for name, metric in metrics.items()]
    series = read()
    out = {"read_ms": best_of(read) * 1e3,
           "statistical_ms": best_of(lambda: [command.statistical(s, 2.5) for s in series]) * 1e3,
           "forest_native_ms": best_of(lambda: command.ml_based(series, 0.05, "native"), 5) * 1e3}
    try:
        t0 = time.perf_counter()
        import sklearn.ensemble  # noqa: F401
        out["sklearn_import_ms"] = (time.perf_counter() - t0) * 1e3
        out["forest_sklearn_ms"] = best_of(lambda: command.ml_based(series, 0.05, "sklearn"), 5) * 1e3
        out["sklearn_over_native"] = out["forest_sklearn_ms"] / out["forest_native_ms"]
    except ImportError:
        out["forest_sklearn_ms"] = None
    out["rows"] = len(series[0].mean)
    out["series"] = len(series)
    for method in ("statistical", "ml_based"):
        out[f"command_{method}_ms"] = best_of(lambda: whole_command(store, now, [method]), 5) * 1e3
    out["command_ms"] = best_of(lambda: whole_command(store, now, ["statistical", "ml_based"]), 5) * 1e3
    return out


def whole_command(store: HistoryStore, now: int, methods: list[str]) -> dict:
    """The command as the agent runs it (validation, reading, both methods, episodes, result)."""
    class Now(Clock):
        @staticmethod
        def wall_ms() -> int:
            return now * 1000
    spec, args = prepare(command.OP, {**COMMAND_ARGS, "detection_methods": methods})
    outcome = execute(spec, args, Context(clock=Now(), history=store, settings={}, event=lambda *_: None))
    assert outcome.status == "completed", outcome.error
    return outcome.result


def estimate_basis(d: dict) -> dict:
    """The unit costs behind anomaly_detection.estimate_ms, from this run's figures: a row of one
    series (the whole command with the statistical method alone: reading, judging, episodes, the
    result) and a row of the forest's table (the command with the forest alone), with the
    estimate they give for both methods against the measured run."""
    basis = {"series_row_ns": d["command_statistical_ms"] * 1e6 / (d["rows"] * d["series"]),
             "forest_row_ns": d["command_ml_based_ms"] * 1e6 / d["rows"]}
    estimate = command.estimate_ms(prepare(command.OP, COMMAND_ARGS)[1], series=d["series"])
    basis["estimate_ms"] = estimate
    basis["estimate_over_measured"] = estimate / d["command_ms"]
    return basis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output")
    args = parser.parse_args()
    report = {"machine": platform.machine(), "python": platform.python_version()}
    report["streaming"] = s = streaming()
    print(f"streaming detector: {s['detector_us']:.2f} us/sample (target < 2), "
          f"{s['agent_detector_us']:.2f} with the agent's 1 Hz settings; "
          f"{s['detector_us'] / s['rolling_zscore_us']:.1f}x the native rolling z-score "
          f"({s['rolling_zscore_us']:.3f} us), NAB's windowed Gaussian in Python "
          f"{s['windowed_gaussian_python_us']:.2f} us; {s['detector_memory_bytes']} bytes per series "
          f"({s['agent_detector_memory_bytes']} with the agent's 1 Hz settings)")
    store, now = week_of_history()
    report["detection"] = d = detection(store, now)
    print(f"qos_anomaly_detection, 7 days + 1 day window at 1 min, {d['series']} series ({d['rows']} rows):")
    print(f"  history read {d['read_ms']:.2f} ms; statistical {d['statistical_ms']:.2f} ms (target < 10)")
    print(f"  Isolation Forest native {d['forest_native_ms']:.1f} ms", end="")
    if d["forest_sklearn_ms"]:
        print(f", scikit-learn {d['forest_sklearn_ms']:.1f} ms: native {d['sklearn_over_native']:.1f}x faster "
              f"(target >= 10x; import sklearn {d['sklearn_import_ms']:.0f} ms more)")
    else:
        print(" (scikit-learn not installed)")
    report["estimate_basis"] = b = estimate_basis(d)
    print(f"  whole command {d['command_ms']:.1f} ms (statistical alone {d['command_statistical_ms']:.1f}, "
          f"forest alone {d['command_ml_based_ms']:.1f}); its estimate for these {d['series']} series "
          f"{b['estimate_ms']} ms ({b['estimate_over_measured']:.2f}x)")
    write_report(report, args.output)


if __name__ == "__main__":
    main()
