"""Refusals under a bound: counted for Prometheus, logged once per peer per interval.

Why not one log line per refusal: a flood is thousands of refusals a second, and logging each
would turn a bounded attack on the node into an unbounded one on its disk.  The first refusal
of a peer (a node id, or a source address before any identity is known) is logged at once;
later ones are counted and the count is logged with the first refusal after ``interval``.  At
most ``max_tracked`` peers are remembered (the oldest are forgotten), so memory is bounded too.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable

import trio

log = logging.getLogger("p2pstore.net")

LOG_INTERVAL = 60.0


class _Peer:
    __slots__ = ("last_logged", "last_refused", "reasons")

    def __init__(self) -> None:
        self.last_logged = -float("inf")
        self.last_refused = -float("inf")
        self.reasons: Counter[str] = Counter()


class RefusalLog:
    """Where every bound reports a refusal.  ``count(reason)`` is told each one (metrics)."""

    def __init__(
        self,
        count: Callable[[str], None] | None = None,
        *,
        interval: float = LOG_INTERVAL,
        max_tracked: int = 1024,
    ) -> None:
        self._count = count
        self.interval = interval
        self.max_tracked = max_tracked
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        self.total: Counter[str] = Counter()
        """Refusals by reason since the start (for tests and status pages)."""

    def refused(self, who: str, reason: str, describe: str) -> None:
        """``who`` (a node id in hex, or an address) was refused for ``reason``;
        ``describe`` says what happened, for the log line."""
        self.total[reason] += 1
        if self._count is not None:
            self._count(reason)
        now = trio.current_time()
        peer = self._peers.get(who)
        if peer is None:
            peer = self._peers[who] = _Peer()
            while len(self._peers) > self.max_tracked:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(who)
        peer.reasons[reason] += 1
        peer.last_refused = now
        if now - peer.last_logged < self.interval:
            return
        counts = ", ".join(f"{n} {r}" for r, n in sorted(peer.reasons.items()))
        log.warning(
            "limited %s: %s (refusals since the last report: %s)",
            who[:16],
            describe,
            counts,
            extra={
                "event": "peer_limited",
                "peer": who,
                "reason": reason,
                "refusals": sum(peer.reasons.values()),
            },
        )
        peer.last_logged = now
        peer.reasons.clear()

    def limited(self) -> int:
        """Peers refused within the last interval."""
        now = trio.current_time()
        return sum(1 for p in self._peers.values() if now - p.last_refused < self.interval)
