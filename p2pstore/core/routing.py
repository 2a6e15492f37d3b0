"""The Kademlia routing table, as a pure data structure that tells its driver whom to ping.

Strategy: the table is built on the ``kademlia`` package's ``KBucket`` (an ``OrderedDict`` of
contacts, least recently seen first, plus a replacement cache), but nothing in it does I/O or
reads a clock.  Where the package decides something it cannot know (is the oldest contact still
alive?), :meth:`RoutingTable.update` returns the question instead: ``PING_NEEDED(oldest)``.  The
driver (a trio task, or the simulator's event heap) pings, then calls :meth:`ping_result`.

What differs from ``kademlia.routing`` and why (each has a test that fails on the package):

* Buckets are half-open, prefix-aligned ranges ``[lo, hi)``.  The package splits into
  ``[lo, mid]`` / ``[mid + 1, hi]`` but looks up with ``long_id < hi``, so an id equal to a
  bucket's upper bound is stored in one bucket and searched for in the next.
* Times are arguments (``now``); the package reads ``time.monotonic()`` for bucket ages.
* ``add_contact`` in the package schedules ``asyncio.ensure_future(protocol.call_ping(...))``;
  here the question is returned and the driver does the ping.
* The package drops a contact on its first missed reply.  Here one failure makes it *stale*;
  it is dropped after ``max_failures`` consecutive failures (or a failed eviction ping counted
  as one), and the most recently seen contact of the replacement cache takes its place.
* Only the bucket holding the local id splits (the paper's basic rule, as in ddht).  The
  package also splits any bucket whose *current contents* share a prefix length not divisible
  by 5, so the table's shape depends on the order contacts arrived in.
* :meth:`closest` is exact.  The package's ``find_neighbors`` walks buckets left and right by
  index and stops after k contacts, which misses closer contacts, and it touches bucket ages.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable

from kademlia.routing import KBucket

from p2pstore.core.contact import ID_BITS, ID_SPACE, Contact, check_node_id, id_from_long, long_id
from p2pstore.errors import LocalProtocolError
from p2pstore.identity.nodeid import NodeId

DEFAULT_K = 20
DEFAULT_MAX_FAILURES = 3


class UpdateKind(enum.Enum):
    """What :meth:`RoutingTable.update` did with a contact."""

    ADDED = "added"
    """The contact is new and had room (possibly after a split)."""
    REFRESHED = "refreshed"
    """The contact was known; it moved to the tail (most recently seen)."""
    PING_NEEDED = "ping_needed"
    """Its bucket is full: it waits in the replacement cache; ping ``Update.ping`` first."""
    QUEUED = "queued"
    """Its bucket is full and a ping is already pending there: it waits in the cache."""
    IGNORED = "ignored"
    """The contact is the local node."""


@dataclasses.dataclass(frozen=True, slots=True)
class Update:
    """The outcome of :meth:`RoutingTable.update`; ``ping`` is set exactly for PING_NEEDED."""

    kind: UpdateKind
    ping: Contact | None = None

    def __post_init__(self) -> None:
        if (self.kind is UpdateKind.PING_NEEDED) != (self.ping is not None):
            raise LocalProtocolError(f"{self.kind} update must carry a ping contact iff needed")


@dataclasses.dataclass(frozen=True, slots=True)
class Liveness:
    """What the table knows about a contact's health (see :meth:`RoutingTable.liveness`)."""

    failures: int
    last_seen: float
    last_failure: float | None

    @property
    def stale(self) -> bool:
        """True after at least one failure since the contact was last heard from."""
        return self.failures > 0


class Bucket(KBucket):  # type: ignore[misc]  # kademlia is untyped: KBucket is Any to mypy
    """A k-bucket over the half-open, prefix-aligned id range ``[lower, upper)``.

    ``nodes`` keeps contacts least recently seen first; ``replacement_nodes`` keeps up to
    ``replacements`` waiting contacts, most recently seen last.
    """

    def __init__(self, lower: int, upper: int, k: int, replacements: int, now: float) -> None:
        # KBucket.__init__ is not called: it reads time.monotonic().  Same attributes.
        self.range = (lower, upper)
        self.nodes: OrderedDict[bytes, Contact] = OrderedDict()
        self.replacement_nodes: OrderedDict[bytes, Contact] = OrderedDict()
        self.ksize = k
        self.max_replacement_nodes = replacements
        self.last_updated = now

    def touch_last_updated(self, now: float | None = None) -> None:
        """Mark the bucket refreshed at ``now`` (required: the package's form read a clock)."""
        if now is None:
            raise LocalProtocolError("Bucket.touch_last_updated needs now=: no clock reads here")
        self.last_updated = now

    def has_in_range(self, node: Contact) -> bool:
        return self.covers(node.long_id)

    def covers(self, value: int) -> bool:
        """True when the integer id ``value`` falls in ``[lower, upper)``."""
        return bool(self.range[0] <= value < self.range[1])

    @property
    def full(self) -> bool:
        return len(self.nodes) >= self.ksize

    def depth(self) -> int:
        """The bucket's depth in the id tree: the length of the prefix its ids share."""
        return ID_BITS - (self.range[1] - self.range[0]).bit_length() + 1

    def add_node(self, node: Contact) -> bool:
        """Store ``node`` at the tail of the bucket if it is there or has room, and return True;
        otherwise make it wait (see :meth:`wait`) and return False."""
        if node.id in self.nodes or len(self.nodes) < self.ksize:
            self.nodes.pop(node.id, None)
            self.replacement_nodes.pop(node.id, None)
            self.nodes[node.id] = node
            return True
        self.wait(node)
        return False

    def wait(self, node: Contact) -> Contact | None:
        """Put ``node`` at the tail of the replacement cache; return the oldest waiting contact
        if that pushed it out of a full cache, else None."""
        self.replacement_nodes.pop(node.id, None)
        self.replacement_nodes[node.id] = node
        if len(self.replacement_nodes) > self.max_replacement_nodes:
            return self.replacement_nodes.popitem(last=False)[1]
        return None

    def split(self) -> tuple[Bucket, Bucket]:
        """Two halves ``[lo, mid)`` and ``[mid, hi)``; contacts and waiting contacts follow their
        ids, waiting ones move up (most recent first) where a half has room.  Ages are kept."""
        lower, upper = self.range
        if upper - lower < 2:
            raise LocalProtocolError(f"bucket [{lower}, {upper}) holds one id and cannot split")
        mid = (lower + upper) // 2
        halves = (
            Bucket(lower, mid, self.ksize, self.max_replacement_nodes, self.last_updated),
            Bucket(mid, upper, self.ksize, self.max_replacement_nodes, self.last_updated),
        )
        for node in self.nodes.values():
            halves[node.long_id >= mid].nodes[node.id] = node
        for node in self.replacement_nodes.values():
            halves[node.long_id >= mid].replacement_nodes[node.id] = node
        for half in halves:
            while half.replacement_nodes and not half.full:
                node_id, node = half.replacement_nodes.popitem()
                half.nodes[node_id] = node
        return halves


class _Health:
    __slots__ = ("failures", "last_failure", "last_seen")

    def __init__(self, now: float) -> None:
        self.failures = 0
        self.last_seen = now
        self.last_failure: float | None = None


class RoutingTable:
    """Contacts of one node in k-buckets over the 160-bit XOR space; no I/O, no clock.

    ``k`` contacts per bucket, ``replacement_cache`` waiting contacts per bucket (default k),
    a contact dropped after ``max_failures`` consecutive failures.  ``now`` is the time the
    buckets start from (for refresh).  Call :meth:`update` for every peer heard from directly
    (its id comes from its verified certificate), never for contacts merely named in a reply.
    """

    def __init__(
        self,
        local_id: bytes,
        *,
        k: int = DEFAULT_K,
        replacement_cache: int | None = None,
        max_failures: int = DEFAULT_MAX_FAILURES,
        now: float = 0.0,
    ) -> None:
        if k < 1 or max_failures < 1 or (replacement_cache is not None and replacement_cache < 0):
            raise LocalProtocolError(
                f"routing table needs k >= 1, max_failures >= 1, replacement_cache >= 0; got "
                f"k={k}, max_failures={max_failures}, replacement_cache={replacement_cache}"
            )
        self.local_id: NodeId = check_node_id(local_id, "the local id")
        self.k = k
        self.max_failures = max_failures
        self.replacement_cache = k if replacement_cache is None else replacement_cache
        self.buckets: list[Bucket] = [Bucket(0, ID_SPACE, k, self.replacement_cache, now)]
        self._local_long = long_id(self.local_id)
        self._health: dict[bytes, _Health] = {}  # contacts in buckets and in replacement caches
        self._stale: set[bytes] = set()  # ids whose health shows failures: closest() skips them
        self._pinging: set[bytes] = set()

    # -- queries -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(bucket.nodes) for bucket in self.buckets)

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, bytes) and self.get(node_id) is not None

    def get(self, node_id: bytes) -> Contact | None:
        """The stored contact with this id, or None (waiting contacts are not stored ones)."""
        return self.bucket_for(node_id).nodes.get(node_id)

    def bucket_for(self, node_id: bytes) -> Bucket:
        """The bucket whose range holds ``node_id``."""
        return self.buckets[self._index(long_id(check_node_id(node_id)))]

    def contacts(self) -> list[Contact]:
        """Every stored contact, bucket by bucket, least recently seen first within a bucket."""
        return [node for bucket in self.buckets for node in bucket.nodes.values()]

    def replacements(self) -> list[Contact]:
        """Every contact waiting in a replacement cache."""
        return [node for bucket in self.buckets for node in bucket.replacement_nodes.values()]

    def liveness(self, node_id: bytes) -> Liveness | None:
        """Failures and times for a stored or waiting contact, or None if unknown."""
        health = self._health.get(node_id)
        if health is None:
            return None
        return Liveness(health.failures, health.last_seen, health.last_failure)

    def closest(
        self,
        target: bytes,
        count: int | None = None,
        exclude: Iterable[bytes] = (),
        *,
        include_stale: bool = True,
    ) -> list[Contact]:
        """The ``count`` (default k) stored contacts nearest ``target`` by XOR, nearest first,
        leaving out the ids in ``exclude`` (and stale contacts unless ``include_stale``).

        Exact: buckets are prefix-aligned, so each maps to a disjoint interval of distances and
        visiting them in interval order is enough.  Answer FIND_NODE with
        ``include_stale=False``: after peers vanish, a reply padded with dead contacts hides
        the live peers just beyond the k nearest from every lookup."""
        wanted = self.k if count is None else count
        key = long_id(check_node_id(target, "the target"))
        skip = set(exclude)
        if not include_stale:
            skip.update(self._stale)
        found: list[Contact] = []
        if wanted <= 0:
            return found
        order = sorted(self.buckets, key=lambda b: (b.range[0] ^ key) & -(b.range[1] - b.range[0]))
        for bucket in order:
            nodes = [node for node in bucket.nodes.values() if node.id not in skip]
            nodes.sort(key=lambda node: node.long_id ^ key)
            found.extend(nodes[: wanted - len(found)])
            if len(found) >= wanted:
                break
        return found

    def buckets_to_refresh(self, now: float, interval: float, rng: random.Random) -> list[NodeId]:
        """A random target id in each bucket not refreshed for ``interval`` seconds.

        The driver looks each target up and calls :meth:`mark_refreshed` when it does."""
        return [
            id_from_long(rng.randrange(*bucket.range))
            for bucket in self.buckets
            if now - bucket.last_updated >= interval
        ]

    # -- commands ------------------------------------------------------------------------------

    def mark_refreshed(self, target: bytes, now: float) -> None:
        """Record that a lookup for ``target`` ran at ``now`` (refreshes its bucket)."""
        self.bucket_for(target).touch_last_updated(now)

    def update(self, contact: Contact, now: float) -> Update:
        """Record that ``contact`` was heard from at ``now``; see :class:`UpdateKind`.

        For PING_NEEDED the driver must ping ``Update.ping`` and call :meth:`ping_result`.
        Raises :class:`LocalProtocolError` if ``contact`` is not a :class:`Contact`.
        """
        if not isinstance(contact, Contact):
            raise LocalProtocolError(f"update() takes a Contact, got {type(contact).__name__}")
        if contact.id == self.local_id:
            return Update(UpdateKind.IGNORED)
        index = self._index(contact.long_id)
        bucket = self.buckets[index]
        if contact.id in bucket.nodes:
            bucket.add_node(contact)
            self._heard(contact.id, now)
            return Update(UpdateKind.REFRESHED)
        while bucket.full and bucket.covers(self._local_long):
            self._split(index)
            index = self._index(contact.long_id)
            bucket = self.buckets[index]
        self._heard(contact.id, now)
        if not bucket.full:
            bucket.add_node(contact)
            return Update(UpdateKind.ADDED)
        pushed_out = bucket.wait(contact)
        if pushed_out is not None:
            del self._health[pushed_out.id]
            self._stale.discard(pushed_out.id)
        if any(node_id in self._pinging for node_id in bucket.nodes):
            return Update(UpdateKind.QUEUED)
        oldest: Contact = next(iter(bucket.nodes.values()))
        self._pinging.add(oldest.id)
        return Update(UpdateKind.PING_NEEDED, oldest)

    def record_success(self, node_id: bytes, now: float) -> bool:
        """A known contact answered at ``now``: no longer stale, most recently seen.

        Returns False (and does nothing) if the id is neither stored nor waiting."""
        bucket = self.bucket_for(node_id)
        contact = bucket.nodes.get(node_id) or bucket.replacement_nodes.get(node_id)
        if contact is None:
            return False
        bucket.add_node(contact)
        self._heard(node_id, now)
        return True

    def record_failure(self, node_id: bytes, now: float) -> bool:
        """A request to ``node_id`` failed at ``now`` (timeout, refused, broken).

        A stored contact becomes stale; after ``max_failures`` consecutive failures it is
        dropped and the most recently seen waiting contact takes its place.  A waiting contact
        is forgotten at once.  Returns True if a stored contact was dropped."""
        bucket = self.bucket_for(node_id)
        health = self._health.get(node_id)
        if node_id in bucket.replacement_nodes:
            del bucket.replacement_nodes[node_id]
            self._health.pop(node_id, None)
            self._stale.discard(node_id)
            return False
        if health is None or node_id not in bucket.nodes:
            return False
        health.failures += 1
        health.last_failure = now
        self._stale.add(node_id)
        if health.failures < self.max_failures:
            return False
        self._drop(bucket, node_id)
        return True

    def ping_result(self, node_id: bytes, alive: bool, now: float) -> bool:
        """Resolve a PING_NEEDED: an answer refreshes the contact (the newcomer keeps waiting);
        no answer counts as one failure.  Returns True if the contact was dropped."""
        self._pinging.discard(node_id)
        if alive:
            self.record_success(node_id, now)
            return False
        return self.record_failure(node_id, now)

    def remove(self, node_id: bytes) -> bool:
        """Drop a contact now, whatever its health (it said goodbye, its certificate was
        revoked); a waiting contact takes its place.  Returns True if it was stored."""
        bucket = self.bucket_for(node_id)
        if node_id in bucket.replacement_nodes:
            del bucket.replacement_nodes[node_id]
            self._health.pop(node_id, None)
            self._stale.discard(node_id)
        if node_id not in bucket.nodes:
            return False
        self._drop(bucket, node_id)
        return True

    # -- internals -----------------------------------------------------------------------------

    def _index(self, value: int) -> int:
        return bisect_right(self.buckets, value, key=lambda bucket: bucket.range[0]) - 1

    def _split(self, index: int) -> None:
        self.buckets[index : index + 1] = self.buckets[index].split()

    def _heard(self, node_id: bytes, now: float) -> None:
        health = self._health.get(node_id)
        if health is None:
            self._health[node_id] = _Health(now)
        else:
            health.failures = 0
            health.last_seen = now
            self._stale.discard(node_id)
        self._pinging.discard(node_id)

    def _drop(self, bucket: Bucket, node_id: bytes) -> None:
        del bucket.nodes[node_id]
        self._health.pop(node_id, None)
        self._stale.discard(node_id)
        self._pinging.discard(node_id)
        if bucket.replacement_nodes:
            waiting_id, waiting = bucket.replacement_nodes.popitem()
            bucket.nodes[waiting_id] = waiting
            self._health[waiting_id].failures = 0
            self._stale.discard(waiting_id)
