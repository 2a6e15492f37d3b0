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

import select
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import trio

from p2pstore.core.handshakes import RECLAIMED, Admitted, HandshakeGate, HandshakeLimits
from p2pstore.net.refusals import RefusalLog

T = TypeVar("T")

MAX_REFUSED_OPEN: Final = 256
"""Connections refused at the door left open at once, to be closed in one go."""


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


class RefusedConnections:
    """Connections the door refused, closed once no other connection waits in the listener's
    backlog (or ``MAX_REFUSED_OPEN`` are open), not each as soon as it is refused.

    Why: a close wakes the peer, and on a loaded host the node may not run again for a
    millisecond; a member's connection queued behind a stranger's hundreds would wait for all
    their closes before its handshake could start.  Accepted first, it starts at once.
    """

    def __init__(self, backlog_waiting: Callable[[], bool]) -> None:
        self.streams: list[trio.SocketStream] = []
        self._backlog_waiting = backlog_waiting

    async def close_unless_more_wait(self) -> None:
        """Close them all, unless fewer than the bound are open and more connections wait."""
        if self.streams and (len(self.streams) >= MAX_REFUSED_OPEN or not self._backlog_waiting()):
            await self.close()

    async def close(self) -> None:
        while self.streams:  # each closed before its checkpoint, even if cancelled there
            await trio.aclose_forcefully(self.streams.pop())


def backlog_waiting(listener: trio.SocketListener) -> Callable[[], bool]:
    """Whether a connection waits in ``listener``'s backlog, asked without waiting."""
    poller = select.poll()
    poller.register(listener.socket.fileno(), select.POLLIN)
    return lambda: bool(poller.poll(0))
