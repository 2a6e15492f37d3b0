"""TCP with mutual TLS 1.3 against the mesh CA: the transport datacenters run.

Strategy: OpenSSL checks the chain against the mesh CA during the handshake (so a certificate
from another CA never gets a session); then :class:`~p2pstore.identity.TrustAnchor` checks the
same certificate again with our revocation list and reads the node id, datacenter and region
from it.  Nothing a peer *says* about itself is trusted.  Every step that waits on the network
has a deadline, and what a stranger can hold is bounded before it has a certificate: handshakes
in progress per source address, their rate per address, and a node-wide pool of which strangers
hold only a share (see :mod:`p2pstore.core.handshakes`).  After the handshake, the connection's
link is a :class:`~p2pstore.net.tls_link.TlsLink`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import trio

from p2pstore.core.handshakes import HandshakeLimits
from p2pstore.errors import ConfigError, PeerRefused, PeerUnreachable
from p2pstore.identity import NodeCredentials, TrustAnchor
from p2pstore.net.address import format_address, parse_address
from p2pstore.net.budget import ReceiveBudget
from p2pstore.net.handshakes import HandshakeDoor, RefusedConnections, backlog_waiting
from p2pstore.net.link import LinkHandler, check_dialled_peer, source_of
from p2pstore.net.refusals import RefusalLog
from p2pstore.net.tls_link import RECEIVE_SIZE, TlsLink
from p2pstore.net.tls_stream import TlsStream, handshake_failure
from p2pstore.wire import DEFAULT_MAX_FRAME

__all__ = ["RECEIVE_SIZE", "TlsLink", "TlsSettings", "TlsTransport", "make_ssl_contexts"]

log = logging.getLogger("p2pstore.net")

ACCEPT_RETRY = 0.5
"""Seconds the listener pauses when the system refuses a connection (out of descriptors)."""

MiB = 1024 * 1024


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Deadlines and bounds of the TLS transport."""

    connect_timeout: float = 10.0
    handshake_timeout: float = 5.0
    """A TLS handshake takes milliseconds; a stranger that stalls it is dropped after this."""
    max_concurrent_handshakes: int = 64
    max_handshakes_per_address: int = 16
    """Handshakes at once from one source address (IPv6: one /64); more are closed at once."""
    member_handshakes: int = 16
    """Of the handshakes at once, how many strangers (addresses no valid certificate came from
    lately) can never hold (at most half of them)."""
    handshake_rate_per_address: float = 4.0
    handshake_burst_per_address: float = 32.0
    """A token bucket per source address; a handshake with a valid certificate costs nothing."""
    max_frame: int = DEFAULT_MAX_FRAME
    send_timeout: float = 30.0
    """Longest one frame may take to leave; past it the link is considered dead."""
    receive_budget: int = 256 * MiB
    """Bytes of large partial frames the whole node holds at once."""
    receive_budget_per_peer: int = 64 * MiB
    """Of which one peer (node id) holds at most this much."""
    partial_frame_timeout: float | None = 60.0
    """Seconds a frame may take from its first byte to its last (and a large one may wait for
    budget); past it the session ends.  None: no deadline."""

    def __post_init__(self) -> None:
        self.handshake_limits()  # checks them
        if not 0 < self.receive_budget_per_peer <= self.receive_budget:
            raise ValueError("need 0 < receive_budget_per_peer <= receive_budget")
        if self.partial_frame_timeout is not None and self.partial_frame_timeout <= 0:
            raise ValueError("partial_frame_timeout must be more than 0")

    def handshake_limits(self) -> HandshakeLimits:
        slots = self.max_concurrent_handshakes
        return HandshakeLimits(
            slots=slots,
            member_slots=max(0, min(self.member_handshakes, slots // 2)),
            per_address=self.max_handshakes_per_address,
            rate=self.handshake_rate_per_address,
            burst=self.handshake_burst_per_address,
        )


def make_ssl_contexts(
    credentials: NodeCredentials, ca_certificate_path: str
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts: TLS 1.3 only, both sides present and verify certificates."""
    if credentials.key_path is None or credentials.certificate_path is None:
        raise ValueError("the TLS transport needs credentials loaded from files")
    contexts = []
    for purpose in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT):
        context = ssl.SSLContext(purpose)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False  # peers are named by node id, checked after the handshake
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(str(credentials.certificate_path), str(credentials.key_path))
        context.load_verify_locations(cafile=ca_certificate_path)
        if purpose == ssl.PROTOCOL_TLS_SERVER:
            context.num_tickets = 0  # no session resumption: links are long-lived
        contexts.append(context)
    return contexts[0], contexts[1]


class TlsTransport:
    """:class:`~p2pstore.net.link.Transport` over TCP with mutual TLS 1.3."""

    def __init__(
        self,
        credentials: NodeCredentials,
        trust: TrustAnchor,
        ca_certificate_path: str,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        settings: TlsSettings | None = None,
        clock: Callable[[], datetime] = _wall_clock,
        refusals: RefusalLog | None = None,
    ) -> None:
        """``refusals`` hears of connections and frames refused under a bound (the node's own
        log, so its metrics count them); a private one by default."""
        self.credentials = credentials
        self.trust = trust
        self.settings = settings or TlsSettings()
        self.refusals = refusals or RefusalLog()
        self.budget = ReceiveBudget(
            self.settings.receive_budget, self.settings.receive_budget_per_peer
        )
        self.handshakes = HandshakeDoor(self.settings.handshake_limits(), self.refusals)
        self._ca_certificate_path = ca_certificate_path
        self._server_context, self._client_context = make_ssl_contexts(
            credentials, ca_certificate_path
        )
        self._listen_host = listen_host
        self._listen_port = listen_port
        self._bound_port: int | None = None
        self._clock = clock

    @property
    def listen_address(self) -> str:
        port = self._bound_port if self._bound_port is not None else self._listen_port
        return format_address(self._listen_host, port)

    def reload_trust(self, trust: TrustAnchor) -> None:
        """Use a new revocation list for the connections made from now on."""
        self.trust = trust

    def reload_credentials(self, credentials: NodeCredentials) -> None:
        """Present ``credentials`` (read again from their files) in the handshakes from now on;
        links already made keep theirs.  Raises what :func:`make_ssl_contexts` raises."""
        contexts = make_ssl_contexts(credentials, self._ca_certificate_path)
        self._server_context, self._client_context = contexts
        self.credentials = credentials

    def levels(self) -> dict[str, float]:
        """How full the transport's bounds are (for the node's metrics)."""
        return {
            "receive_buffer_bytes": self.budget.in_use,
            "handshakes_in_progress": self.handshakes.gate.in_progress,
        }

    async def listen(
        self, handler: LinkHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            listeners = await trio.open_tcp_listeners(self._listen_port, host=self._listen_host)
        except OSError as exc:
            raise PeerUnreachable(
                f"cannot listen on {self.listen_address}: {exc.strerror or exc}"
            ) from exc
        sockname = listeners[0].socket.getsockname()
        self._bound_port = int(sockname[1])
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, handler, nursery)
            task_status.started()

    async def _accept_loop(
        self,
        listener: trio.SocketListener,
        handler: LinkHandler,
        nursery: trio.Nursery,
    ) -> None:
        refused = RefusedConnections(backlog_waiting(listener))
        async with listener:
            try:
                while True:
                    await refused.close_unless_more_wait()
                    try:
                        stream = await listener.accept()
                    except OSError as exc:  # out of file descriptors or memory: it passes
                        log.warning(
                            "cannot accept a connection: %s; retrying in %gs",
                            exc.strerror or exc,
                            ACCEPT_RETRY,
                            extra={"event": "accept_failed"},
                        )
                        await refused.close()
                        await trio.sleep(ACCEPT_RETRY)
                        continue
                    source = source_of(_peer_address(stream))
                    ticket = self.handshakes.admit(source)
                    if ticket is None:
                        refused.streams.append(stream)
                    else:
                        nursery.start_soon(self._accept_one, stream, source, ticket, handler)
            finally:
                await refused.close()

    async def _accept_one(
        self, stream: trio.SocketStream, source: str, ticket: int, handler: LinkHandler
    ) -> None:
        remote = _peer_address(stream)
        try:
            link = await self.handshakes.handshake(
                ticket, source, lambda: self._authenticate(stream, remote, server_side=True)
            )
        except PeerRefused as refused:
            log.warning(
                "refused peer at %s: %s",
                remote,
                refused,
                extra={"event": "peer_refused", "remote": remote, "reason": refused.reason},
            )
            return
        except PeerUnreachable as lost:
            log.info(
                "connection from %s lost during handshake: %s",
                remote,
                lost,
                extra={"event": "handshake_lost", "remote": remote},
            )
            return
        if link is None:  # its slot went to a newcomer
            await trio.aclose_forcefully(stream)
            return
        try:
            await handler(link)
        finally:
            await link.aclose()

    async def connect(self, address: str, expected_id: bytes | None = None) -> TlsLink:
        try:
            host, port = parse_address(address)
        except ConfigError as exc:
            # Addresses come from peers too (FIND_NODE replies, records): a bad one is that
            # peer's problem, never a reason for the caller to crash.
            raise PeerUnreachable(f"cannot dial {address!r}: {exc}") from exc
        try:
            with trio.fail_after(self.settings.connect_timeout):
                stream = await trio.open_tcp_stream(host, port)
        except trio.TooSlowError as exc:
            raise PeerUnreachable(
                f"could not connect to {address} within {self.settings.connect_timeout:g}s"
            ) from exc
        except OSError as exc:
            raise PeerUnreachable(f"could not connect to {address}: {exc.strerror or exc}") from exc
        link = await self._authenticate(stream, address, server_side=False)
        try:
            check_dialled_peer(address, link.peer, expected_id)
        except PeerRefused:
            await link.aclose()
            raise
        self.handshakes.seen_member(source_of(address))
        return link

    async def _authenticate(
        self, stream: trio.SocketStream, remote: str, *, server_side: bool
    ) -> TlsLink:
        """Handshake and check the peer's certificate; closes ``stream`` on any failure."""
        context = self._server_context if server_side else self._client_context
        ssl_stream = TlsStream(stream, context, server_side=server_side)
        try:
            with trio.fail_after(self.settings.handshake_timeout):
                await ssl_stream.do_handshake()
            der = ssl_stream.peer_certificate()
            if der is None:
                raise PeerRefused(f"{remote} presented no certificate", reason="no-certificate")
            identity = self.trust.verify_der(der, self._clock())
        except trio.TooSlowError as exc:
            await trio.aclose_forcefully(ssl_stream)
            raise PeerUnreachable(
                f"TLS handshake with {remote} took longer than {self.settings.handshake_timeout:g}s"
            ) from exc
        except trio.BrokenResourceError as exc:
            await trio.aclose_forcefully(ssl_stream)
            raise handshake_failure(remote, exc) from exc
        except PeerRefused:
            await trio.aclose_forcefully(ssl_stream)
            raise
        return TlsLink(
            ssl_stream,
            identity,
            remote,
            outbound=not server_side,
            max_frame=self.settings.max_frame,
            send_timeout=self.settings.send_timeout,
            budget=self.budget,
            partial_frame_timeout=self.settings.partial_frame_timeout,
            refusals=self.refusals,
        )


def _peer_address(stream: trio.SocketStream) -> str:
    try:
        name = stream.socket.getpeername()
    except OSError:
        return "unknown"
    return format_address(str(name[0]), int(name[1]))
