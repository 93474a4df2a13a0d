"""Which shard a pair belongs to, and which replica should hold which shard (pure).

Two consistent hashes, so that a change moves as little as possible:

- a pair's key (its name, or `namespace/name` for a pair object) goes to one of a fixed
  number of shards by jump consistent hashing (Lamping and Veach, 2014): raising the shard
  count from n to n+1 moves only 1/(n+1) of the pairs;
- shards go to the live replicas by rendezvous (highest random weight) hashing with a bound
  of ceil(shards / replicas) each, so a replica joining or leaving moves only about the
  shards it gains or had, and every replica computes the same answer from the same set of
  members without talking to the others.

Kubernetes carries the rest (sharding.ShardLeases): a Lease per shard says who actually
holds it, and only the holder acts on the shard's pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["assign", "shard_of"]

_JUMP = 2862933555777941757
_MASK = (1 << 64) - 1


def _hash64(text: str) -> int:
    """A stable 64-bit hash (Python's own `hash` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def shard_of(key: str, shards: int) -> int:
    """The shard (0 .. shards-1) of a pair key, by jump consistent hashing."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    state = _hash64(key)
    bucket, jump = -1, 0
    while jump < shards:
        bucket = jump
        state = (state * _JUMP + 1) & _MASK
        jump = int((bucket + 1) * ((1 << 31) / ((state >> 33) + 1)))
    return bucket


def assign(shards: int, members: Iterable[str]) -> dict[int, str]:
    """Shard -> member: rendezvous hashing, at most ceil(shards / members) shards each.

    Every (shard, member) couple gets a score; couples are taken best score first, skipping
    a shard already placed and a member already full. Deterministic for a set of members
    (their order does not matter); no members, no assignment.
    """
    names = sorted(set(members))
    if not names:
        return {}
    capacity = -(-shards // len(names))
    ranked = sorted(((_hash64(f"{shard}/{name}"), shard, name)
                     for shard in range(shards) for name in names), reverse=True)
    placed: dict[int, str] = {}
    load = dict.fromkeys(names, 0)
    for _score, shard, name in ranked:
        if shard in placed or load[name] >= capacity:
            continue
        placed[shard] = name
        load[name] += 1
    return placed
