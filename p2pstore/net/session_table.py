"""Who a node has sessions with: one per peer node, any number of inbound clients, and who is
told when that changes.

Strategy: one session per peer pair.  When both sides dial each other at once, both keep the
connection dialled by the smaller node id (:func:`keeps_new`), so they agree without talking.
Clients are never dialled back, so their sessions are not indexed by id, and one client
identity may run several processes (two ``p2pstore put`` at once).  Listeners (the DHT's
routing table) hear of every peer node that comes or goes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from p2pstore.errors import PeerUnreachable, RemoteProtocolError
from p2pstore.identity import PeerIdentity, Role, TrustAnchor, short_id
from p2pstore.net.session import Session
from p2pstore.wire import PeerSummary, StatusReply

log = logging.getLogger("p2pstore.node")


class PeerListener(Protocol):
    """Told when a session with a peer comes up or goes away (e.g. the DHT's routing table),
    and when the node applies a reloaded revocation list (e.g. the DHT's record store)."""

    def peer_up(self, peer: PeerIdentity, address: str) -> None: ...

    def peer_down(self, peer: PeerIdentity) -> None: ...

    def trust_changed(self, trust: TrustAnchor) -> None: ...


@dataclass(frozen=True, slots=True)
class PeerView:
    """What this node knows of one connected peer."""

    identity: PeerIdentity
    address: str
    outbound: bool
    connected_since: float
    version: int = 0
    """The wire protocol version settled with the peer."""


def keeps_new(local: bytes, peer: bytes, new_outbound: bool, old_outbound: bool) -> bool:
    """Whether a second session with ``peer`` replaces the first: only if the new one was
    dialled by the smaller id and the old one was not (both sides decide alike)."""
    wanted = min(peer, local)
    new_dialler = local if new_outbound else peer
    old_dialler = local if old_outbound else peer
    return new_dialler == wanted and old_dialler != wanted


def listen_address(session: Session) -> str:
    """Where the peer of ``session`` says it listens, else where it came from."""
    hello = session.peer_hello
    return (hello.listen_address if hello else "") or session.link.remote_address


class SessionTable:
    """The node's sessions.  ``close_later`` closes a replaced session in the node's nursery."""

    def __init__(self, local_id: bytes, close_later: Callable[[Session, str], None]) -> None:
        self._local = local_id
        self._close_later = close_later
        self._sessions: dict[bytes, Session] = {}
        self._clients: set[Session] = set()
        self._since: dict[bytes, float] = {}
        self._changed = trio.Event()
        self.listeners: list[PeerListener] = []

    def get(self, node_id: bytes) -> Session | None:
        """The session with peer node ``node_id``, if any."""
        return self._sessions.get(node_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._sessions

    def every(self) -> list[Session]:
        """Every session, peer nodes' then clients'."""
        return [*self._sessions.values(), *self._clients]

    def clients(self) -> list[PeerIdentity]:
        return [session.peer for session in self._clients]

    def peers(self) -> list[PeerView]:
        """The peer nodes with a session, sorted by node id."""
        return [
            PeerView(
                identity=session.peer,
                address=listen_address(session),
                outbound=session.link.outbound,
                connected_since=self._since[node_id],
                version=session.version,
            )
            for node_id, session in sorted(self._sessions.items())
        ]

    def counts(self) -> dict[str, int]:
        """Open sessions by the peer's role (``node``, ``client``)."""
        counts = {role.value: 0 for role in Role}
        for session in self.every():
            counts[session.peer.role.value] += 1
        return counts

    async def wait_changed(self) -> None:
        """Return the next time a peer connects or disconnects."""
        await self._changed.wait()

    def register(self, session: Session, now: float) -> bool:
        """Add a greeted session; False if it loses the tie-break against an existing one."""
        node_id = session.peer.node_id
        if session.peer.role is Role.CLIENT and not session.link.outbound:
            self._clients.add(session)
            self._notify()
            log.info(
                "client %s connected from %s",
                session.describe(),
                session.link.remote_address,
                extra={"event": "client_connected", "peer": node_id.hex()},
            )
            return True
        existing = self._sessions.get(node_id)
        if existing is not None and not existing.closed:
            if not keeps_new(self._local, node_id, session.link.outbound, existing.link.outbound):
                return False
            self._close_later(existing, "duplicate connection")
        self._sessions[node_id] = session
        self._since[node_id] = now
        self._notify()
        for listener in self.listeners:
            listener.peer_up(session.peer, listen_address(session))
        peer = session.peer
        log.info(
            "peer %s (%s, %s) connected %s %s",
            short_id(node_id),
            peer.datacenter,
            peer.region,
            "to" if session.link.outbound else "from",
            session.link.remote_address,
            extra={
                "event": "peer_connected",
                "peer": node_id.hex(),
                "datacenter": peer.datacenter,
                "region": peer.region,
            },
        )
        return True

    def unregister(self, session: Session) -> None:
        if session in self._clients:
            self._clients.discard(session)
            self._notify()
            return
        node_id = session.peer.node_id
        if self._sessions.get(node_id) is session:
            del self._sessions[node_id]
            del self._since[node_id]
            self._notify()
            for listener in self.listeners:
                listener.peer_down(session.peer)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def status_reply(identity: PeerIdentity, address: str, peers: list[PeerView]) -> StatusReply:
    """A node's answer to a status request: who it is and the nodes it has sessions with."""
    return StatusReply(
        node_id=identity.node_id,
        datacenter=identity.datacenter,
        region=identity.region,
        listen_address=address,
        peers=tuple(
            PeerSummary(
                node_id=view.identity.node_id,
                datacenter=view.identity.datacenter,
                region=view.identity.region,
                address=view.address,
                connected=True,
            )
            for view in peers
            if view.identity.role is Role.NODE
        ),
    )


def log_session_error(session: Session, error: RemoteProtocolError | PeerUnreachable) -> None:
    """Say why a session ended on an error (``session_error``)."""
    kind = type(error).__name__
    log.warning(
        "session with %s at %s ended: %s: %s",
        session.describe(),
        session.link.remote_address,
        kind,
        error,
        extra={"event": "session_error", "peer": session.peer.node_id.hex(), "error": kind},
    )
