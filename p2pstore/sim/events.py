"""The event heap: what happens next in simulated time, and a digest of everything that did.

Strategy: an event is a plain tuple ``(time, sequence, kind, a, b)`` -- two small integers of
payload (a peer, a chunk, a job, an epoch) -- so the heap compares floats and ints only and
never objects.  ``sequence`` numbers events in the order they were scheduled, so two events at
the same instant run in that order on every machine and under every ``PYTHONHASHSEED``: the
run is a pure function of the scenario and its seed.  Every event popped is folded into a
BLAKE2b digest (time as an IEEE double, kind and payload as integers); two runs are identical
exactly when their digests are, which is what the determinism test checks.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import struct
from typing import Final

from p2pstore.errors import LocalProtocolError

_PACK: Final = struct.Struct("<dBqq")


class Event(enum.IntEnum):
    """What an event does; the payload ``(a, b)`` is described per kind."""

    SAMPLE = 0
    """Record a row of the time series."""
    SESSION_END = 1
    """Peer ``a`` ends a session (goes down until its next one)."""
    SESSION_START = 2
    """Peer ``a`` starts a session."""
    DEPART = 3
    """Peer ``a`` leaves for good."""
    JOIN = 4
    """A new empty peer joins datacenter ``a``."""
    TRACE_UP = 5
    """The availability trace brings peer ``a`` up."""
    TRACE_DOWN = 6
    """The availability trace takes peer ``a`` down."""
    OUTAGE_START = 7
    """Outage instance ``a`` begins."""
    OUTAGE_END = 8
    """Outage instance ``a`` ends."""
    PARTITION_START = 9
    """Partition ``a`` splits the mesh."""
    PARTITION_END = 10
    """Partition ``a`` heals."""
    DETECT = 11
    """Stewards notice that peer ``a`` (down since epoch ``b``) does not answer."""
    GRACE = 12
    """Peer ``a``'s silence (epoch ``b``) reaches the grace period."""
    REPAIR_DONE = 13
    """Repair job ``a`` finishes."""
    RETRY = 14
    """Check chunk ``a`` again, at a round (a repair could not start or landed, or a holder
    came back); stale if another check of the chunk was scheduled earlier."""
    SWEEP = 15
    """Every steward checks every chunk (partition ``a`` has outlasted the grace period)."""
    PUT = 16
    """A client starts a put."""
    PUT_DONE = 17
    """Object ``a``'s fragments have been uploaded by peer ``b``."""
    GET = 18
    """A client reads an object."""
    WARMUP = 19
    """The warm-up ends: the summary's window starts (scheduled only for a warm-up > 0)."""


class EventQueue:
    """A heap of events in simulated time, with the digest of those already popped."""

    __slots__ = ("_digest", "_heap", "_sequence", "now", "popped")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, int, int]] = []
        self._sequence = 0
        self._digest = hashlib.blake2b(digest_size=32)
        self.now = 0.0
        self.popped = 0

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, at: float, kind: Event, a: int = 0, b: int = 0) -> None:
        """Run ``kind`` with payload ``(a, b)`` at time ``at``.

        Raises :class:`LocalProtocolError` for a time in the past (a bug in a handler)."""
        if at < self.now:
            raise LocalProtocolError(f"{kind.name} scheduled at {at}, before now ({self.now})")
        heapq.heappush(self._heap, (at, self._sequence, int(kind), a, b))
        self._sequence += 1

    def next_time(self) -> float | None:
        """When the next event is due, or None if none is."""
        return self._heap[0][0] if self._heap else None

    def pop(self) -> tuple[int, int, int]:
        """Advance ``now`` to the next event and return its ``(kind, a, b)``.

        Raises :class:`LocalProtocolError` when the heap is empty."""
        if not self._heap:
            raise LocalProtocolError("no event left to run")
        at, _, kind, a, b = heapq.heappop(self._heap)
        self.now = at
        self.popped += 1
        self._digest.update(_PACK.pack(at, kind, a, b))
        return kind, a, b

    def note(self, *values: int) -> None:
        """Fold extra integers (an outcome, a final state) into the digest."""
        for value in values:
            self._digest.update(value.to_bytes(16, "big", signed=True))

    def digest(self) -> str:
        """Hex digest of every event popped (and every value noted) so far."""
        return self._digest.copy().hexdigest()
