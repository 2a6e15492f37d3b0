"""Many concurrent requests over one authenticated link.

Strategy: both ends send ``Hello`` first and settle on the highest protocol version both offer
(:mod:`p2pstore.wire.versions`); nothing is sent that the settled version does not know, and a
request the settled version does not know is answered ``unsupported``.  After that every frame
is an envelope: a REQUEST carries an id the answer repeats in its RESPONSE, so any number of
requests share the link in any order; NOTICEs (``Goodbye``) need no answer.  Every request has a
deadline.  Inbound requests run in tasks of this session, at most ``max_inbound`` at once; past
that the peer is told "busy" (with when to retry) rather than queued, so a handler that itself
waits on this peer can never deadlock the receive loop.  A refusal is a request id in a bounded
queue that one task answers, never a task of its own: a peer that floods requests and does not
read its replies fills that queue, and then its session ends.  So a flood costs bounded memory.
A session that hears nothing for ``idle_timeout`` (its keepalive ping unanswered) ends too.  A
malformed frame ends the session with :class:`RemoteProtocolError` (after a best-effort Goodbye
naming it), which the owner records; it never reaches anyone else's session.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from p2pstore.errors import (
    P2PStoreError,
    PeerTooOld,
    PeerUnreachable,
    RemoteError,
    RemoteProtocolError,
    RequestTimeout,
    error_code,
)
from p2pstore.identity import PeerIdentity, short_id
from p2pstore.net.link import FrameLink
from p2pstore.wire import (
    PROTOCOL_VERSION,
    Envelope,
    ErrorReply,
    Goodbye,
    Hello,
    Kind,
    Message,
    Ping,
    check_protocol_version,
    decode_envelope,
    encode_envelope,
    required_version,
    spoken_by,
)

log = logging.getLogger("p2pstore.net")

RequestHandler = Callable[[PeerIdentity, Message], Awaitable[Message]]
"""Answers one request from an authenticated peer; a raised P2PStoreError becomes an ErrorReply."""

RefusalHook = Callable[[str, str], None]
"""Told ``(reason, what happened)`` when the session refuses its peer under a bound."""

_SKIPPED = {
    "request": "not sent",
    "answer": "refused as unsupported",
    "reply": "replaced by an unsupported refusal",
}

MAX_REQUEST_ID = 2**32 - 1
ERROR_TEXT_LIMIT = 512
BUSY = "busy"
_RETRY_HINT = re.compile(r"retry after (\d+(?:\.\d+)?)s")


def busy_reply(why: str, retry_after: float) -> ErrorReply:
    """A ``busy`` refusal that says when to ask again (in its text: the schema has no optional
    fields, and every version reads the text)."""
    hint = f"; retry after {max(0.0, retry_after):.3f}s"
    return ErrorReply(code=BUSY, message=why[: ERROR_TEXT_LIMIT - len(hint)] + hint)


def retry_after(error: RemoteError) -> float | None:
    """The seconds a ``busy`` refusal asked us to wait before retrying, None if it is not one."""
    if error.code != BUSY:
        return None
    match = _RETRY_HINT.search(str(error))
    return float(match.group(1)) if match else None


MIN_RETRY_WAIT = 0.02
"""Seconds waited at least before asking again a peer that answered busy."""


async def retrying_busy(ask: Callable[[float], Awaitable[Message]], timeout: float) -> Message:
    """``ask(seconds left)``; while the peer answers busy with a hint that fits ``timeout``, wait
    that long and ask again, so honest load that meets a bound slows down instead of failing.
    Raises what the last ``ask`` raised."""
    deadline = trio.current_time() + timeout
    left = timeout
    while True:
        try:
            return await ask(left)
        except RemoteError as refused:
            wait = retry_after(refused)
            if wait is None or trio.current_time() + wait >= deadline:
                raise
        # A floor, so a peer that hints "retry at once" cannot make us spin.
        await trio.sleep(max(wait, MIN_RETRY_WAIT))
        left = deadline - trio.current_time()


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Deadlines and bounds of one session."""

    hello_timeout: float = 10.0
    request_timeout: float = 10.0
    goodbye_timeout: float = 1.0
    max_inbound: int = 32
    """Requests of the peer handled at once; more are answered busy."""
    max_busy_replies: int = 64
    """Busy replies waiting to be sent; past them the session stops reading the peer's frames
    until there is room again, and ends if there is none within ``busy_drain_timeout``."""
    busy_drain_timeout: float = 10.0
    """Seconds a full queue of busy replies may take to find room: a peer that reads frees it
    in milliseconds (even after the node itself stalled and found a burst of requests waiting),
    one that does not read never does."""
    busy_retry_after: float = 0.1
    """The wait a busy reply suggests: about one request's time."""
    idle_timeout: float | None = 1800.0
    """Seconds without a frame from the peer before the session ends; a keepalive ping goes
    out after half of it, so only a peer that no longer answers is dropped.  None: never.
    Long, because idle sessions are cheap (and capped per address and identity) while pings
    are not free: a simulated 300-node mesh with a 300 s timeout spent 2.5x the CPU idling."""

    def __post_init__(self) -> None:
        if self.max_inbound < 1 or self.max_busy_replies < 1:
            raise ValueError("max_inbound and max_busy_replies must be at least 1")
        if self.busy_drain_timeout <= 0:
            raise ValueError(f"busy_drain_timeout must be > 0, got {self.busy_drain_timeout}")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be more than 0, got {self.idle_timeout}")


class _Pending:
    __slots__ = ("done", "error", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: Message | None = None
        self.error: P2PStoreError | None = None


class Session:
    """The RPC session with one peer.  Run it with ``await nursery.start(session.run)``."""

    def __init__(
        self,
        link: FrameLink,
        hello: Hello,
        handler: RequestHandler,
        settings: SessionSettings | None = None,
        *,
        on_refusal: RefusalHook | None = None,
    ) -> None:
        self.link = link
        self.settings = settings or SessionSettings()
        self.peer_hello: Hello | None = None
        self.version = 0
        """The wire version settled with the peer (0 until greeted)."""
        self._hello = hello
        self._skipped: set[str] = set()
        self._handler = handler
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.cycle(range(1, MAX_REQUEST_ID + 1))
        self._inbound = 0
        self._scope = trio.CancelScope()
        self._greet_scope = trio.CancelScope()
        self._closed = False
        self.close_reason: str | None = None
        self._on_refusal = on_refusal
        self._receive_scope = trio.CancelScope()
        self._last_heard = trio.current_time()
        self._silent: PeerUnreachable | None = None
        self._busy_send, self._busy_receive = trio.open_memory_channel[int](
            self.settings.max_busy_replies
        )

    @property
    def peer(self) -> PeerIdentity:
        return self.link.peer

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self) -> str:
        peer = self.peer
        return f"{short_id(peer.node_id)} ({peer.datacenter}, {peer.region})"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """:meth:`greet`, report started, then :meth:`serve` (for ``nursery.start``)."""
        await self.greet()
        task_status.started()
        await self.serve()

    async def greet(self) -> None:
        """Exchange Hellos and check the peer's protocol version.

        Raises :class:`RemoteProtocolError` if the peer sends anything else or a version we do
        not speak, and :class:`PeerUnreachable` if it says nothing in time or the link breaks;
        the link is closed in both cases.
        """
        try:
            with self._greet_scope:
                try:
                    await self._greet()
                except RemoteProtocolError as exc:
                    self.close_reason = f"protocol error: {exc}"
                    await self._say_goodbye(self.close_reason)
                    raise
            if self.peer_hello is None:
                raise PeerUnreachable(f"session with {self.describe()} closed during its greeting")
        except BaseException:
            self._closed = True
            with trio.CancelScope(shield=True):
                await self.link.aclose()
            raise

    async def serve(self) -> None:
        """Answer requests and route answers until the link ends or :meth:`close` is called.

        Returns normally on a graceful close from either side.  Raises
        :class:`RemoteProtocolError` if the peer breaks the protocol (or floods requests without
        reading the replies) and :class:`PeerUnreachable` if the link breaks or the peer stays
        silent for ``idle_timeout``.  Pending requests fail with
        :class:`PeerUnreachable` when the session ends, and the link is closed.
        """
        failure: RemoteProtocolError | PeerUnreachable | None = None
        self._last_heard = trio.current_time()
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._send_busy_replies)
                    if self.settings.idle_timeout is not None:
                        nursery.start_soon(self._watch_idle, nursery, self.settings.idle_timeout)
                    try:
                        try:
                            with self._receive_scope:
                                await self._receive_loop(nursery)
                        except (RemoteProtocolError, PeerUnreachable) as exc:
                            failure = exc
                        failure = failure or self._silent
                        if isinstance(failure, RemoteProtocolError):
                            self.close_reason = f"protocol error: {failure}"
                            await self._say_goodbye(self.close_reason)
                        elif failure is not None:
                            self.close_reason = str(failure)
                    finally:
                        nursery.cancel_scope.cancel()
                        # Closing wakes answers stuck sending to a peer that does not read.
                        with trio.CancelScope(shield=True):
                            await self.link.aclose()
        finally:
            self._closed = True
            self._fail_pending(self.close_reason or "session closed")
            with trio.CancelScope(shield=True):
                await self.link.aclose()
        if failure is not None:
            raise failure

    async def close(self, reason: str = "closing") -> None:
        """Tell the peer goodbye (best effort, bounded) and end :meth:`run`."""
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        if self.peer_hello is not None:
            await self._say_goodbye(reason)
        self._greet_scope.cancel()
        self._scope.cancel()

    async def request(self, message: Message, *, timeout: float | None = None) -> Message:
        """Send ``message`` and wait for its answer.

        Raises :class:`RequestTimeout` after ``timeout`` seconds (default: the session's),
        :class:`RemoteError` if the peer answered with an error, and
        :class:`PeerUnreachable` if the session ends first.
        """
        if self._closed:
            raise PeerUnreachable(f"session with {self.describe()} is closed")
        self._check_version(message, "request")
        deadline = self.settings.request_timeout if timeout is None else timeout
        request_id = next(self._ids)
        while request_id in self._pending:
            request_id = next(self._ids)
        pending = _Pending()
        self._pending[request_id] = pending
        try:
            with trio.move_on_after(deadline) as scope:
                await self.link.send_frame(
                    encode_envelope(Envelope(Kind.REQUEST, request_id, message))
                )
                await pending.done.wait()
        finally:
            del self._pending[request_id]
        if scope.cancelled_caught:
            raise RequestTimeout(
                f"{self.describe()} did not answer {type(message).__name__} within {deadline:g}s"
            )
        if pending.error is not None:
            raise pending.error
        reply = pending.reply
        if isinstance(reply, ErrorReply):
            raise RemoteError(
                f"{self.describe()} refused {type(message).__name__}: {reply.message}",
                code=reply.code,
            )
        assert reply is not None
        return reply

    async def notify(self, message: Message) -> None:
        """Send a one-way notice."""
        await self.link.send_frame(encode_envelope(Envelope(Kind.NOTICE, 0, message)))

    async def _greet(self) -> None:
        await self.notify(self._hello)
        with trio.move_on_after(self.settings.hello_timeout) as scope:
            payload = await self.link.receive_frame()
        if scope.cancelled_caught:
            raise PeerUnreachable(
                f"{self.describe()} sent no Hello within {self.settings.hello_timeout:g}s"
            )
        if payload is None:
            raise PeerUnreachable(f"{self.describe()} closed the connection before its Hello")
        envelope = decode_envelope(payload)
        if envelope.kind is not Kind.NOTICE or not isinstance(envelope.message, Hello):
            raise RemoteProtocolError(
                f"{self.describe()} sent {type(envelope.message).__name__} before Hello"
            )
        self.version = check_protocol_version(envelope.message, spoken_by(self._hello))
        self.peer_hello = envelope.message

    async def _receive_loop(self, nursery: trio.Nursery) -> None:
        while True:
            payload = await self.link.receive_frame()
            if payload is None:
                self.close_reason = self.close_reason or "peer closed the connection"
                return
            self._last_heard = trio.current_time()
            envelope = decode_envelope(payload)
            if envelope.kind is Kind.RESPONSE:
                pending = self._pending.get(envelope.request_id)
                if pending is not None and not pending.done.is_set():
                    pending.reply = envelope.message
                    pending.done.set()
                # else: the answer came after its deadline; the requester has moved on.
            elif envelope.kind is Kind.REQUEST:
                if self._inbound < self.settings.max_inbound:
                    self._inbound += 1
                    nursery.start_soon(self._answer, envelope.request_id, envelope.message)
                else:
                    await self._refuse_busy(envelope.request_id)
            elif isinstance(envelope.message, Goodbye):
                self.close_reason = f"peer said goodbye: {envelope.message.reason}"
                return
            else:
                raise RemoteProtocolError(
                    f"{self.describe()} sent an unexpected {type(envelope.message).__name__} notice"
                )
            # A peer whose frames all sit in one read must not hold the scheduler for it.
            await trio.lowlevel.checkpoint()

    async def _refuse_busy(self, request_id: int) -> None:
        """Queue a busy reply; when the queue is full, read nothing more from the peer until it
        has room (a burst found after a stall of the node drains as the peer reads), and end
        the session if it finds none within ``busy_drain_timeout`` (the peer does not read)."""
        limit = self.settings.max_inbound
        self._refuse("session_busy", f"more than {limit} requests in flight on one session")
        with contextlib.suppress(trio.WouldBlock):
            self._busy_send.send_nowait(request_id)
            return
        with trio.move_on_after(self.settings.busy_drain_timeout):
            await self._busy_send.send(request_id)
            return
        queued = self.settings.max_busy_replies
        self._refuse("not_reading", f"{queued} busy replies unread: session ended")
        raise RemoteProtocolError(
            f"{self.describe()} does not read its replies ({queued} busy replies unsent for "
            f"{self.settings.busy_drain_timeout:g}s while it kept more than {limit} requests in "
            "flight)"
        )

    def _check_version(self, message: Message, doing: str) -> None:
        """Raise :class:`PeerTooOld` if ``message`` is newer than the settled version (to
        send, or to answer: an older peer has no business sending it); logged once per type."""
        if self.version >= PROTOCOL_VERSION:
            return
        needed = required_version(message)
        if needed <= self.version:
            return
        kind = type(message).__name__
        if kind not in self._skipped:
            self._skipped.add(kind)
            log.info(
                "%s speaks wire protocol version %d: %s (version %d) %s; said once per session",
                self.describe(), self.version, kind, needed, _SKIPPED[doing],
                extra={"event": "older_peer_skipped", "peer": self.peer.node_id.hex(),
                       "kind": kind, "version": self.version, "doing": doing},
            )  # fmt: skip
        raise PeerTooOld(
            f"{self.describe()} speaks wire protocol version {self.version}, {kind} needs "
            f"version {needed}",
            needed=needed,
            settled=self.version,
        )

    def _refuse(self, reason: str, describe: str) -> None:
        if self._on_refusal is not None:
            self._on_refusal(reason, describe)

    async def _answer(self, request_id: int, message: Message) -> None:
        try:
            try:
                self._check_version(message, "answer")
                reply = await self._handler(self.peer, message)
                self._check_version(reply, "reply")
            except PeerTooOld as exc:
                reply = ErrorReply(code=exc.code, message=str(exc)[:ERROR_TEXT_LIMIT])
            except P2PStoreError as exc:
                reply = ErrorReply(code=error_code(exc), message=str(exc)[:ERROR_TEXT_LIMIT])
            await self._respond(request_id, reply)
        finally:
            self._inbound -= 1

    async def _send_busy_replies(self) -> None:
        reply = busy_reply(
            f"more than {self.settings.max_inbound} requests in flight",
            self.settings.busy_retry_after,
        )
        async for request_id in self._busy_receive:
            await self._respond(request_id, reply)

    async def _watch_idle(self, nursery: trio.Nursery, timeout: float) -> None:
        """Ping the peer after ``timeout / 2`` of silence; end the session after ``timeout``."""
        pinged_for: float | None = None
        while True:
            heard = self._last_heard
            # Deadlines, not durations: the clock wakes us at exactly ``heard + ...``, where
            # ``now - heard`` may round below the threshold and spin.
            now = trio.current_time()
            if now >= heard + timeout:
                self._refuse("idle_timeout", f"silent for {timeout:g}s")
                self._silent = PeerUnreachable(
                    f"{self.describe()} sent nothing for {timeout:g}s, not even an answer to "
                    "a keepalive ping"
                )
                self._receive_scope.cancel()
                return
            if now >= heard + timeout / 2 and pinged_for != heard:
                pinged_for = heard
                nursery.start_soon(self._keepalive, timeout / 2)
            await trio.sleep_until(heard + (timeout if pinged_for == heard else timeout / 2))

    async def _keepalive(self, timeout: float) -> None:
        # Any answer, even busy, is a frame heard; a missing one shows in the idle deadline.
        with contextlib.suppress(P2PStoreError):
            await self.request(Ping(nonce=0, padding=b""), timeout=timeout)

    async def _respond(self, request_id: int, reply: Message) -> None:
        try:
            await self.link.send_frame(encode_envelope(Envelope(Kind.RESPONSE, request_id, reply)))
        except PeerUnreachable:
            # The link broke under us; the receive loop sees the same break and ends the session.
            log.debug("could not answer request %d of %s: link broke", request_id, self.describe())

    async def _say_goodbye(self, reason: str) -> None:
        with trio.move_on_after(self.settings.goodbye_timeout) as scope:
            scope.shield = True
            try:
                await self.notify(Goodbye(reason=reason[:ERROR_TEXT_LIMIT]))
            except PeerUnreachable:
                return  # nobody is left to hear it

    def _fail_pending(self, reason: str) -> None:
        for pending in self._pending.values():
            if not pending.done.is_set():
                pending.error = PeerUnreachable(
                    f"session with {self.describe()} ended before answering: {reason}"
                )
                pending.done.set()
