"""Calibration of the streaming detector: how often pure noise alarms.

    python bench/noise_alarms.py [--seeds 6] [--samples 100000] [--output FILE]

Runs a fresh detector (default settings, a sample a minute) over noise that holds no anomaly:
iid Gaussian, AR(1) with phi 0.9 (Gaussian innovations) and quantised Gaussian (round(noise)),
each drawn with random.Random(seed) for seeds 1..--seeds, and counts the alarms: samples scoring
5/13 or more, where the tail probability crosses the alarm level p = 1e-5 (the quiet after an
alarm then scores 0). Prints alarms per 100,000 samples, the mean over the seeds. A change to
the detector should not raise them.
"""
from __future__ import annotations

import argparse
import random

from report import write as write_report
from rtk_qos._core import Detector

ALARM_SCORE = 5 / 13  # L / (L + 8) at L = -log10(1e-5)


def noise(kind: str, seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    if kind == "gaussian":
        return [rng.gauss(0, 1) for _ in range(n)]
    if kind == "quantised":
        return [float(round(rng.gauss(0, 1))) for _ in range(n)]
    x, out = 0.0, []
    for _ in range(n):
        x = 0.9 * x + rng.gauss(0, 1)
        out.append(x)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--output", help="write the JSON report here")
    args = parser.parse_args()
    report = {"samples": args.samples, "seeds": list(range(1, args.seeds + 1)), "alarm_score": ALARM_SCORE,
              "alarms_per_100k": {}, "alarms_per_seed": {}}
    t = [1.4e9 + 60.0 * i for i in range(args.samples)]
    for kind in ("gaussian", "ar1", "quantised"):
        alarms = [sum(s >= ALARM_SCORE for s in Detector().run(t, noise(kind, seed, args.samples)))
                  for seed in range(1, args.seeds + 1)]
        rate = sum(alarms) / len(alarms) * 100_000 / args.samples
        report["alarms_per_100k"][kind], report["alarms_per_seed"][kind] = round(rate, 2), alarms
        print(f"{kind}: {rate:.2f} alarms per 100k samples (per seed: {alarms})")
    write_report(report, args.output)


if __name__ == "__main__":
    main()
