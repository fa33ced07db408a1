"""Where the controller's ingest of a QoS 0 flood spends its CPU, per message and stage by stage,
each stage alone in this process (no broker, no other process competing):

  split: MQTT 5 PUBLISH packets (QoS 0, the flood's telemetry/qos messages of bench/controller.py)
    from the receiver's read buffer into (topic, payload, qos, mid), by paho's parsing (what the
    receiver did per message before) and by receiver.split_publishes (what it does now);
  pipe: the receiver's frames of 250 messages, marshal'd and read back (both ends);
  json: a message's JSON by the standard library's decoder (before) and by orjson (now);
  rows: the ingest thread's work per message without the store (topic, JSON, fleet, sample rows);
  store: the rows' INSERT and the COMMIT, in transactions of 1,000 and of 5,000 messages, over
    ROUNDS floods of FLOOD messages into one store (the flood's samples are two hours old, as the
    bench's: each round's land among the last's and the store grows as the bench's does).

Figures are the best of REPEATS (the machine is shared; the best is the least disturbed), the
store's per round. Run: .venv/bin/python bench/controller_stages.py --output bench/controller-stages-report.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from controller import telemetry, topic  # noqa: E402
from report import write as write_report  # noqa: E402

FLOOD = 30000
DEVICES = 1000
REPEATS = 5
ROUNDS = 4


def flood_messages(first_ms: int) -> list[tuple[str, bytes, int, int]]:
    return [(topic(s % DEVICES, "telemetry/qos"), telemetry(s % DEVICES, first_ms + s, s), 0, 0) for s in range(FLOOD)]


def publish_packet(topic_name: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH as mosquitto sends it to an MQTT 5 subscriber (no properties)."""
    name = topic_name.encode()
    body = len(name).to_bytes(2, "big") + name + b"\x00" + payload
    length, size = bytearray(), len(body)
    while True:
        size, byte = size >> 7, size & 0x7F
        length.append(byte | (0x80 if size else 0))
        if not size:
            return b"\x30" + bytes(length) + body


def best_us(run, count: int) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return round(best / count * 1e6, 2)


def split_stages(messages: list) -> dict:
    from paho.mqtt import client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from rtk_qos.controller.receiver import _buffered_client, split_publishes
    stream = b"".join(publish_packet(t, p) for t, p, _q, _m in messages)
    client = _buffered_client(mqtt)(CallbackAPIVersion.VERSION2, client_id="stages", protocol=mqtt.MQTTv5,
                                    manual_ack=True)
    got: list = []
    client.on_message = lambda _c, _u, msg: got.append((msg.topic, msg.payload, msg.qos, msg.mid))

    def by_paho():
        got.clear()
        client._rbuf, client._rpos = stream, 0
        for _ in messages:
            client._packet_read()  # what loop_read() does per packet

    def by_split():
        got.clear()
        split_publishes(stream, 0, True, got)

    figures = {"paho_us": best_us(by_paho, len(messages))}
    assert got == messages, "paho's messages differ"
    figures["split_publishes_us"] = best_us(by_split, len(messages))
    assert got == messages, "split_publishes' messages differ"
    return figures


def pipe_stage(messages: list) -> float:
    from rtk_qos.controller.receiver import FRAME_MESSAGES, _frame, _Frames

    def both_ends():
        frames = _Frames()
        for at in range(0, len(messages), FRAME_MESSAGES):
            frames.feed(_frame(("m", "main", 1, messages[at:at + FRAME_MESSAGES])))

    return best_us(both_ends, len(messages))


def json_stages(messages: list) -> dict:
    decoder = json.JSONDecoder()
    payloads = [p for _t, p, _q, _m in messages]
    return {"json_us": best_us(lambda: [decoder.decode(p.decode("utf-8")) for p in payloads], len(payloads)),
            "orjson_us": best_us(lambda: [orjson.loads(p) for p in payloads], len(payloads))}


def engine(state_dir: str):
    from rtk_qos.controller import config
    from rtk_qos.controller.service import Engine
    return Engine(config.load(None, {}, {"state_dir": state_dir, "tenant": "bench", "log_level": "warning"}))


def ingest(eng, messages: list, batch: int, store: bool) -> None:
    for at in range(0, len(messages), batch):
        with eng.store.transaction():
            t = time.time_ns() // 1_000_000
            for item in messages[at:at + batch]:
                eng._ingest(item, t)
            if store:
                eng.store.add_samples(eng._batch_samples)
            eng._batch_samples = []
            eng.fleet.flush()


def rows_stage(workdir: Path) -> float:
    eng = engine(str(workdir / "rows"))
    try:
        ingest(eng, flood_messages(time.time_ns() // 1_000_000 - 7_200_000), 5000, store=True)  # devices, series known
        messages = flood_messages(time.time_ns() // 1_000_000 - 7_200_000 + FLOOD)
        return best_us(lambda: ingest(eng, messages, 5000, store=False), len(messages))
    finally:
        eng.store.close()
        eng.reader.close()


def store_stage(workdir: Path, batch: int) -> list[float]:
    """us per message of the store's part, per round: a round's ingest less its rows' part."""
    eng = engine(str(workdir / f"store-{batch}"))
    per_round = []
    try:
        for _ in range(ROUNDS):
            messages = flood_messages(time.time_ns() // 1_000_000 - 7_200_000)
            began = time.perf_counter()
            ingest(eng, messages, batch, store=False)
            rows = time.perf_counter() - began
            messages = flood_messages(time.time_ns() // 1_000_000 - 7_200_000 + FLOOD)
            began = time.perf_counter()
            ingest(eng, messages, batch, store=True)
            per_round.append(round((time.perf_counter() - began - rows) / FLOOD * 1e6, 2))
    finally:
        eng.store.close()
        eng.reader.close()
    return per_round


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output")
    ns = parser.parse_args()
    messages = flood_messages(time.time_ns() // 1_000_000 - 7_200_000)
    workdir = Path(tempfile.mkdtemp(prefix="rtk-qos-bench-stages-"))
    report = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                          "note": "shared with other work: the best of the repeats"},
              "messages": FLOOD, "message_bytes": len(messages[0][1]), "repeats": REPEATS,
              "us_per_message": {"split": split_stages(messages), "pipe_marshal_both_ends_us": pipe_stage(messages),
                                 "json": json_stages(messages), "rows_without_store_us": rows_stage(workdir)},
              "store_us_per_message_per_round": {f"transactions_of_{batch}": store_stage(workdir, batch)
                                                 for batch in (1000, 5000)},
              "rounds": ROUNDS}
    report["machine"]["load_average_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    write_report(report, ns.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
