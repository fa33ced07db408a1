#!/usr/bin/env python3
"""Store bytes per device-day on both backends, through the Store interface: the same fill (20
devices x the agent's 6 series x 3 h at 1 Hz, in ingest-sized batches, rolled up) into SQLite and
into a PostgreSQL server started for the run (tests/postgres_server.py), then bytes per row of each
tier (SQLite: dbstat; PostgreSQL: pg_total_relation_size, indexes included, after VACUUM as
autovacuum leaves a table), raw bytes per device-day at 1 Hz and the steady state per device with
the default retention.

    .venv/bin/python bench/store_bytes.py --output bench/store-bytes-report.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from controller import SERIES, device_id, steady_state_bytes, table_sizes  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402
from report import write as write_report  # noqa: E402

from rtk_qos.controller.store import HOUR_MS, open_store  # noqa: E402

TIERS = {"raw": "samples_raw", "minute": "samples_minute", "hour": "samples_hour"}


def fill(store, devices: int, hours: int, batch: int) -> dict:
    names = (*SERIES, "uplink.throughput_mbps")  # as the controller derives it from the agent's series
    t0 = int(time.time() * 1000) - (hours + 1) * HOUR_MS
    t0 -= t0 % HOUR_MS
    rows = [(device_id(d), name, t0 + s * 1000, float(s % 97)) for s in range(hours * 3600)
            for d in range(devices) for name in names]
    began = time.monotonic()
    for start in range(0, len(rows), batch):
        with store.transaction():
            store.add_samples(rows[start:start + batch])
    ingest_s = time.monotonic() - began
    began = time.monotonic()
    while True:
        with store.transaction():
            if not store.rollup(t0 + (hours + 1) * HOUR_MS):
                break
    return {"rows": len(rows), "series": len(names), "ingest_rows_per_s": round(len(rows) / ingest_s),
            "rollup_s": round(time.monotonic() - began, 2)}


def figures(sizes: dict, rows: dict, series: int) -> dict:
    per_row = {tier: sizes[table] / rows[table] for tier, table in TIERS.items()}
    return {"bytes_per_row": {k: round(v, 1) for k, v in per_row.items()},
            "raw_bytes_per_device_day_at_1hz": round(per_row["raw"] * series * 86400),
            "steady_state_bytes_per_device_default_retention": round(steady_state_bytes(per_row, series))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--hours", type=int, default=3)
    ap.add_argument("--batch", type=int, default=5000, help="samples per transaction (the ingest batch)")
    ap.add_argument("--output", type=Path)
    ns = ap.parse_args()
    report = {"command": "bench/store_bytes.py", "devices": ns.devices, "hours": ns.hours, "batch": ns.batch,
              "note": "steady state: raw 6 h + per-minute 14 days + per-hour 365 days, from the bytes per row"}
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "bytes.db"
        store = open_store(f"sqlite://{path}")
        report["sqlite"] = fill(store, ns.devices, ns.hours, ns.batch)
        store.close()
        sizes = table_sizes(path)
        report["sqlite"].update(figures(sizes["bytes"], sizes["rows"], report["sqlite"]["series"]))
    server = PostgresServer()
    try:
        url = server.create_database()
        store = open_store(url)
        report["postgresql"] = fill(store, ns.devices, ns.hours, ns.batch)
        store.db.execute("VACUUM ANALYZE")
        rows = {t: store.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TIERS.values()}
        report["postgresql"].update(figures(store.table_bytes(), rows, report["postgresql"]["series"]))
        report["postgresql"]["server"] = store.db.execute("SHOW server_version").fetchone()[0]
        store.close()
    finally:
        server.stop()
    print(json.dumps(report, indent=2))
    write_report(report, ns.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
