"""An in-memory network with the TLS transport's contract, for tests and developers.

Strategy: every link is two one-way pipes of frames.  A frame waits at the sender for the link's
bandwidth (so a busy link pushes back, like TCP), may be dropped (loss, partitions, vanished
peers), then travels for a latency drawn from the link's distribution, and is delivered in order.
All waiting is ``trio.sleep_until`` on trio's clock, so a whole mesh runs in virtual time under
``MockClock(autojump_threshold=0)``.  Peers authenticate with the same certificates and
:class:`~p2pstore.identity.TrustAnchor` checks as on TCP, so refusals behave alike on both.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio

from p2pstore.errors import LocalProtocolError, PeerRefused, PeerUnreachable
from p2pstore.identity import NodeCredentials, PeerIdentity, TrustAnchor, short_id
from p2pstore.net.link import LinkHandler, check_dialled_peer
from p2pstore.wire import DEFAULT_MAX_FRAME

log = logging.getLogger("p2pstore.net")

PIPE_CAPACITY = 64
"""Frames in flight per direction before the sender waits: bounds memory per link."""


@dataclass(frozen=True, slots=True)
class Latency:
    """One-way delay distribution, in seconds: ``constant``, ``uniform`` or ``lognormal``."""

    kind: str = "constant"
    low: float = 0.001
    high: float = 0.001
    sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "uniform", "lognormal"):
            raise ValueError(f"unknown latency kind {self.kind!r}")
        if self.low < 0 or self.high < self.low or self.sigma < 0:
            raise ValueError(f"bad latency parameters: {self}")

    @classmethod
    def constant(cls, seconds: float) -> Latency:
        return cls("constant", seconds, seconds)

    @classmethod
    def uniform(cls, low: float, high: float) -> Latency:
        return cls("uniform", low, high)

    @classmethod
    def lognormal(cls, median: float, sigma: float) -> Latency:
        """Heavy-tailed delays around ``median``: what wide-area links look like."""
        return cls("lognormal", median, median, sigma)

    def sample(self, rng: random.Random) -> float:
        if self.kind == "constant":
            return self.low
        if self.kind == "uniform":
            return rng.uniform(self.low, self.high)
        return self.low * math.exp(rng.gauss(0.0, self.sigma))


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """How one link between two peers behaves."""

    latency: Latency = field(default_factory=Latency)
    loss: float = 0.0
    """Probability that a frame is dropped."""
    bandwidth: float | None = None
    """Bytes per second each way; None for unlimited."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be a probability, got {self.loss}")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError(f"bandwidth must be positive, got {self.bandwidth}")


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class MemoryNetwork:
    """The shared medium of in-memory transports: links, their profiles, cuts and vanished peers."""

    def __init__(
        self,
        rng: random.Random,
        profile: LinkProfile | None = None,
        *,
        connect_timeout: float = 10.0,
        clock: Callable[[], datetime] = _wall_clock,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.rng = rng
        self.default_profile = profile or LinkProfile()
        self.connect_timeout = connect_timeout
        self.clock = clock
        self.max_frame = max_frame
        self._profiles: dict[frozenset[str], LinkProfile] = {}
        self._cut: set[frozenset[str]] = set()
        self._vanished: set[str] = set()
        self._listeners: dict[str, MemoryTransport] = {}
        self.frames_sent = 0
        self.frames_dropped = 0
        self.bytes_sent = 0

    def transport(
        self, name: str, credentials: NodeCredentials, trust: TrustAnchor
    ) -> MemoryTransport:
        """A transport for the peer reachable at address ``name``."""
        return MemoryTransport(self, name, credentials, trust)

    def set_profile(self, a: str, b: str, profile: LinkProfile) -> None:
        """Give the link between ``a`` and ``b`` (both ways) its own profile."""
        self._profiles[frozenset((a, b))] = profile

    def profile(self, a: str, b: str) -> LinkProfile:
        return self._profiles.get(frozenset((a, b)), self.default_profile)

    def cut(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Partition: no frame or connection passes between the two sides until healed."""
        others = list(side_b)
        for a in side_a:
            for b in others:
                if a != b:
                    self._cut.add(frozenset((a, b)))

    def heal(
        self, side_a: Iterable[str] | None = None, side_b: Iterable[str] | None = None
    ) -> None:
        """Undo :meth:`cut` between two sides, or every cut when called without sides."""
        if side_a is None or side_b is None:
            self._cut.clear()
            return
        others = list(side_b)
        for a in side_a:
            for b in others:
                self._cut.discard(frozenset((a, b)))

    def vanish(self, name: str) -> None:
        """The peer disappears without warning: silence on all its links, no new connections."""
        self._vanished.add(name)

    def reappear(self, name: str) -> None:
        self._vanished.discard(name)

    def reachable(self, a: str, b: str) -> bool:
        return (
            a not in self._vanished
            and b not in self._vanished
            and frozenset((a, b)) not in self._cut
        )

    def _register(self, transport: MemoryTransport) -> None:
        if transport.listen_address in self._listeners:
            raise PeerUnreachable(f"address {transport.listen_address} is already in use")
        self._listeners[transport.listen_address] = transport

    def _unregister(self, transport: MemoryTransport) -> None:
        if self._listeners.get(transport.listen_address) is transport:
            del self._listeners[transport.listen_address]


class _Pipe:
    """One direction of a memory link: bandwidth at the sender, then loss, then latency."""

    def __init__(self, network: MemoryNetwork, source: str, destination: str) -> None:
        self._network = network
        self._source = source
        self._destination = destination
        self._send, self._receive = trio.open_memory_channel[tuple[float, bytes]](PIPE_CAPACITY)
        self._busy_until = -math.inf
        self._last_delivery = -math.inf

    async def put(self, payload: bytes) -> None:
        network = self._network
        profile = network.profile(self._source, self._destination)
        if profile.bandwidth is not None:
            self._busy_until = max(trio.current_time(), self._busy_until)
            self._busy_until += len(payload) / profile.bandwidth
            await trio.sleep_until(self._busy_until)
        network.frames_sent += 1
        network.bytes_sent += len(payload)
        if not network.reachable(self._source, self._destination) or (
            profile.loss and network.rng.random() < profile.loss
        ):
            network.frames_dropped += 1
            return
        deliver_at = trio.current_time() + profile.latency.sample(network.rng)
        self._last_delivery = max(deliver_at, self._last_delivery)
        await self._send.send((self._last_delivery, payload))

    async def get(self) -> bytes | None:
        try:
            deliver_at, payload = await self._receive.receive()
        except trio.EndOfChannel:
            return None
        await trio.sleep_until(deliver_at)
        return payload

    def close_sending(self) -> None:
        self._send.close()

    def close_receiving(self) -> None:
        self._receive.close()


class MemoryLink:
    """A :class:`~p2pstore.net.link.FrameLink` between two memory transports."""

    def __init__(
        self,
        outgoing: _Pipe,
        incoming: _Pipe,
        peer: PeerIdentity,
        remote_address: str,
        *,
        outbound: bool,
        max_frame: int,
    ) -> None:
        self._outgoing = outgoing
        self._incoming = incoming
        self._peer = peer
        self._remote_address = remote_address
        self._outbound = outbound
        self._max_frame = max_frame
        self._send_lock = trio.Lock()

    @property
    def peer(self) -> PeerIdentity:
        return self._peer

    @property
    def remote_address(self) -> str:
        return self._remote_address

    @property
    def outbound(self) -> bool:
        return self._outbound

    async def send_frame(self, payload: bytes) -> None:
        if len(payload) > self._max_frame:
            raise LocalProtocolError(
                f"frame of {len(payload)} bytes exceeds the limit of {self._max_frame}"
            )
        async with self._send_lock:
            try:
                await self._outgoing.put(payload)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise PeerUnreachable(
                    f"connection to {short_id(self._peer.node_id)} at {self._remote_address} "
                    "is closed"
                ) from exc

    async def receive_frame(self) -> bytes | None:
        try:
            return await self._incoming.get()
        except trio.ClosedResourceError as exc:
            raise PeerUnreachable(f"link to {self._remote_address} was closed locally") from exc

    async def aclose(self) -> None:
        self._outgoing.close_sending()
        self._incoming.close_receiving()
        await trio.lowlevel.checkpoint()


class MemoryTransport:
    """:class:`~p2pstore.net.link.Transport` of one peer on a :class:`MemoryNetwork`."""

    def __init__(
        self,
        network: MemoryNetwork,
        name: str,
        credentials: NodeCredentials,
        trust: TrustAnchor,
    ) -> None:
        self.network = network
        self.name = name
        self.credentials = credentials
        self.trust = trust
        self._incoming: trio.MemorySendChannel[MemoryLink] | None = None

    @property
    def listen_address(self) -> str:
        return self.name

    def reload_trust(self, trust: TrustAnchor) -> None:
        self.trust = trust

    def reload_credentials(self, credentials: NodeCredentials) -> None:
        self.credentials = credentials

    async def listen(
        self, handler: LinkHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        send, receive = trio.open_memory_channel[MemoryLink](PIPE_CAPACITY)
        self._incoming = send
        self.network._register(self)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                async for link in receive:
                    nursery.start_soon(self._serve, handler, link)
        finally:
            self.network._unregister(self)
            self._incoming = None

    @staticmethod
    async def _serve(handler: LinkHandler, link: MemoryLink) -> None:
        try:
            await handler(link)
        finally:
            await link.aclose()

    async def connect(self, address: str, expected_id: bytes | None = None) -> MemoryLink:
        network = self.network
        listener = network._listeners.get(address)
        if not network.reachable(self.name, address):
            await trio.sleep(network.connect_timeout)
            raise PeerUnreachable(
                f"could not connect to {address} within {network.connect_timeout:g}s"
            )
        if listener is None or listener._incoming is None:
            raise PeerUnreachable(f"could not connect to {address}: connection refused")
        profile = network.profile(self.name, address)
        # TCP and TLS 1.3 handshakes: about two round trips before the first frame.
        for _ in range(4):
            await trio.sleep(profile.latency.sample(network.rng))
        now = network.clock()
        try:
            client_identity = listener.trust.verify(self.credentials.certificate, now)
        except PeerRefused as refused:
            log.warning(
                "refused peer at %s: %s",
                self.name,
                refused,
                extra={"event": "peer_refused", "remote": self.name, "reason": refused.reason},
            )
            raise PeerRefused(
                f"{address} rejected our certificate ({refused.reason})", reason="rejected-by-peer"
            ) from refused
        server_identity = self.trust.verify(listener.credentials.certificate, now)
        check_dialled_peer(address, server_identity, expected_id)
        to_server = _Pipe(network, self.name, address)
        to_client = _Pipe(network, address, self.name)
        client_link = MemoryLink(
            to_server,
            to_client,
            server_identity,
            address,
            outbound=True,
            max_frame=network.max_frame,
        )
        server_link = MemoryLink(
            to_client,
            to_server,
            client_identity,
            self.name,
            outbound=False,
            max_frame=network.max_frame,
        )
        try:
            listener._incoming.send_nowait(server_link)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerUnreachable(f"{address} is not accepting connections") from exc
        return client_link
