"""Who may start a TLS handshake with the node, before anyone knows who they are.

Strategy: anyone who can open a TCP connection is offered a handshake, which costs the node a
key exchange and a slot until it ends.  So its bounds are by source address (an IPv4 host, an
IPv6 /64, as :func:`p2pstore.net.link.source_of` names them):

- at most ``per_address`` handshakes at once from one address;
- ``rate`` handshakes a second from one address (a token bucket of ``burst``); a handshake that
  ends with a valid certificate gives its token back, so what the bucket limits is the failed
  ones (scanners, strangers, stalls), and a member is never slowed by its own connections;
- ``slots`` handshakes at once in all, of which addresses no valid certificate came from within
  ``member_memory`` seconds (strangers) hold at most ``slots - member_slots``.  A handshake that
  finds no slot of its kind takes the oldest stranger's (whose connection the driver closes);
  only a stranger arriving while members hold the rest is refused.  Strangers from many
  addresses can thus slow other strangers, never members, and stalling an honest stranger
  needs more new connections a second than honest handshakes take to finish.

Pure: time is an argument; the driver (:mod:`p2pstore.net.handshakes`) closes what is reclaimed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from p2pstore.core.ratelimit import RateLimiter

PER_ADDRESS: Final = "handshakes_per_address"
RATE: Final = "handshake_rate"
SLOTS: Final = "handshake_slots"
RECLAIMED: Final = "handshake_reclaimed"
"""Refusal reasons (the ``reason`` label of ``p2pstore_refusals_total``)."""


@dataclass(frozen=True, slots=True)
class HandshakeLimits:
    """The bounds above, with their defaults."""

    slots: int = 64
    member_slots: int = 16
    """Of ``slots``, how many strangers can never hold."""
    per_address: int = 16
    rate: float = 4.0
    """Failed handshakes a second one address may start, once its ``burst`` is spent."""
    burst: float = 32.0
    member_memory: float = 86_400.0
    """Seconds an address stays a member's after a valid certificate came from it."""
    max_addresses: int = 4096
    """Member addresses and rate buckets remembered (each; the oldest are forgotten)."""

    def __post_init__(self) -> None:
        if min(self.slots, self.per_address, self.max_addresses) < 1:
            raise ValueError("handshake slots, per address and addresses must be at least 1")
        if not 0 <= self.member_slots < self.slots:
            raise ValueError("need 0 <= handshake slots reserved for members < handshake slots")
        if not (self.rate > 0 and self.burst >= 1):
            raise ValueError("need a handshake rate > 0 and a burst >= 1")
        if not self.member_memory > 0:
            raise ValueError("member_memory must be more than 0")


@dataclass(frozen=True, slots=True)
class Admitted:
    """Start the handshake ``ticket``; first close the one ``reclaim`` names, if any."""

    ticket: int
    member: bool
    reclaim: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """Close the connection at once; ``reason`` is one of the refusal reasons above."""

    reason: str
    describe: str


@dataclass(slots=True)
class _Handshake:
    source: str
    member: bool


class HandshakeGate:
    """The handshakes in progress and the addresses members came from (see the module doc)."""

    def __init__(self, limits: HandshakeLimits | None = None) -> None:
        self.limits = limits or HandshakeLimits()
        self._rates = RateLimiter(
            self.limits.rate, self.limits.burst, max_keys=self.limits.max_addresses
        )
        self._members: OrderedDict[str, float] = OrderedDict()  # source -> last seen
        self._running: dict[int, _Handshake] = {}
        self._strangers: OrderedDict[int, None] = OrderedDict()  # tickets, oldest first
        self._per_source: dict[str, int] = {}
        self._next_ticket = 0

    @property
    def in_progress(self) -> int:
        return len(self._running)

    @property
    def strangers(self) -> int:
        return len(self._strangers)

    def from_source(self, source: str) -> int:
        return self._per_source.get(source, 0)

    def is_member(self, source: str, now: float) -> bool:
        seen = self._members.get(source)
        return seen is not None and now - seen < self.limits.member_memory

    def seen_member(self, source: str, now: float) -> None:
        """A valid certificate came from ``source`` (a handshake either way)."""
        self._members.pop(source, None)
        self._members[source] = now
        while len(self._members) > self.limits.max_addresses:
            self._members.popitem(last=False)

    def admit(self, source: str, now: float) -> Admitted | Refused:
        """Whether a connection just accepted from ``source`` may start its handshake."""
        limits = self.limits
        if self.from_source(source) >= limits.per_address:
            return Refused(PER_ADDRESS, f"more than {limits.per_address} TLS handshakes at once")
        member = self.is_member(source, now)
        reclaim: int | None = None
        if member:
            if len(self._running) >= limits.slots:
                if not self._strangers:
                    return Refused(SLOTS, f"all {limits.slots} handshake slots held by members")
                reclaim = next(iter(self._strangers))
        elif len(self._strangers) >= limits.slots - limits.member_slots:
            reclaim = next(iter(self._strangers))
        elif len(self._running) >= limits.slots:
            return Refused(SLOTS, f"all {limits.slots} handshake slots in use")
        wait = self._rates.take(source, 1.0, now)
        if wait > 0:
            return Refused(RATE, f"more than {limits.rate:g} failed TLS handshakes a second")
        if reclaim is not None:
            self._end(reclaim)
        ticket = self._next_ticket
        self._next_ticket += 1
        self._running[ticket] = _Handshake(source, member)
        self._per_source[source] = self.from_source(source) + 1
        if not member:
            self._strangers[ticket] = None
        return Admitted(ticket, member, reclaim)

    def finished(self, ticket: int, now: float, *, authenticated: bool) -> None:
        """Handshake ``ticket`` ended (``authenticated``: with a valid certificate).  A ticket
        already reclaimed is ignored."""
        handshake = self._end(ticket)
        if handshake is not None and authenticated:
            self._rates.refund(handshake.source, 1.0, now)
            self.seen_member(handshake.source, now)

    def _end(self, ticket: int) -> _Handshake | None:
        handshake = self._running.pop(ticket, None)
        if handshake is None:
            return None
        self._strangers.pop(ticket, None)
        left = self._per_source[handshake.source] - 1
        if left:
            self._per_source[handshake.source] = left
        else:
            del self._per_source[handshake.source]
        return handshake
