"""The seam between the RPC session and a transport: an authenticated, ordered link of frames.

Why frames and not bytes: the in-memory network models loss, latency and bandwidth per frame,
which a byte stream cannot express; TCP+TLS implements the same contract with length-prefixed
frames.  The peer's identity on a link always comes from its verified certificate.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from p2pstore.errors import ConfigError, PeerRefused
from p2pstore.identity import NodeCredentials, PeerIdentity, Role, TrustAnchor, short_id
from p2pstore.net.address import parse_address


class FrameLink(Protocol):
    """One authenticated connection to one peer, carrying whole frames in order.

    ``send_frame`` may be called from several tasks at once; ``receive_frame`` from one task only.
    """

    @property
    def peer(self) -> PeerIdentity:
        """Who is on the other end, as its certificate says."""
        ...

    @property
    def remote_address(self) -> str:
        """Where the other end is connected from, for logs ("host:port" or "mem:name")."""
        ...

    @property
    def outbound(self) -> bool:
        """True if this side dialled the connection."""
        ...

    async def send_frame(self, payload: bytes) -> None:
        """Send one frame.  Raises :class:`~p2pstore.errors.PeerUnreachable` if the link broke."""
        ...

    async def receive_frame(self) -> bytes | None:
        """The next frame, or None when the peer closed the link cleanly.

        Raises :class:`~p2pstore.errors.RemoteProtocolError` for a malformed, oversized or
        truncated frame and :class:`~p2pstore.errors.PeerUnreachable` if the link broke.
        """
        ...

    async def aclose(self) -> None:
        """Close the link; never raises for a link that is already broken."""
        ...


LinkHandler = Callable[[FrameLink], Awaitable[None]]
"""Called by a listening transport, in its own nursery, for each authenticated inbound link."""


class Transport(Protocol):
    """Makes authenticated links: dials peers and accepts them."""

    trust: TrustAnchor
    """The mesh CA and revocation list peers are admitted by."""

    def reload_trust(self, trust: TrustAnchor) -> None:
        """Admit peers by ``trust`` from now on (a newer revocation list)."""
        ...

    def reload_credentials(self, credentials: NodeCredentials) -> None:
        """Present ``credentials`` on the links made from now on (a renewed certificate)."""
        ...

    @property
    def listen_address(self) -> str:
        """The address peers dial to reach this transport (valid once ``listen`` started)."""
        ...

    async def listen(
        self, handler: LinkHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept peers until cancelled; ``task_status.started()`` once peers can connect.

        Each authenticated link is passed to ``handler`` in a task of this service; peers that
        fail authentication are logged and dropped without disturbing the others.
        """
        ...

    async def connect(self, address: str, expected_id: bytes | None = None) -> FrameLink:
        """Dial ``address`` and authenticate the peer.

        Raises :class:`~p2pstore.errors.PeerRefused` if its certificate is not valid for this
        mesh or belongs to another node than ``expected_id``, and
        :class:`~p2pstore.errors.PeerUnreachable` if it cannot be reached in time.
        """
        ...


def check_dialled_peer(address: str, peer: PeerIdentity, expected_id: bytes | None) -> None:
    """Raise :class:`PeerRefused` unless the peer we dialled is a node, and the one we wanted."""
    if expected_id is not None and peer.node_id != expected_id:
        raise PeerRefused(
            f"{address}: expected node {short_id(expected_id)} but the certificate belongs to "
            f"{short_id(peer.node_id)} ({peer.datacenter}, {peer.region})",
            reason="wrong-node-id",
        )
    if peer.role is not Role.NODE:
        raise PeerRefused(
            f"{address}: {short_id(peer.node_id)} holds a client certificate and cannot serve "
            "as a node",
            reason="not-a-node",
        )


def source_of(remote_address: str) -> str:
    """Who is behind ``remote_address`` for per-address bounds: the host of "host:port", an
    IPv6 host's /64 (one site's prefix, which a single attacker gets whole), or the whole
    string for other addresses (the in-memory network's names)."""
    try:
        host, _port = parse_address(remote_address)
    except ConfigError:
        return remote_address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
