"""Which peer's request is handled now: a fair share of the node, and rate limits per identity.

Strategy: every request a session admits is asked here before its handler runs, with ``now``.
Two bounds keep one greedy peer to its share, so honest peers and the node's own loops (steward
rounds, scrubbing, DHT upkeep) keep theirs:

* **concurrency**: at most ``max_requests`` handled at once in the whole node, at most
  ``max_peer_requests`` for one identity (over all its sessions); once the node is half full,
  no identity above an equal share among the identities being served, and the last quarter of
  the slots only for identities with nothing in flight, so a newcomer is served at once even
  when several greedy peers push;
* **rates**: token buckets per identity for the costly requests: lookups (FIND_NODE,
  FIND_VALUE), record STOREs, and fragment bytes in (PUT) and out (GET; charged once the reply's
  size is known, so a peer in debt waits).

A refused request is answered ``busy`` with the wait after which it would be served, never
queued: a refusal costs the node one small reply.  Pure: no clock reads, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pstore.core.ratelimit import RateLimiter
from p2pstore.wire import (
    FindNode,
    FindValue,
    GetFragment,
    GetFragmentReply,
    Message,
    PutFragment,
    Store,
)

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """The node-wide bounds on peers' requests; the defaults leave honest load untouched."""

    max_requests: int = 256
    """Peers' requests handled at once in the whole node."""
    max_peer_requests: int = 64
    """Of which one identity's, over all its sessions."""
    lookups_per_second: float = 200.0
    lookup_burst: float = 2000.0
    stores_per_second: float = 200.0
    store_burst: float = 2000.0
    fragment_bytes_per_second: float = 256.0 * MiB
    """For fragment bytes written here and, separately, bytes read from here."""
    fragment_burst: float = 1024.0 * MiB
    retry_after: float = 0.1
    """The wait suggested when the node or the peer's share is full."""
    max_tracked_peers: int = 4096
    """Identities whose buckets are remembered (see :class:`RateLimiter`)."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_peer_requests <= self.max_requests:
            raise ValueError("need 1 <= max_peer_requests <= max_requests")
        for name in ("lookups_per_second", "lookup_burst", "stores_per_second", "store_burst",
                     "fragment_bytes_per_second", "fragment_burst", "retry_after"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not handled now, and when it would be."""

    reason: str
    """One of the fixed reasons counted by the metrics: ``node_busy``, ``peer_busy``,
    ``lookup_rate``, ``store_rate``, ``fragment_in_rate``, ``fragment_out_rate``."""
    why: str
    retry_after: float


class Admission:
    """The bounds of :class:`AdmissionSettings` over the requests being handled."""

    def __init__(self, settings: AdmissionSettings | None = None) -> None:
        self.settings = s = settings or AdmissionSettings()
        self.in_flight = 0
        self._by_peer: dict[bytes, int] = {}
        tracked = s.max_tracked_peers
        self._lookups = RateLimiter(s.lookups_per_second, s.lookup_burst, max_keys=tracked)
        self._stores = RateLimiter(s.stores_per_second, s.store_burst, max_keys=tracked)
        rate, burst = s.fragment_bytes_per_second, s.fragment_burst
        self._bytes_in = RateLimiter(rate, burst, max_keys=tracked)
        self._bytes_out = RateLimiter(rate, burst, max_keys=tracked)

    def held_by(self, peer: bytes) -> int:
        """Requests of ``peer`` being handled now."""
        return self._by_peer.get(peer, 0)

    def admit(self, peer: bytes, message: Message, now: float) -> Refusal | None:
        """None if the request may be handled (then call :meth:`done` when it is), else why
        not.  A refused request takes nothing from any bucket."""
        refusal = self._check_share(peer) or self._check_rate(peer, message, now)
        if refusal is None:
            self.in_flight += 1
            self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        return refusal

    def done(self, peer: bytes, message: Message, reply: Message | None, now: float) -> None:
        """An admitted request ended (``reply`` None if it failed); charges what it served."""
        self.in_flight -= 1
        left = self._by_peer[peer] - 1
        if left:
            self._by_peer[peer] = left
        else:
            del self._by_peer[peer]
        if isinstance(message, GetFragment) and isinstance(reply, GetFragmentReply):
            self._bytes_out.charge(peer, len(reply.data), now)

    def _check_share(self, peer: bytes) -> Refusal | None:
        s = self.settings
        held = self._by_peer.get(peer, 0)
        if held >= s.max_peer_requests:
            why = f"more than {s.max_peer_requests} of your requests are being handled here"
            return Refusal("peer_busy", why, s.retry_after)
        if self.in_flight >= s.max_requests:
            why = f"this node is handling {self.in_flight} requests, the most it takes"
            return Refusal("node_busy", why, s.retry_after)
        if held == 0:
            return None  # a peer with nothing in flight always gets a slot while one is free
        if self.in_flight >= s.max_requests - s.max_requests // 4:
            why = "this node keeps its last slots for peers with no request in flight"
            return Refusal("node_busy", why, s.retry_after)
        if 2 * self.in_flight >= s.max_requests:
            serving = len(self._by_peer)
            share = max(1, s.max_requests // serving)
            if held >= share:
                why = (
                    f"this node is busy: {serving} peers share it and you already have "
                    f"{held} requests in flight"
                )
                return Refusal("node_busy", why, s.retry_after)
        return None

    def _check_rate(self, peer: bytes, message: Message, now: float) -> Refusal | None:
        s = self.settings
        if isinstance(message, FindNode | FindValue):
            limiter, cost, reason = self._lookups, 1.0, "lookup_rate"
            why = f"more than {s.lookups_per_second:g} lookups per second"
        elif isinstance(message, Store):
            limiter, cost, reason = self._stores, 1.0, "store_rate"
            why = f"more than {s.stores_per_second:g} records stored per second"
        elif isinstance(message, PutFragment):
            limiter, cost, reason = self._bytes_in, float(len(message.data)), "fragment_in_rate"
            why = f"more than {s.fragment_bytes_per_second / MiB:g} MiB/s of fragments written"
        elif isinstance(message, GetFragment):
            limiter, cost, reason = self._bytes_out, 0.0, "fragment_out_rate"
            why = f"more than {s.fragment_bytes_per_second / MiB:g} MiB/s of fragments read"
        else:
            return None
        wait = limiter.take(peer, cost, now)
        return None if wait == 0.0 else Refusal(reason, why, wait)
