"""The upkeep of a node's routing table, as a machine both drivers run: when to probe, whom to
probe, which buckets to refresh, whom to ping before evicting, what to hand a newcomer.

Strategy: rounds fall at fixed times, ``started + j * refresh_interval`` (a
:class:`~p2pstore.core.steward_round.RoundClock`), not "an interval after the last round
ended", so the trio node (``p2pstore.net.dht``, which sleeps until :meth:`DhtUpkeep.next_deadline`)
and the simulator (``p2pstore.sim.dht_driver``, which replays the rounds a table missed when it
is next used, :meth:`DhtUpkeep.rounds_probing`) count the same rounds.  At a round the node
pings every contact not heard from for ``probe_after`` (half an interval: whatever was silent
since about the previous round), then looks up a random id in every bucket no lookup touched
for an interval.  Why probe at all: a contact is marked stale only by a failed request, and
only stale contacts are left out of FIND_NODE answers; without probes, a peer that vanished
stays in the answers of every node that never happened to ask it, and hides the live peers
just beyond the k nearest from everyone's lookups.

Pure: the driver passes ``now`` and an RNG, sends the pings and lookups this machine names,
and reports the answers back (:meth:`DhtUpkeep.probed`, :meth:`DhtUpkeep.ping_answered`).
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from p2pstore.core.contact import Contact
from p2pstore.core.routing import RoutingTable, UpdateKind
from p2pstore.core.steward_round import RoundClock
from p2pstore.errors import LocalProtocolError
from p2pstore.identity.nodeid import NodeId

DEFAULT_REFRESH_INTERVAL = 3600.0
"""Seconds between two upkeep rounds (``DhtSettings.refresh_interval``, ``[dht]`` of a
simulated scenario)."""

PROBE_AFTER = 0.5
"""A contact silent for this fraction of a refresh interval is probed at a round."""


@dataclass(frozen=True, slots=True)
class UpkeepRound:
    """What one round asks for: a PING to each of ``probes`` (answers to
    :meth:`DhtUpkeep.probed`), then a FIND_NODE lookup of each of ``refresh``."""

    at: float
    probes: tuple[Contact, ...]
    refresh: tuple[bytes, ...]


class Met(enum.Enum):
    """What to do after a session with a node came up (:meth:`DhtUpkeep.met`)."""

    NOTHING = "nothing"
    HAND_OVER = "hand_over"
    """A new contact: offer it the records it is now closer to (:func:`closer_to`)."""
    PING_OLDEST = "ping_oldest"
    """Its bucket is full: ping the oldest contact, answer to :meth:`DhtUpkeep.ping_answered`."""


@dataclass(frozen=True, slots=True)
class Meeting:
    """The outcome of :meth:`DhtUpkeep.met`; ``ping`` is set exactly for PING_OLDEST."""

    then: Met
    ping: Contact | None = None


class DhtUpkeep:
    """The rounds of one routing table.  Raises :class:`LocalProtocolError` for a
    non-positive interval."""

    __slots__ = ("_next", "_rounds", "refresh_interval", "table")

    def __init__(
        self, table: RoutingTable, *, now: float, refresh_interval: float = DEFAULT_REFRESH_INTERVAL
    ) -> None:
        self.table = table
        self.refresh_interval = float(refresh_interval)
        self._rounds = RoundClock(self.refresh_interval, now)
        self._next = self._rounds.after(now)

    @property
    def probe_after(self) -> float:
        """Seconds of silence after which a contact is probed at a round."""
        return self.refresh_interval * PROBE_AFTER

    def next_deadline(self) -> float:
        """When the next round is due."""
        return self._next

    def due(self, now: float, rng: random.Random) -> UpkeepRound | None:
        """The round due at ``now`` (None before :meth:`next_deadline`); the next one falls a
        whole interval later (a late driver skips the rounds it slept through)."""
        if now < self._next:
            return None
        self._next = self._rounds.after(now)
        return UpkeepRound(
            now,
            tuple(self.silent(now)),
            tuple(self.table.buckets_to_refresh(now, self.refresh_interval, rng)),
        )

    def silent(self, now: float) -> list[Contact]:
        """Contacts not heard from for :attr:`probe_after` seconds at ``now``, table order."""
        table = self.table
        limit = now - self.probe_after
        out = []
        for contact in table.contacts():
            liveness = table.liveness(contact.id)
            if liveness is not None and liveness.last_seen <= limit:
                out.append(contact)
        return out

    def probed(self, node_id: bytes, alive: bool, now: float) -> bool:
        """A probe's answer; True if the contact was dropped (silent through ``max_failures``
        probes or failed requests in a row)."""
        if alive:
            self.table.record_success(node_id, now)
            return False
        return self.table.record_failure(node_id, now)

    def joined(self, now: float, rng: random.Random) -> list[NodeId]:
        """After a join's lookup of its own id: a target in every bucket, to look up."""
        return self.table.buckets_to_refresh(now, 0.0, rng)

    def met(self, contact: Contact, now: float) -> Meeting:
        """A session with ``contact`` came up (its certificate vouches for it)."""
        update = self.table.update(contact, now)
        if update.kind is UpdateKind.PING_NEEDED and update.ping is not None:
            return Meeting(Met.PING_OLDEST, update.ping)
        if update.kind is UpdateKind.ADDED:
            return Meeting(Met.HAND_OVER)
        return Meeting(Met.NOTHING)

    def ping_answered(self, node_id: bytes, alive: bool, now: float) -> bool:
        """The answer to a PING_OLDEST; True if the oldest contact was dropped."""
        return self.table.ping_result(node_id, alive, now)

    # -- what a driver that replays rounds lazily needs -----------------------------------------

    def rounds_between(self, start: float, end: float) -> int:
        """Rounds in ``(start, end]``."""
        return self._count(self._index_after(start), end)

    def rounds_probing(self, last_seen: float, start: float, end: float) -> int:
        """Rounds in ``(start, end]`` that probe a contact last heard from at ``last_seen`` and
        silent since (what a dead contact fails, one failure each)."""
        interval = self._rounds.interval
        first_probe = math.ceil((last_seen + self.probe_after - self._rounds.phase) / interval)
        return self._count(max(self._index_after(start), first_probe), end)

    def _index_after(self, start: float) -> int:
        """The index ``j`` of the first round ``phase + j * interval`` after ``start``."""
        return max(1, math.floor((start - self._rounds.phase) / self._rounds.interval) + 1)

    def _count(self, first: int, end: float) -> int:
        last = math.floor((end - self._rounds.phase) / self._rounds.interval)
        return max(0, last - max(first, 1) + 1)


Record = TypeVar("Record")


def closer_to(
    records: Iterable[tuple[bytes, Record]], own_id: bytes, newcomer: bytes
) -> list[Record]:
    """The records (key, record) a newcomer is closer to than we are, in the given order:
    what a node hands over when a contact joins its table (Kademlia's replication to new
    nodes).  Raises :class:`LocalProtocolError` if the ids differ in length."""
    if len(own_id) != len(newcomer):
        raise LocalProtocolError("node ids of different lengths cannot be compared")
    mine = int.from_bytes(own_id, "big")
    theirs = int.from_bytes(newcomer, "big")
    out = []
    for key, record in records:
        value = int.from_bytes(key, "big")
        if theirs ^ value < mine ^ value:
            out.append(record)
    return out
