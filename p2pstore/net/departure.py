"""Draining a node out of the mesh: its fragments move to peers the rules allow before it stops.

Why the node does not move its fragments itself: a fragment does not say which object it
belongs to (its header names only k, n, share and chunk), so only the object's steward knows the
chunk's other holders and can place the fragment within the rule.  A leaving node therefore
refuses new fragments and answers stewards' checks with ``NodeLeaving``; each steward, at its
next round, copies the fragments off it (one fragment read, no decoding; rebuilt from k others
if the copy fails), stores them on new holders, publishes the new placement and then sends
``ReleaseFragments``, after which the leaving node deletes them.  The drain ends when the store
is empty, or at its deadline, saying what is left (fragments no steward claimed: orphans of
interrupted puts or repairs, or objects whose steward cannot be reached).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from p2pstore.identity import PeerIdentity, short_id
from p2pstore.net.fragments import FragmentService
from p2pstore.net.steward import Steward
from p2pstore.wire import Message, ReleaseFragments, ReleaseFragmentsReply

log = logging.getLogger("p2pstore.node")


@dataclass(frozen=True, slots=True)
class DrainOutcome:
    """How a drain ended: fragments held at its start, moved elsewhere, and left."""

    started_with: int
    released: int
    left: int
    seconds: float

    @property
    def complete(self) -> bool:
        return self.left == 0


class Departure:
    """Handles ``ReleaseFragments`` and runs a drain (:meth:`drain`) for one node."""

    def __init__(
        self,
        service: FragmentService,
        steward: Steward | None = None,
        *,
        poll_interval: float = 5.0,
    ) -> None:
        self.service = service
        self.steward = steward
        self.poll_interval = poll_interval
        self._changed = trio.Event()
        service.node.handle(ReleaseFragments, self._on_release)

    @property
    def leaving(self) -> bool:
        return self.service.leaving

    def held(self) -> int:
        """Fragments still in the store."""
        return self.service.store.usage().fragments

    async def drain(
        self, deadline: float, *, progress: trio.MemorySendChannel[int] | None = None
    ) -> DrainOutcome:
        """Leave: refuse new fragments, let stewards move the held ones, and return when none
        is left or ``deadline`` seconds have passed.  ``progress`` receives the count left
        each time it changes."""
        started = trio.current_time()
        start_count = self.held()
        self.service.leaving = True
        if self.steward is not None:
            self.steward.leaving = True
        log.info(
            "draining: %d fragments to move before this node leaves",
            start_count,
            extra={"event": "drain_started", "fragments": start_count},
        )
        with trio.move_on_after(deadline):
            while (left := self.held()) > 0:
                if progress is not None:
                    await progress.send(left)
                # a release, or our own steward moving its fragments (no message): look again
                with trio.move_on_after(self.poll_interval):
                    await self._changed.wait()
                self._changed = trio.Event()
        left = self.held()
        outcome = DrainOutcome(start_count, start_count - left, left, trio.current_time() - started)
        log.info(
            "drain %s: %d fragments moved, %d left after %.0fs",
            "complete" if outcome.complete else "stopped at its deadline",
            outcome.released,
            outcome.left,
            outcome.seconds,
            extra={"event": "drain_done", "released": outcome.released, "left": outcome.left},
        )
        return outcome

    async def _on_release(self, peer: PeerIdentity, message: Message) -> Message:
        assert isinstance(message, ReleaseFragments)
        if not self.leaving:
            return ReleaseFragmentsReply(released=0)
        deleted = 0
        for fragment_id in message.fragment_ids:
            if await self.service.run_store(self.service.store.delete, fragment_id):
                deleted += 1
        self._changed.set()
        log.info(
            "%s moved %d of our fragments elsewhere; deleted them",
            short_id(peer.node_id),
            deleted,
            extra={"event": "fragments_released", "peer": peer.node_id.hex(), "count": deleted},
        )
        return ReleaseFragmentsReply(released=deleted)
