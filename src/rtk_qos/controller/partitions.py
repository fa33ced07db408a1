"""The fleet split into partitions, and the partitions shared among live controller instances.

A device's partition is a stable hash of its id modulo the partition count, so every
instance, now and after any restart, puts it in the same one. Partitions are dealt to the
live instances by rendezvous hashing (each partition ranks the instances by a hash of
both) with a cap of ceil(partitions / instances) each: every instance computes the same
assignment from the same list of live instances, the shares differ by at most one, and
an instance joining or leaving moves only partitions to or from it (and those the cap
pushes on).
"""
from __future__ import annotations

import hashlib


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def partition_of(device_id: str, count: int) -> int:
    return _hash(device_id) % count


def assign(count: int, instances: list[str]) -> dict[int, str]:
    """partition -> instance, balanced: no instance gets more than ceil(count / len(instances))."""
    if not instances:
        return {}
    cap = -(-count // len(instances))
    load = dict.fromkeys(instances, 0)
    owners = {}
    for part in range(count):
        ranked = sorted(instances, key=lambda instance: _hash(f"{part}/{instance}"), reverse=True)
        owner = next(instance for instance in ranked if load[instance] < cap)
        load[owner] += 1
        owners[part] = owner
    return owners
