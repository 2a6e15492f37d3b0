"""How a node answers requests: one handler per message type, behind the admission bounds.

Strategy: every request passes the core's :class:`~p2pstore.core.admission.Admission` first;
one over the peer's share or rate is answered ``busy`` (with a retry hint) without running its
handler.  Each answered request is counted by type, outcome and time spent; a handler's typed
error goes back to the peer as its code (the session sends it), anything else propagates to the
session's boundary as an internal error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from p2pstore.core.admission import Admission
from p2pstore.errors import P2PStoreError
from p2pstore.identity import PeerIdentity
from p2pstore.net.metrics import OK, NodeMetrics
from p2pstore.net.refusals import RefusalLog
from p2pstore.net.session import BUSY, busy_reply
from p2pstore.wire import ErrorReply, Message

Handler = Callable[[PeerIdentity, Message], Awaitable[Message]]


class Dispatcher:
    """The handlers of one node, and the bounds they run within."""

    def __init__(self, admission: Admission, refusals: RefusalLog, metrics: NodeMetrics) -> None:
        self.admission = admission
        self._refusals = refusals
        self._metrics = metrics
        self.handlers: dict[type[Message], Handler] = {}

    def handle(self, message_type: type[Message], handler: Handler) -> None:
        """Answer requests of ``message_type`` with ``handler`` (one handler per type).
        Raises :class:`ValueError` if the type already has one."""
        if message_type in self.handlers:
            raise ValueError(f"{message_type.__name__} already has a handler")
        self.handlers[message_type] = handler

    async def dispatch(self, peer: PeerIdentity, message: Message) -> Message:
        """Answer one request through its handler, counting it by type and outcome; a request
        over the peer's share or rate is answered busy without running its handler."""
        began = trio.current_time()
        kind = type(message).__name__
        refusal = self.admission.admit(peer.node_id, message, began)
        if refusal is not None:
            self._refusals.refused(peer.node_id.hex(), refusal.reason, refusal.why)
            self._metrics.record_request(kind, BUSY, 0.0)
            return busy_reply(refusal.why, refusal.retry_after)
        outcome = "cancelled"  # until the handler says otherwise
        reply: Message | None = None
        try:
            handler = self.handlers.get(type(message))
            if handler is None:
                reply = ErrorReply(
                    code="unsupported",
                    message=f"this node does not serve {kind} requests",
                )
            else:
                reply = await handler(peer, message)
        except P2PStoreError as exc:
            outcome = type(exc).__name__  # the code the session sends back
            raise
        except Exception:
            outcome = "internal_error"
            raise
        else:
            outcome = reply.code if isinstance(reply, ErrorReply) else OK
            return reply
        finally:
            now = trio.current_time()
            self.admission.done(peer.node_id, message, reply, now)
            self._metrics.record_request(kind, outcome, now - began)
