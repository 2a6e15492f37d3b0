"""One authenticated TLS connection as a :class:`~p2pstore.net.link.FrameLink`: whole frames
out, whole frames in, every wait bounded.

Strategy: a frame is sent whole or not at all (the write is shielded from its caller's
cancellation and bounded by ``send_timeout``); small frames that callers hand over while another
write is under way wait in an outbox, and the next writer sends all of them in one write (one
TLS record and one system call, not one per reply: a peer pipelining requests gets its answers
for the cost of a few writes).  A send that fails closes the link for both directions: requests
still buffered are not handed out, since nobody could answer them.  A large frame's bytes are
reserved from the node's :class:`~p2pstore.net.budget.ReceiveBudget` before its body is read,
and a frame must arrive whole within ``partial_frame_timeout``.
"""

from __future__ import annotations

import contextlib
import math

import trio

from p2pstore.errors import PeerUnreachable, RemoteProtocolError
from p2pstore.identity import PeerIdentity, short_id
from p2pstore.net.budget import ReceiveBudget
from p2pstore.net.refusals import RefusalLog
from p2pstore.wire import FRAME_HEADER, FrameDecoder, frame_header

RECEIVE_SIZE = 256 * 1024
"""Bytes asked of the TLS stream per read: large reads keep trio's per-call cost small."""

SMALL_FRAME = 64 * 1024
"""Frames up to this size are sent header and payload in one write."""

UNRESERVED_FRAME = RECEIVE_SIZE
"""Frames up to this size need no room from the receive budget: one read holds them anyway."""


class _Outgoing:
    """A small frame waiting in the outbox for a writer."""

    __slots__ = ("frame", "sent", "taken")

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.taken = False
        self.sent = False


class TlsLink:
    """A :class:`~p2pstore.net.link.FrameLink` over a
    :class:`~p2pstore.net.tls_stream.TlsStream` (or any byte stream: tests run it over memory
    streams under a MockClock)."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        peer: PeerIdentity,
        remote_address: str,
        *,
        outbound: bool,
        max_frame: int,
        send_timeout: float = 30.0,
        budget: ReceiveBudget | None = None,
        partial_frame_timeout: float | None = None,
        refusals: RefusalLog | None = None,
    ) -> None:
        self._stream = stream
        self._send_timeout = send_timeout
        self._peer = peer
        self._remote_address = remote_address
        self._outbound = outbound
        self._max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)
        self._send_lock = trio.Lock()
        self._closed = False
        self._failure: str | None = None
        """Why a send failed, after which the link is closed for both directions."""
        self._outbox: list[_Outgoing] = []
        self._budget = budget
        self._reserved = 0
        self._partial_timeout = partial_frame_timeout
        self._partial_since: float | None = None
        self._refusals = refusals

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
        """Send one whole frame or none: the caller's cancellation never cuts a frame in half.

        Why: ``SSLStream.send_all`` interrupted midway leaves the stream broken for every later
        send, while its receiving side keeps waiting, so one request's deadline would turn the
        shared connection into a zombie.  The write is shielded and bounded by ``send_timeout``
        instead; a send that fails or times out closes the link, which ends its session.
        Raises :class:`PeerUnreachable` then, and at once on a link already failed or closed.
        """
        header = frame_header(len(payload), self._max_frame)
        entry: _Outgoing | None = None
        if len(payload) <= SMALL_FRAME:
            entry = _Outgoing(header + payload)
            self._outbox.append(entry)
        try:
            async with self._send_lock:
                if entry is not None and entry.sent:
                    return  # the writer before us sent it with its own
                self._check_sendable()
                await self._write(header, payload, entry is None)
        finally:
            if entry is not None and not entry.taken:  # cancelled while waiting its turn
                self._outbox.remove(entry)
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _write(self, header: bytes, payload: bytes, large: bool) -> None:
        """Under the send lock: every small frame waiting, then this large one if it is."""
        batch, self._outbox = self._outbox, []
        for waiting in batch:
            waiting.taken = True
        failure: str | None = None
        with trio.CancelScope(shield=True), trio.move_on_after(self._send_timeout) as scope:
            try:
                if batch:
                    await self._stream.send_all(b"".join(w.frame for w in batch))
                if large:
                    await self._stream.send_all(header)
                    await self._stream.send_all(payload)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                failure = f"broke while sending: {_cause(exc)}"
        if scope.cancelled_caught:
            failure = f"could not send a frame within {self._send_timeout:g}s"
        if failure is not None:
            self._failure = failure  # the frames of the batch fail as their turns come
            await trio.aclose_forcefully(self._stream)
            raise PeerUnreachable(f"connection to {self._describe()} {failure}")
        for waiting in batch:
            waiting.sent = True

    def _check_sendable(self) -> None:
        if self._failure is not None or self._closed:
            # Replies still queued for a dead link fail here at once, not each closing it.
            raise PeerUnreachable(
                f"connection to {self._describe()} {self._failure or 'is closed'}"
            )

    async def receive_frame(self) -> bytes | None:
        while True:
            if self._failure is not None:
                # Frames still buffered are requests nobody can answer: reading them on would
                # be work for a peer that stopped reading (a flood's whole buffer of them).
                raise PeerUnreachable(f"connection to {self._describe()} {self._failure}")
            frame = self._decoder.next_frame()
            if frame is not None:
                self._free_room()
                self._partial_since = trio.current_time() if self._decoder.buffered else None
                return frame
            await self._reserve_room()
            data = await self._receive_some()
            if not data:
                if self._decoder.at_frame_boundary():
                    return None
                raise RemoteProtocolError(
                    f"{self._describe()} closed the connection in the middle of a frame"
                )
            if self._partial_since is None:
                self._partial_since = trio.current_time()
            self._decoder.feed(data)

    async def _reserve_room(self) -> None:
        """Before reading a large frame's body, take its size from the node's budget."""
        size = self._decoder.announced
        if self._budget is None or self._reserved or size is None or size <= UNRESERVED_FRAME:
            return
        wait = math.inf if self._partial_timeout is None else self._partial_timeout
        with trio.move_on_after(wait):
            await self._budget.reserve(self._peer.node_id, size)
            self._reserved = size
            self._partial_since = trio.current_time()  # the body gets the whole window
            return
        self._refuse("receive_budget", f"a frame of {size} bytes found no receive buffers")
        raise RemoteProtocolError(
            f"{self._describe()} announced a frame of {size} bytes and the node's receive "
            f"buffers stayed full for {wait:g}s; try again later"
        )

    async def _receive_some(self) -> bytes | bytearray:
        deadline = math.inf
        if self._partial_since is not None and self._partial_timeout is not None:
            deadline = self._partial_since + self._partial_timeout
        try:
            with trio.move_on_at(deadline):
                return await self._stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerUnreachable(f"connection to {self._describe()} broke: {_cause(exc)}") from exc
        announced = self._decoder.announced
        self._refuse("partial_frame_timeout", f"a frame took more than {self._partial_timeout:g}s")
        raise RemoteProtocolError(
            f"{self._describe()} did not finish a frame within {self._partial_timeout:g}s "
            f"({self._decoder.buffered} bytes of "
            f"{'?' if announced is None else announced + FRAME_HEADER.size} received)"
        )

    def _free_room(self) -> None:
        if self._reserved and self._budget is not None:
            self._budget.release(self._peer.node_id, self._reserved)
        self._reserved = 0

    def _refuse(self, reason: str, describe: str) -> None:
        if self._refusals is not None:
            self._refusals.refused(self._peer.node_id.hex(), reason, describe)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._free_room()
        with trio.move_on_after(1) as scope:
            scope.shield = True
            # If the peer went first the link is closed either way.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._stream.aclose()

    def _describe(self) -> str:
        return f"{short_id(self._peer.node_id)} at {self._remote_address}"


def _cause(exc: BaseException) -> str:
    """The most specific reason a trio stream broke (often an ``ssl.SSLError`` alert)."""
    cause = exc.__cause__ or exc.__context__
    return str(cause) if cause is not None else str(exc) or type(exc).__name__
