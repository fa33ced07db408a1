"""Labelled traffic-like series in NAB's layout (one CSV per series + windows.json); pure stdlib,
deterministic for a seed.

    python bench/labelled.py --out DIR [--seed N] [--days D]

Each series is a link's throughput per minute (the agent's history keeps 1-minute buckets for
7 days, so the default week of 10080 rows is the realistic case):

  level   = scale * day_factor * shape: a weekday shape (night trough near 04:00, small morning
            bump, low daytime, evening peak near 21:00) blended into a weekend shape (busy
            afternoon, later peak) from Saturday to Monday, the blend ramping over two hours
            around 04:00 so no step appears; day_factor makes some days up to 6 % busier.
  value   = level * exp(sigma * e), e an AR(1) with unit variance: multiplicative noise, so its
            spread grows with the level and the series stays positive.
  job     = in some files an hourly scheduled transfer (a few minutes, a fixed minute past the
            hour) adds a fixed amount. Benign and unlabelled: it recurs a dozen times inside the
            probation period, so a detector has seen it before any row is scored.

Anomalies are episodes with an onset and a duration, after which the series returns to normal:
  spike        1-5 minutes at 2.5-4x the level;
  level_shift  the level times 1.6-2.2 or 0.35-0.6, for 40-90 % of half a window;
  variance     sigma times 3-5, as long;
  drift        the level ramping linearly from 1x to 1.8-2.5x, as long, then back (fault cleared).

Windows are NAB's: 10 % of the rows split equally among the file's anomalies, each window centred
on the onset (NAB centres its windows on the labelled point). Every window lies after the
probation period (NAB's: 15 % of the rows, at most 750) and they do not overlap; each episode
ends inside its window, so the return to normal is part of the labelled event rather than an
unlabelled change. File names list the anomaly kinds in time order.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
from datetime import datetime, timedelta, timezone

# (anomaly kinds, hourly job): every kind three or four times, two clean files.
FILES = (
    (("spike", "level_shift"), False),
    (("variance", "drift"), True),
    (("level_shift", "spike", "drift"), False),
    (("variance", "level_shift"), True),
    (("drift", "spike", "variance"), False),
    (("spike", "drift"), False),
    ((), False),
    ((), True),
)
MONDAY = datetime(2024, 1, 1, tzinfo=timezone.utc)
STEP = 60  # seconds per row
PHI = 0.7  # AR(1) coefficient of the noise: minute-to-minute traffic is correlated


def _bump(hour: float, centre: float, kappa: float) -> float:
    """A von Mises bump on the 24-hour circle: 1 at `centre`, narrower for larger kappa."""
    return math.exp(kappa * (math.cos(2 * math.pi * (hour - centre) / 24) - 1))


def _weekday(hour: float) -> float:
    return 0.15 + 0.20 * _bump(hour, 7.5, 20) + 0.25 * _bump(hour, 13, 3) + 0.85 * _bump(hour, 21, 8)


def _weekend(hour: float) -> float:
    return 0.15 + 0.55 * _bump(hour, 14, 2.5) + 0.80 * _bump(hour, 21.5, 6)


def _ramp(x: float) -> float:
    """0 below -1, 1 above 1, a smooth S in between."""
    return 0.0 if x <= -1 else 1.0 if x >= 1 else (1 + math.sin(math.pi * x / 2)) / 2


def _weekendness(when: datetime) -> float:
    """1 from Saturday 04:00 to Monday 04:00 (the traffic trough), ramping over +-1 h."""
    week_hour = when.weekday() * 24 + when.hour + when.minute / 60
    # Signed distance from the weekend's centre, Sunday 04:00, on the 168-hour circle.
    distance = (week_hour - (6 * 24 + 4) + 84) % 168 - 84
    return _ramp(24 - abs(distance))


def _place(rng: random.Random, rows: int, kinds: tuple[str, ...]) -> list[dict]:
    """Onsets, durations and magnitudes of the anomalies, with their windows in rows."""
    if not kinds:
        return []
    probation = min(rows * 15 // 100, 750)
    length = rows * 10 // 100 // len(kinds)
    half = length // 2
    segment = (rows - probation) // len(kinds)
    placed = []
    for k, kind in enumerate(kinds):
        # Each window lies inside its own segment of the scored rows: none overlap.
        low = probation + k * segment
        onset = rng.randint(low + half, low + segment - length + half)
        if kind == "spike":
            duration, magnitude = rng.randint(1, 5), rng.uniform(2.5, 4.0)
        else:
            duration = rng.randint(max(1, round(0.4 * half)), max(1, round(0.9 * half)))
            if kind == "level_shift":
                magnitude = rng.uniform(1.6, 2.2) if rng.random() < 0.5 else rng.uniform(0.35, 0.6)
            elif kind == "variance":
                magnitude = rng.uniform(3.0, 5.0)
            else:
                magnitude = rng.uniform(1.8, 2.5)
        placed.append({"kind": kind, "onset": onset, "duration": duration,
                       "magnitude": round(magnitude, 3),
                       "window": (onset - half, onset - half + length - 1)})
    return placed


def series(rng: random.Random, kinds: tuple[str, ...], job: bool, days: int = 7):
    """One labelled series: (timestamps as datetimes, values, anomalies with row windows)."""
    rows = days * 24 * 60
    start = MONDAY + timedelta(days=rng.randrange(7))  # weekends fall at different rows
    scale = math.exp(rng.uniform(math.log(20), math.log(400)))  # peak level, Mbit/s
    sigma = rng.uniform(0.05, 0.12)
    day_factors = [rng.uniform(0.94, 1.06) for _ in range(days + 2)]
    job_minute, job_length, job_amount = rng.randrange(60), rng.randint(2, 4), rng.uniform(0.1, 0.2) * scale
    anomalies = _place(rng, rows, kinds)

    times, values, noise = [], [], rng.gauss(0, 1)
    for i in range(rows):
        when = start + timedelta(seconds=i * STEP)
        hour = when.hour + when.minute / 60
        # Day factors interpolated (cosine) between noons, so busier days have no edges.
        d = i / 1440 + 0.5
        day, frac = int(d), d - int(d)
        factor = day_factors[day] + (day_factors[day + 1] - day_factors[day]) * (1 - math.cos(math.pi * frac)) / 2
        w = _weekendness(when)
        level = scale * factor * ((1 - w) * _weekday(hour) + w * _weekend(hour))
        spread = sigma
        for a in anomalies:
            into = i - a["onset"]
            if 0 <= into < a["duration"]:
                if a["kind"] == "variance":
                    spread *= a["magnitude"]
                elif a["kind"] == "drift":
                    level *= 1 + (a["magnitude"] - 1) * (into + 1) / a["duration"]
                else:
                    level *= a["magnitude"]
        noise = PHI * noise + math.sqrt(1 - PHI * PHI) * rng.gauss(0, 1)
        value = level * math.exp(spread * noise)
        if job and (when.minute - job_minute) % 60 < job_length:
            value += job_amount
        times.append(when)
        values.append(value)
    return times, values, anomalies


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


def generate(directory: str, seed: int = 1, days: int = 7) -> dict[str, list[dict]]:
    """Write the FILES set in NAB's layout into `directory`; return file name -> anomalies
    (kind, onset time, duration in minutes, magnitude), in time order."""
    os.makedirs(directory, exist_ok=True)
    windows, manifest = {}, {}
    for index, (kinds, job) in enumerate(FILES):
        # A string seed is hashed deterministically (not subject to PYTHONHASHSEED).
        rng = random.Random(f"labelled:{seed}:{index}")
        name = f"traffic_{index:02d}_{'-'.join(kinds) or 'clean'}{'_job' if job else ''}.csv"
        times, values, anomalies = series(rng, kinds, job, days)
        with open(os.path.join(directory, name), "w") as fh:
            fh.write("timestamp,value\n")
            fh.writelines(f"{_stamp(t)},{v:.3f}\n" for t, v in zip(times, values))
        windows[name] = [[_stamp(times[a]) + ".000000", _stamp(times[b]) + ".000000"]
                         for a, b in (x["window"] for x in anomalies)]
        manifest[name] = [{"kind": x["kind"], "onset": _stamp(times[x["onset"]]),
                           "minutes": x["duration"], "magnitude": x["magnitude"]} for x in anomalies]
    with open(os.path.join(directory, "windows.json"), "w") as fh:
        json.dump(windows, fh, indent=1)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory to write the CSVs and windows.json into")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    for name, anomalies in generate(args.out, args.seed, args.days).items():
        print(name)
        for a in anomalies:
            print(f"  {a['kind']:12s} at {a['onset']} for {a['minutes']:3d} min, x{a['magnitude']}")


if __name__ == "__main__":
    main()
