"""Placement candidates weighed by the free space their announcements carry.

Strategy: a node publishes its free space in its signed announcement (see
:class:`~p2pstore.net.publisher.Publisher`); a put or a repair reads the announcements of its
candidates (cached in the core's :class:`~p2pstore.core.capacity.FreeSpace` until they expire,
a few lookups at a time) so placement weighs them as the simulator does, and a node that says it
is full is not offered fragments it would refuse.  Only an announcement that verifies against the
mesh CA, signed by the node it describes, counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from p2pstore.core.placement import Candidate
from p2pstore.core.published import republish_period
from p2pstore.core.records import RecordKind, verify_record
from p2pstore.errors import RecordRejected

if TYPE_CHECKING:
    from p2pstore.net.dht import Dht


async def weigh_by_free_space(dht: Dht, candidates: Sequence[Candidate]) -> list[Candidate]:
    """``candidates`` with the free space each announced (unknown ones left unweighed)."""
    now = dht.wall_clock()
    unknown = [c.node_id for c in candidates if not dht.free_space.known(c.node_id, now)]
    limiter = trio.CapacityLimiter(dht.settings.probe_concurrency)

    async def learn(node_id: bytes) -> None:
        async with limiter:
            records = await dht.find_records(RecordKind.ANNOUNCEMENT, node_id)
        best: tuple[int, int, float] | None = None  # (sequence, free bytes, valid until)
        for record in records:
            try:
                info = verify_record(record, dht.wall_clock(), trust=dht.trust())
            except RecordRejected:
                continue
            said = info.announcement
            if (
                said is not None
                and info.publisher == node_id
                and (best is None or info.sequence > best[0])
            ):
                best = (info.sequence, said.free_bytes, float(info.valid_until))
        if best is None:  # nothing announced: ask again after one announcement period
            dht.free_space.note(node_id, None, now + republish_period(RecordKind.ANNOUNCEMENT))
        else:
            dht.free_space.note(node_id, best[1], best[2])

    async with trio.open_nursery() as nursery:
        for node_id in unknown:
            nursery.start_soon(learn, node_id)
    return dht.free_space.weigh(candidates, dht.wall_clock())
