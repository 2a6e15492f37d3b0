"""Objects, chunks and fragments in the simulated mesh, and the truth about their health.

Why a separate "truth": stewards decide from what their failure detector tells them (a peer
silent for a while, perhaps only rebooting); whether data is actually lost depends on what
really happened (the peer left for good).  This module keeps the truth, incrementally, per
chunk: ``live`` counts holders that are up, ``existing`` counts holders that still have the
fragment (up or merely down).  The outputs read it:

* an object is *at risk* while some chunk has fewer live fragments than the rule's repair
  threshold (as declared, so lazy and eager runs are measured alike);
* *unavailable* while some chunk has fewer than k live fragments (a get would fail now);
* *lost*, for good, as soon as some chunk has fewer than k existing fragments.

No bytes exist: a fragment is a (chunk, share) entry on a peer; its id, needed by rendezvous
placement, is derived from the chunk's random seed.
"""

from __future__ import annotations

import hashlib

from p2pstore.core.placement import Candidate, within_rule
from p2pstore.core.rules import CodingRule
from p2pstore.errors import LocalProtocolError
from p2pstore.sim.peers import Peers


class Chunk:
    """One chunk: its object, the seed of its fragment ids, its holders share by share."""

    __slots__ = ("existing", "fragment_size", "holders", "job", "live", "obj", "seed")

    def __init__(self, obj: int, seed: bytes, fragment_size: int) -> None:
        self.obj = obj
        self.seed = seed
        self.fragment_size = fragment_size
        self.holders: list[int] = []
        self.live = 0
        self.existing = 0
        self.job = -1
        """The repair job running on this chunk, or -1."""


class StoredObject:
    """One object: its DHT key, size, chunks, and its place in the counters."""

    __slots__ = (
        "at_risk",
        "chunks",
        "key",
        "long_key",
        "lost",
        "lost_at",
        "placement_version",
        "size",
        "stored",
    )

    def __init__(self, key: bytes, size: int, chunks: range) -> None:
        self.key = key
        self.long_key = int.from_bytes(key, "big")
        self.size = size
        self.chunks = chunks
        self.stored = False
        self.lost = False
        self.lost_at: float | None = None
        self.at_risk = [0, 0]
        """Chunks below the repair threshold, and below k, in live fragments."""
        self.placement_version = 0
        """Bumped whenever a holder is replaced: what the steward's placement record names."""


class Storage:
    """Every object and chunk of a run, with counters the time series reads."""

    def __init__(self, peers: Peers, rule: CodingRule) -> None:
        self.peers = peers
        self.rule = rule
        self.objects: list[StoredObject] = []
        self.chunks: list[Chunk] = []
        self.stored_objects = 0
        self.stored_list: list[int] = []
        """Numbers of the objects stored so far (lost ones included), in store order."""
        self.lost_objects = 0
        self.objects_below = [0, 0]
        """Objects at risk (some chunk below threshold), and unavailable (below k)."""
        self.stored_bytes = 0
        """Bytes of fragments that exist (on up or down peers)."""
        self.user_bytes = 0
        """Bytes of every object ever stored (its size, before coding)."""
        self.unique_bytes = 0
        """Bytes of the objects stored and not lost: the unique data the mesh keeps."""
        self.tracked_chunks = 0
        """Chunks of stored objects not lost: what stewards watch."""
        self._limits = (rule.repair_threshold, rule.k)

    # -- building --------------------------------------------------------------------------------

    def new_object(self, key: bytes, size: int, chunk_size: int, seed: bytes) -> int:
        """Describe an object of ``size`` bytes (not stored yet); returns its number."""
        count = max(1, -(-size // chunk_size))
        first = len(self.chunks)
        number = len(self.objects)
        self.objects.append(StoredObject(key, size, range(first, first + count)))
        for index in range(count):
            length = min(chunk_size, size - index * chunk_size) if size else 0
            fragment = max(1, -(-length // self.rule.k))
            chunk_seed = hashlib.blake2b(seed + index.to_bytes(4, "big"), digest_size=16).digest()
            self.chunks.append(Chunk(number, chunk_seed, fragment))
        return number

    def fragment_ids(self, chunk: int) -> list[bytes]:
        """The n fragment ids of ``chunk`` (what rendezvous placement hashes)."""
        seed = self.chunks[chunk].seed
        return [
            hashlib.blake2b(seed + bytes([share]), digest_size=32).digest()
            for share in range(self.rule.n)
        ]

    def store(self, number: int, holders: list[list[int]]) -> None:
        """The object's fragments landed on ``holders[chunk][share]``: it is stored."""
        obj = self.objects[number]
        if obj.stored or len(holders) != len(obj.chunks):
            raise LocalProtocolError(f"object {number} stored twice or with the wrong chunks")
        for chunk_number, row in zip(obj.chunks, holders, strict=True):
            chunk = self.chunks[chunk_number]
            for share, peer in enumerate(row):
                chunk.holders.append(peer)
                self._gain(chunk_number, chunk, share, peer)
        obj.stored = True
        self.stored_objects += 1
        self.stored_list.append(number)
        self.tracked_chunks += len(obj.chunks)
        self.user_bytes += obj.size
        self.unique_bytes += obj.size
        for chunk_number in obj.chunks:
            self._count(obj, self.chunks[chunk_number].live, None)

    # -- what happens to holders -----------------------------------------------------------------

    def holder_down(self, peer: int) -> None:
        """``peer`` just went down: its fragments are no longer live."""
        for chunk_number in self.peers.held[peer]:
            self._live_delta(self.chunks[chunk_number], -1)

    def holder_up(self, peer: int) -> None:
        """``peer`` just came back with its fragments."""
        for chunk_number in self.peers.held[peer]:
            self._live_delta(self.chunks[chunk_number], +1)

    def holder_departed(self, peer: int, now: float) -> None:
        """``peer`` left for good (already counted down): its fragments no longer exist.  It
        stays listed as their holder until a steward repairs them elsewhere."""
        size = 0
        for chunk_number in self.peers.held[peer]:
            chunk = self.chunks[chunk_number]
            chunk.existing -= 1
            size += chunk.fragment_size
            self._check_lost(self.objects[chunk.obj], chunk, now)
        self.stored_bytes -= size
        self.peers.used[peer] -= size

    def reassign(self, chunk_number: int, share: int, peer: int, now: float) -> None:
        """A rebuilt fragment of ``share`` landed on ``peer``; the old holder's copy (if any
        survives) is dropped, as the new placement record no longer lists it."""
        chunk = self.chunks[chunk_number]
        old = chunk.holders[share]
        if chunk_number in self.peers.held[peer]:
            raise LocalProtocolError(f"peer {peer} already holds a share of chunk {chunk_number}")
        chunk.holders[share] = peer
        self.objects[chunk.obj].placement_version += 1
        self._gain(chunk_number, chunk, share, peer)
        if self.peers.held[old].get(chunk_number) == share:
            del self.peers.held[old][chunk_number]
            if not self.peers.departed[old]:
                chunk.existing -= 1
                self.stored_bytes -= chunk.fragment_size
                self.peers.used[old] -= chunk.fragment_size
                if self.peers.is_up(old):
                    self._live_delta(chunk, -1)
        self._check_lost(self.objects[chunk.obj], chunk, now)

    # -- questions -------------------------------------------------------------------------------

    def within_rule(self, chunk_number: int, rule: CodingRule) -> bool:
        """Whether the chunk's existing fragments sit where ``rule`` allows."""
        chunk = self.chunks[chunk_number]
        holders: list[Candidate] = [
            self.peers.candidate(peer) for peer in chunk.holders if not self.peers.departed[peer]
        ]
        return within_rule(holders, rule)

    def readable_by(self, number: int, reader: int) -> bool:
        """Whether ``reader`` can fetch k fragments of every chunk now (partitions count)."""
        obj = self.objects[number]
        if obj.lost:
            return False
        reachable = self.peers.reachable
        k = self.rule.k
        for chunk_number in obj.chunks:
            holders = self.chunks[chunk_number].holders
            if sum(1 for peer in holders if reachable(reader, peer)) < k:
                return False
        return True

    # -- internals -------------------------------------------------------------------------------

    def _gain(self, chunk_number: int, chunk: Chunk, share: int, peer: int) -> None:
        self.peers.held[peer][chunk_number] = share
        chunk.existing += 1
        self.stored_bytes += chunk.fragment_size
        self.peers.used[peer] += chunk.fragment_size
        if self.peers.is_up(peer):
            self._live_delta(chunk, +1)

    def _live_delta(self, chunk: Chunk, delta: int) -> None:
        old = chunk.live
        chunk.live = old + delta
        obj = self.objects[chunk.obj]
        if obj.stored and not obj.lost:
            self._count(obj, chunk.live, old)

    def _count(self, obj: StoredObject, live: int, old: int | None) -> None:
        for which, limit in enumerate(self._limits):
            below = live < limit
            if old is not None and below == (old < limit):
                continue
            if old is None and not below:
                continue
            step = 1 if below else -1
            before = obj.at_risk[which]
            obj.at_risk[which] = before + step
            if (before == 0) != (obj.at_risk[which] == 0):
                self.objects_below[which] += step

    def _check_lost(self, obj: StoredObject, chunk: Chunk, now: float) -> None:
        if obj.lost or not obj.stored or chunk.existing >= self.rule.k:
            return
        obj.lost = True
        obj.lost_at = now
        self.lost_objects += 1
        self.unique_bytes -= obj.size
        self.tracked_chunks -= len(obj.chunks)
        for which in range(2):
            if obj.at_risk[which]:
                self.objects_below[which] -= 1
