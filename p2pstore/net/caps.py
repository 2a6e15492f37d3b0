"""Caps on inbound sessions: per source address (greeting included) and per client identity.

Why both: a certificate holder can open sessions from one host without end, and a stranger can
complete TLS handshakes without an identity worth counting; nodes hold one session per node id
anyway, but clients (several ``p2pstore put`` at once) may hold several.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from p2pstore.identity import PeerIdentity, Role
from p2pstore.net.refusals import RefusalLog


class SessionCaps:
    """Counts inbound sessions by source and tells which one is one too many."""

    def __init__(self, per_address: int, per_client: int, refusals: RefusalLog) -> None:
        if per_address < 1 or per_client < 1:
            raise ValueError("session caps must be at least 1")
        self.per_address = per_address
        self.per_client = per_client
        self._refusals = refusals
        self._from: dict[str, int] = {}

    @contextmanager
    def inbound(self, source: str) -> Iterator[bool]:
        """Holds a place for a session from ``source`` while open; yields False (and logs the
        refusal) if ``source`` already holds its most."""
        held = self._from.get(source, 0)
        if held >= self.per_address:
            self._refusals.refused(
                source,
                "sessions_per_address",
                f"{held} sessions from {source} already, the most allowed: connection closed",
            )
            yield False
            return
        self._from[source] = held + 1
        try:
            yield True
        finally:
            left = self._from[source] - 1
            if left:
                self._from[source] = left
            else:
                del self._from[source]

    def client_excess(self, peer: PeerIdentity, open_clients: Iterable[PeerIdentity]) -> str | None:
        """Why one more client session of ``peer`` is refused, or None if it is not."""
        if peer.role is not Role.CLIENT:
            return None
        if sum(1 for other in open_clients if other.node_id == peer.node_id) < self.per_client:
            return None
        why = f"too many sessions: this client identity already holds {self.per_client} here"
        self._refusals.refused(peer.node_id.hex(), "sessions_per_client", why)
        return why
