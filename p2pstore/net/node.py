"""A peer of the mesh: a transport, its sessions, and the handlers that answer requests.

Strategy: the node owns one nursery.  The transport's listener and one dialer per bootstrap peer
run in it; every authenticated link becomes a :class:`Session` run in the task that received it,
kept in the :class:`~p2pstore.net.session_table.SessionTable` (one session per peer pair).
Whatever a peer sends can end
that peer's session, never the node: protocol errors and broken links are logged and the session
is dropped, and the dialers reconnect to bootstrap peers with capped exponential backoff.
Every peer is bounded: inbound sessions per source address and per client identity, and the
requests it may have handled at once and per second (:mod:`p2pstore.core.admission`); what is
refused is answered ``busy`` with a retry hint, which this node's own requests honour.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

import trio

from p2pstore import __version__
from p2pstore.core.admission import Admission, AdmissionSettings
from p2pstore.errors import (
    IdentityError,
    PeerRefused,
    PeerUnreachable,
    RemoteError,
    RemoteProtocolError,
    RequestTimeout,
)
from p2pstore.identity import NodeCredentials, PeerIdentity, Role, TrustAnchor, short_id
from p2pstore.net.caps import SessionCaps
from p2pstore.net.dispatch import Dispatcher, Handler
from p2pstore.net.link import FrameLink, Transport, source_of
from p2pstore.net.metrics import OK, MeteredLink, NodeMetrics, bounded_code
from p2pstore.net.refusals import RefusalLog
from p2pstore.net.session import Session, SessionSettings, retrying_busy
from p2pstore.net.session_table import (
    PeerListener,
    PeerView,
    SessionTable,
    log_session_error,
    status_reply,
)
from p2pstore.net.version_policy import version_refusal, warn_unspoken
from p2pstore.wire import (
    SPOKEN_VERSIONS,
    Hello,
    Message,
    Ping,
    Pong,
    StatusRequest,
    make_hello,
)
from p2pstore.wire.versions import offer

log = logging.getLogger("p2pstore.node")


class _SessionOutcome(enum.Enum):
    DUPLICATE = "lost the tie-break against an existing session"
    FAILED_GREETING = "ended before or during its greeting"
    REFUSED = "was over a bound on sessions and closed"
    SERVED = "was registered and served until it ended"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """Timings of a node; the defaults suit a datacenter, tests shrink them."""

    session: SessionSettings = field(default_factory=SessionSettings)
    reconnect_initial: float = 1.0
    reconnect_max: float = 60.0
    stop_timeout: float = 5.0
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    max_sessions_per_client: int = 8
    """Sessions one client identity may hold here (a few ``p2pstore put`` at once)."""
    max_sessions_per_address: int = 64
    """Inbound sessions (greeting included) from one source address (IPv6: one /64)."""
    protocol_versions: tuple[int, ...] = SPOKEN_VERSIONS
    """Wire versions offered at Hello (a test offers one to act as a node of that release)."""


class Node:
    """One mesh peer.  Start with ``await nursery.start(node.run)``; stop with :meth:`stop`."""

    def __init__(
        self,
        credentials: NodeCredentials,
        transport: Transport,
        *,
        bootstrap: tuple[str, ...] = (),
        advertise: str | None = None,
        settings: NodeSettings | None = None,
        listen: bool = True,
        metrics: NodeMetrics | None = None,
        refusals: RefusalLog | None = None,
    ) -> None:
        """``metrics`` defaults to a private :class:`NodeMetrics`; the node's services
        (fragments, DHT) count on the same one.  ``refusals`` (shared with the transport, so
        one log throttles both) defaults to one counting into ``metrics``."""
        self.credentials = credentials
        self.identity = credentials.identity
        self.transport = transport
        self.bootstrap = bootstrap
        self.settings = settings or NodeSettings()
        self._advertise = advertise
        self._listen = listen
        self.metrics = metrics or NodeMetrics()
        self.metrics.watch_peers(self.session_counts)
        self.refusals = refusals or RefusalLog(self.metrics.record_refusal)
        self.admission = Admission(self.settings.admission)
        self.metrics.watch_limits(
            lambda: {
                "requests_in_flight": self.admission.in_flight,
                "limited_peers": self.refusals.limited(),
            }
        )
        self._caps = SessionCaps(
            self.settings.max_sessions_per_address,
            self.settings.max_sessions_per_client,
            self.refusals,
        )
        self._sessions = SessionTable(
            self.identity.node_id, lambda session, why: self._spawn(session.close, why)
        )
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._dialing: dict[bytes, trio.Event] = {}
        self._renewal_hooks: list[Callable[[NodeCredentials], None]] = []
        self.allowed_versions: frozenset[int] | None = None
        """The wire versions the mesh policy allows (None: any), see :meth:`allow_versions`."""
        self.dispatcher = Dispatcher(self.admission, self.refusals, self.metrics)
        self.dispatcher.handle(Ping, self._on_ping)
        self.dispatcher.handle(StatusRequest, self._on_status)

    # -- service ----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The address peers should dial to reach this node."""
        if not self._listen:
            return ""  # a client: peers cannot dial it
        return self._advertise or self.transport.listen_address

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, dial the bootstrap peers, and serve until cancelled or :meth:`stop`."""
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._listen:
                    await nursery.start(self.transport.listen, self._accept)
                    self._log_listening()
                for address in self.bootstrap:
                    if address != self.address:
                        nursery.start_soon(self._keep_connected, address)
                task_status.started()
                await trio.sleep_forever()  # sessions come and go; the node lives until stopped

    def _log_listening(self) -> None:
        bound = self.transport.listen_address
        log.info(
            "node %s (%s, %s) listening on %s%s",
            short_id(self.identity.node_id),
            self.identity.datacenter,
            self.identity.region,
            bound,
            f", advertised to peers as {self.address}" if self.address != bound else "",
            extra={"event": "listening", "address": self.address, "bound": bound},
        )

    async def stop(self, reason: str = "node shutting down") -> None:
        """Say goodbye to every peer (bounded by ``stop_timeout``), then end :meth:`run`."""
        with trio.move_on_after(self.settings.stop_timeout):
            async with trio.open_nursery() as nursery:
                for session in self._sessions.every():
                    nursery.start_soon(session.close, reason)
        if self._scope is not None:
            self._scope.cancel()

    def apply_trust(self, trust: TrustAnchor) -> None:
        """Close the sessions of peers whose certificates ``trust`` now revokes, and tell the
        listeners (the DHT drops the records revoked certificates signed)."""
        for listener in self._sessions.listeners:
            listener.trust_changed(trust)
        for session in self._sessions.every():
            if session.peer.serial in trust.revoked_serials:
                log.warning(
                    "closing session with %s: its certificate was revoked",
                    session.describe(),
                    extra={"event": "peer_revoked", "peer": session.peer.node_id.hex()},
                )
                self._spawn(session.close, "certificate revoked")

    def renew_credentials(self, credentials: NodeCredentials) -> None:
        """Present a renewed certificate of the same key, datacenter and region from now on
        (new sessions, records and receipts); sessions already up keep the old one.  Raises
        :class:`IdentityError` if it certifies another node: that is a new node, so restart."""
        old, new = self.identity, credentials.identity
        if (new.node_id, new.datacenter, new.region, new.role) != (
            old.node_id, old.datacenter, old.region, old.role
        ):  # fmt: skip
            raise IdentityError(
                f"the certificate is for {new.describe()}, this node is {old.describe()}: "
                "a new key, datacenter or region makes a new node; restart it to switch"
            )
        self.transport.reload_credentials(credentials)
        self.credentials, self.identity = credentials, new
        for hook in self._renewal_hooks:
            hook(credentials)

    def on_renewal(self, hook: Callable[[NodeCredentials], None]) -> None:
        """Call ``hook`` with the new credentials after each :meth:`renew_credentials`."""
        self._renewal_hooks.append(hook)

    def allow_versions(self, versions: Collection[int]) -> None:
        """The mesh policy's wire versions (empty: any): offered from now on, and sessions
        settled on another one are closed, saying why."""
        self.allowed_versions = frozenset(versions) or None
        warn_unspoken(self.allowed_versions, self.settings.protocol_versions)
        for session in self._sessions.every():
            if version_refusal(session, self.allowed_versions) is not None:
                self._spawn(session.close, "wire protocol version not allowed by the mesh policy")

    def handle(self, message_type: type[Message], handler: Handler) -> None:
        """Answer requests of ``message_type`` with ``handler`` (one handler per type)."""
        self.dispatcher.handle(message_type, handler)

    @property
    def listeners(self) -> list[PeerListener]:
        """Who hears of sessions coming and going (see :meth:`add_listener`)."""
        return self._sessions.listeners

    def add_listener(self, listener: PeerListener) -> None:
        """Tell ``listener`` about every session that comes up or goes away from now on."""
        self._sessions.listeners.append(listener)

    # -- peers ------------------------------------------------------------------------------

    def peers(self) -> list[PeerView]:
        """The peers this node has a session with, sorted by node id."""
        return self._sessions.peers()

    async def wait_peers_changed(self) -> None:
        """Return the next time a peer connects or disconnects."""
        await self._sessions.wait_changed()

    async def request(
        self, node_id: bytes, message: Message, *, timeout: float | None = None
    ) -> Message:
        """Ask a connected peer; raises :class:`PeerUnreachable` if there is no session.

        If the session breaks because a simultaneous connection replaced it (both sides keep
        the same one of two), the request is sent again once, on the session that won.
        """
        outcome = "cancelled"  # until the request ends otherwise
        try:
            reply = await self._request(node_id, message, timeout)
        except RequestTimeout:
            outcome = "timeout"
            raise
        except PeerUnreachable:
            outcome = "unreachable"
            raise
        except RemoteError as refused:
            outcome = bounded_code(refused.code)
            raise
        else:
            outcome = OK
            return reply
        finally:
            self.metrics.record_sent(type(message).__name__, outcome)

    async def _request(self, node_id: bytes, message: Message, timeout: float | None) -> Message:
        budget = self.settings.session.request_timeout if timeout is None else timeout
        return await retrying_busy(lambda left: self._request_once(node_id, message, left), budget)

    async def _request_once(self, node_id: bytes, message: Message, timeout: float) -> Message:
        session = self._sessions.get(node_id)
        if session is None:
            raise PeerUnreachable(f"no session with node {short_id(node_id)}")
        try:
            return await session.request(message, timeout=timeout)
        except RequestTimeout:
            raise
        except PeerUnreachable:
            current = self._sessions.get(node_id)
            if current is None or current is session:
                raise
            return await current.request(message, timeout=timeout)

    async def call(
        self, node_id: bytes, address: str, message: Message, *, timeout: float | None = None
    ) -> Message:
        """Ask the peer ``node_id``, dialling ``address`` first if there is no session with it.

        Concurrent calls to the same peer share one dial.  Raises :class:`PeerRefused` if the
        node at ``address`` is not ``node_id``, :class:`PeerUnreachable` (or its subclass
        :class:`RequestTimeout`) if it cannot be reached or does not answer in time, and
        :class:`RemoteError` if it refuses the request.
        """
        deadline = self.settings.session.request_timeout if timeout is None else timeout
        with trio.move_on_after(deadline) as scope:
            if node_id not in self._sessions:
                await self._dial_once(node_id, address)
            return await self.request(node_id, message, timeout=deadline)
        assert scope.cancelled_caught
        raise RequestTimeout(
            f"node {short_id(node_id)} at {address} did not answer "
            f"{type(message).__name__} within {deadline:g}s"
        )

    async def session_with(
        self, node_id: bytes, address: str, *, timeout: float | None = None
    ) -> PeerIdentity:
        """Who ``node_id`` is, as its certificate proves, dialling ``address`` if there is no
        session yet.  Raises what :meth:`call` raises for the dial."""
        deadline = self.settings.session.request_timeout if timeout is None else timeout
        with trio.move_on_after(deadline):
            if node_id not in self._sessions:
                await self._dial_once(node_id, address)
            session = self._sessions.get(node_id)
            if session is None:
                raise PeerUnreachable(f"node {short_id(node_id)} at {address}: session ended")
            return session.peer
        raise RequestTimeout(
            f"node {short_id(node_id)} at {address}: no session within {deadline:g}s"
        )

    async def _dial_once(self, node_id: bytes, address: str) -> None:
        pending = self._dialing.get(node_id)
        if pending is not None:
            await pending.wait()
            return
        pending = self._dialing[node_id] = trio.Event()
        try:
            await self.connect(address, expected_id=node_id)
        finally:
            del self._dialing[node_id]
            pending.set()

    async def ping(self, node_id: bytes, *, timeout: float | None = None) -> None:
        reply = await self.request(node_id, Ping(nonce=1, padding=b""), timeout=timeout)
        if not isinstance(reply, Pong):
            raise RemoteError(f"expected Pong, got {type(reply).__name__}", code="bad-reply")

    async def connect(self, address: str, expected_id: bytes | None = None) -> PeerIdentity:
        """Dial a peer and keep a session with it in the background; returns who answered."""
        if self._scope is None:
            raise PeerUnreachable("the node is not running")
        link = await self.transport.connect(address, expected_id)
        started = trio.Event()
        identity = link.peer
        self._spawn(self._run_session, link, started)
        await started.wait()
        if identity.node_id not in self._sessions:
            raise PeerUnreachable(f"session with {address} ended during its greeting")
        return identity

    # -- internals --------------------------------------------------------------------------

    def _spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        if self._nursery is None:
            raise PeerUnreachable("the node is not running")
        self._nursery.start_soon(fn, *args)

    async def _accept(self, link: FrameLink) -> None:
        with self._caps.inbound(source_of(link.remote_address)) as admitted:
            if admitted:  # else the transport closes the link
                await self._run_session(link, None)

    async def _keep_connected(self, address: str) -> None:
        """Keep a session with the peer at ``address``: dial it, and redial with capped
        exponential backoff whenever no session with it is left (whoever dialled)."""
        delay = self.settings.reconnect_initial
        known_id: bytes | None = None
        while True:
            while known_id is not None and known_id in self._sessions:
                await self.wait_peers_changed()
            try:
                link = await self.transport.connect(address)
            except PeerRefused as refused:
                log.warning(
                    "bootstrap peer %s refused: %s",
                    address,
                    refused,
                    extra={"event": "peer_refused", "remote": address, "reason": refused.reason},
                )
            except PeerUnreachable as lost:
                log.info(
                    "bootstrap peer %s unreachable: %s",
                    address,
                    lost,
                    extra={"event": "bootstrap_unreachable", "remote": address},
                )
            else:
                known_id = link.peer.node_id
                began = trio.current_time()
                outcome = await self._run_session(link, None)
                if outcome is _SessionOutcome.DUPLICATE:
                    continue  # a session with that peer exists: wait for it to end
                if outcome is _SessionOutcome.SERVED and (
                    trio.current_time() - began >= self.settings.reconnect_max
                ):
                    delay = self.settings.reconnect_initial  # it was a healthy session
            # Back off, also after a session that failed its greeting or ended quickly: a peer
            # that drops us at once (e.g. it revoked our certificate) must not be redialled in
            # a tight loop.
            await trio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max)

    async def _run_session(self, link: FrameLink, started: trio.Event | None) -> _SessionOutcome:
        """Run one session to its end, keeping the peer table right; say how it went.

        Whatever the peer does ends only this session: protocol errors and broken links are
        logged; a bug in a handler is logged with its traceback as an internal error.
        """
        metered = MeteredLink(link, self.metrics)
        who = link.peer.node_id.hex()
        session = Session(
            metered,
            self._hello(),
            self.dispatcher.dispatch,
            self.settings.session,
            on_refusal=lambda reason, what: self.refusals.refused(who, reason, what),
        )
        outcome = _SessionOutcome.FAILED_GREETING
        try:
            await session.greet()
            refused = version_refusal(session, self.allowed_versions)
            if refused is not None:
                await session.close(refused)
                return _SessionOutcome.REFUSED
            clients = self._sessions.clients()
            excess = None if link.outbound else self._caps.client_excess(link.peer, clients)
            if excess is not None:
                await session.close(excess)
                return _SessionOutcome.REFUSED
            if not self._sessions.register(session, trio.current_time()):
                await session.close("duplicate connection")
                return _SessionOutcome.DUPLICATE
            outcome = _SessionOutcome.SERVED
            if started is not None:
                started.set()
            await session.serve()
        except (RemoteProtocolError, PeerUnreachable) as error:
            log_session_error(session, error)
        except Exception:
            # The boundary between one peer and the whole node: a bug triggered by one peer's
            # input must not take the datacenter's node down with it.
            log.exception(
                "internal error in the session with %s",
                session.describe(),
                extra={"event": "internal_error", "peer": link.peer.node_id.hex()},
            )
        finally:
            if started is not None:
                started.set()
            self._sessions.unregister(session)
        if (
            session.close_reason
            and session.close_reason != "duplicate connection"
            and outcome is not _SessionOutcome.REFUSED  # logged, throttled, as peer_limited
        ):
            log.info(
                "%s %s disconnected: %s",
                "client" if link.peer.role is Role.CLIENT else "peer",
                session.describe(),
                session.close_reason,
                extra={"event": "peer_disconnected", "peer": link.peer.node_id.hex(),
                       "role": link.peer.role.value},
            )  # fmt: skip
        return outcome

    def _hello(self) -> Hello:
        return make_hello(
            offer(self.settings.protocol_versions, self.allowed_versions),
            self.address,
            f"p2pstore/{__version__}",
        )

    def session_counts(self) -> dict[str, int]:
        """Open sessions by the peer's role (``node``, ``client``)."""
        return self._sessions.counts()

    async def _on_ping(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, Ping)
        return Pong(nonce=message.nonce, received=len(message.padding))

    async def _on_status(self, peer: PeerIdentity, message: Message) -> Message:
        return status_reply(self.identity, self.address, self.peers())
