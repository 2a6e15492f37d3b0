"""The free space nodes announced, as placement weighs it.

Strategy: placement scores a candidate by its free space (:mod:`p2pstore.core.placement`); the
simulator knows it exactly, a node learns it from the signed announcements peers publish.  This
keeps what was learnt until the announcement expires (and that a node announced nothing, for one
announcement period, so an absent announcement is not looked up at every put), bounded in size.
A node's free space comes only from its own verified announcement: nobody else can say it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from p2pstore.core.placement import Candidate


class FreeSpace:
    """node id -> (free bytes or None when nothing was announced, valid until)."""

    __slots__ = ("_known", "limit")

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._known: dict[bytes, tuple[int | None, float]] = {}

    def note(self, node_id: bytes, free_bytes: int | None, valid_until: float) -> None:
        """Remember what ``node_id`` announced (None: nothing found) until ``valid_until``."""
        if node_id not in self._known and len(self._known) >= self.limit:
            del self._known[next(iter(self._known))]  # the oldest entry makes room
        self._known[node_id] = (free_bytes, valid_until)

    def known(self, node_id: bytes, now: float) -> bool:
        """Whether a still valid answer (free space or none announced) is held."""
        entry = self._known.get(node_id)
        return entry is not None and entry[1] > now

    def of(self, node_id: bytes, now: float) -> int | None:
        """The announced free space of ``node_id``, None if unknown or expired."""
        entry = self._known.get(node_id)
        return entry[0] if entry is not None and entry[1] > now else None

    def weigh(self, candidates: Sequence[Candidate], now: float) -> list[Candidate]:
        """``candidates`` with the free space they announced (placement weighs by it)."""
        return [
            dataclasses.replace(c, free_bytes=free)
            if (free := self.of(c.node_id, now)) is not None
            else c
            for c in candidates
        ]
