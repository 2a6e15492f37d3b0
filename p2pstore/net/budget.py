"""One budget of bytes that every link's large partial frames draw from.

Why: a frame's header announces up to 16 MiB before its body arrives, and a peer may trickle
that body as slowly as it likes.  Without a shared budget, 24 connections each holding a partial
16 MiB frame cost the node 384 MiB.  A link reserves a large frame's size here before reading
its body (waiting, with the socket unread, when there is no room), and frees it once the frame
is whole.  Each peer (a node id) may hold at most ``per_peer`` of it, so one identity cannot
take the node's budget; waiters are served first come first served, except that a waiter held
back only by its own peer's share never blocks the ones behind it.
"""

from __future__ import annotations

from collections import deque

import trio


class _Waiter:
    __slots__ = ("event", "granted", "peer", "size")

    def __init__(self, peer: bytes, size: int) -> None:
        self.peer = peer
        self.size = size
        self.event = trio.Event()
        self.granted = False


class ReceiveBudget:
    """``total`` bytes for the whole node, at most ``per_peer`` of them for one peer."""

    def __init__(self, total: int, per_peer: int) -> None:
        if not 0 < per_peer <= total:
            raise ValueError(f"need 0 < per_peer <= total, got {per_peer} and {total}")
        self.total = total
        self.per_peer = per_peer
        self.in_use = 0
        self._by_peer: dict[bytes, int] = {}
        self._waiting: deque[_Waiter] = deque()

    def held_by(self, peer: bytes) -> int:
        return self._by_peer.get(peer, 0)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def reserve(self, peer: bytes, size: int) -> None:
        """Wait until ``size`` bytes are ours (``size`` is capped at ``per_peer``: a frame the
        limits allow always fits).  Cancellation leaves nothing reserved."""
        size = min(size, self.per_peer)
        await trio.lowlevel.checkpoint_if_cancelled()
        waiter = _Waiter(peer, size)
        self._waiting.append(waiter)
        self._grant()
        if waiter.granted:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release(peer, size)
            else:
                self._waiting.remove(waiter)
                self._grant()
            raise

    def release(self, peer: bytes, size: int) -> None:
        """Give back what :meth:`reserve` took (the same ``size`` it was asked for)."""
        size = min(size, self.per_peer)
        held = self._by_peer.get(peer, 0) - size
        if held < 0 or self.in_use < size:
            raise ValueError(f"released {size} bytes that were not reserved")
        if held:
            self._by_peer[peer] = held
        else:
            del self._by_peer[peer]
        self.in_use -= size
        self._grant()

    def _take(self, peer: bytes, size: int) -> None:
        self.in_use += size
        self._by_peer[peer] = self._by_peer.get(peer, 0) + size

    def _grant(self) -> None:
        for waiter in list(self._waiting):
            if self.in_use + waiter.size > self.total:
                return  # first come, first served for the node's room
            if self._by_peer.get(waiter.peer, 0) + waiter.size <= self.per_peer:
                self._waiting.remove(waiter)
                self._take(waiter.peer, waiter.size)
                waiter.granted = True
                waiter.event.set()
