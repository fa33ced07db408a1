"""An ICMP echo responder that delays and drops on a schedule, run in a target namespace
(with the kernel's own echo replies switched off): the latency and loss the tests check
against are the ones this program creates.

Usage: reflector.py SCHEDULE_JSON
  {"base_ms": 20, "slow": [[first_seq, last_seq, delay_ms], ...], "drop": [seq, ...], "drop_every": [10, 5],
   "duplicate": [seq, ...], "foreign": [seq, ...]}
"foreign": before the real reply, send one with the same identifier and sequence but another
payload (what a second prober with the same identifier would get back).
"""
import heapq
import json
import select
import socket
import struct
import sys
import time

schedule = json.loads(sys.argv[1])
slow = schedule.get("slow", [])
drop = set(schedule.get("drop", []))
duplicate = set(schedule.get("duplicate", []))
foreign = set(schedule.get("foreign", []))
every, phase = schedule.get("drop_every", [0, 0])


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def delay_ms(seq: int) -> float:
    for first, last, ms in slow:
        if first <= seq <= last:
            return ms
    return schedule.get("base_ms", 0)


sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
print("ready", flush=True)
queue = []  # (due, reply bytes, destination)
while True:
    timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
    ready, _, _ = select.select([sock], [], [], timeout)
    now = time.monotonic()
    while queue and queue[0][0] <= now:
        _, reply, destination = heapq.heappop(queue)
        sock.sendto(reply, (destination, 0))
    if not ready:
        continue
    packet, (source, _) = sock.recvfrom(65535)
    icmp = packet[(packet[0] & 0x0F) * 4:]
    kind, code, _sum, ident, seq = struct.unpack("!BBHHH", icmp[:8])
    if kind != 8:
        continue
    if seq in drop or (every and seq % every == phase):
        continue
    body = icmp[8:]
    header = struct.pack("!BBHHH", 0, 0, 0, ident, seq)
    reply = struct.pack("!BBHHH", 0, 0, checksum(header + body), ident, seq) + body
    due = now + delay_ms(seq) / 1000.0
    heapq.heappush(queue, (due, reply, source))
    if seq in foreign:
        other = bytes(b ^ 0xFF for b in body)
        forged = struct.pack("!BBHHH", 0, 0, 0, ident, seq)
        heapq.heappush(queue, (now, struct.pack("!BBHHH", 0, 0, checksum(forged + other), ident, seq) + other,
                               source))
    if seq in duplicate:
        heapq.heappush(queue, (due + 0.001, reply, source))
