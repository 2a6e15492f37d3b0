"""The listener's door: which accepted connections get a TLS handshake, and ending the
stranger's handshake whose slot a newcomer takes.

Why a module of its own: the pure :class:`~p2pstore.core.handshakes.HandshakeGate` decides;
this drives it with trio's clock, closes what it reclaims (each handshake runs in a cancel
scope made when it is admitted, so even one not started yet can be reclaimed), and reports
every refusal to the node's :class:`~p2pstore.net.refusals.RefusalLog` (counted, logged once per
address per interval).  The accept loop never waits on it: a connection is admitted or closed
at once, so a full pool cannot leave members queued in the kernel's backlog behind strangers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from p2pstore.core.handshakes import RECLAIMED, Admitted, HandshakeGate, HandshakeLimits
from p2pstore.net.refusals import RefusalLog

T = TypeVar("T")


class HandshakeDoor:
    """Admits handshakes under a :class:`HandshakeGate` and runs them in reclaimable scopes."""

    def __init__(self, limits: HandshakeLimits, refusals: RefusalLog) -> None:
        self.gate = HandshakeGate(limits)
        self.refusals = refusals
        self._scopes: dict[int, trio.CancelScope] = {}

    def admit(self, source: str) -> int | None:
        """A ticket for a connection just accepted from ``source``, or None: close it."""
        decision = self.gate.admit(source, trio.current_time())
        if not isinstance(decision, Admitted):
            self.refusals.refused(source, decision.reason, f"{decision.describe} from {source}")
            return None
        if decision.reclaim is not None:
            self._scopes[decision.reclaim].cancel()
        self._scopes[decision.ticket] = trio.CancelScope()
        return decision.ticket

    async def handshake(
        self, ticket: int, source: str, authenticate: Callable[[], Awaitable[T]]
    ) -> T | None:
        """``authenticate()`` as handshake ``ticket``; None if its slot was reclaimed (the
        caller closes the connection).  Its errors pass through, the slot freed either way."""
        authenticated = False
        try:
            with self._scopes[ticket]:
                result = await authenticate()
                authenticated = True
                return result
            self.refusals.refused(
                source, RECLAIMED, f"a stranger's TLS handshake from {source} gave its slot"
            )
            return None
        finally:
            del self._scopes[ticket]
            self.gate.finished(ticket, trio.current_time(), authenticated=authenticated)

    def seen_member(self, source: str) -> None:
        """A valid certificate came from ``source`` (on a connection the node dialled)."""
        self.gate.seen_member(source, trio.current_time())
