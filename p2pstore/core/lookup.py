"""Iterative parallel Kademlia lookups as a state machine: replies in, queries out.

Strategy: a :class:`Lookup` never sends or waits.  The driver asks :meth:`Lookup.next_queries`
whom to query, sends FIND_NODE (or FIND_VALUE) to each with its own deadline, and reports every
outcome with :meth:`on_reply`, :meth:`on_value` or :meth:`on_failure` (timeouts included), then
asks again, until :attr:`done`.  A trio node runs this with a task per query; the simulator with
an event heap.  Outcomes for queries still in flight when the lookup finishes are ignored.

The candidates sit in a ``kademlia.node.NodeHeap`` (with O(1) membership, see
:class:`_Candidates`) whose visible part is the k closest candidates that have not failed:
removing a failed one makes the next closest visible, which is how failures are replaced.

Termination rule (stricter than the package's ``SpiderCrawl``, which stops when one round brings
nothing new): the lookup is done when each of the k closest candidates that have not failed has
answered.  At most ``alpha`` queries are in flight; each node is queried at most once; and at most
``max_queries`` queries are sent in all (default ``8 * k``), so a lookup terminates on every input,
even when liars answer with endless made-up contacts.  When the budget runs out, the lookup ends
once nothing is in flight and reports ``complete=False``.

Hops: every candidate has a discovery depth (seeds 0; a contact first named in a reply from a
node of depth d has depth d + 1).  ``hops`` is 1 + the largest depth in the result, i.e. the
number of round trips on the longest chain of replies that led to, and confirmed, the final set
(for a found value, to the node that returned it).  A lookup answered by its seeds has 1 hop.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterable, Sequence

from kademlia.node import NodeHeap

from p2pstore.core.contact import Contact, check_node_id, target_node
from p2pstore.core.routing import DEFAULT_K
from p2pstore.errors import LocalProtocolError
from p2pstore.identity.nodeid import NodeId, short_id

DEFAULT_ALPHA = 3
QUERY_BUDGET_PER_K = 8


@dataclasses.dataclass(frozen=True, slots=True)
class LookupResult:
    """What a finished lookup found.

    ``closest``: the nodes nearest the target that answered, nearest first (at most k; for a
    found value, those that answered without it, e.g. to cache it on).  ``queried``: queries
    sent; ``failed``: queries that failed; ``complete``: False if the query budget ran out.
    """

    target: NodeId
    closest: tuple[Contact, ...]
    value: bytes | None
    value_from: Contact | None
    queried: int
    failed: int
    hops: int
    complete: bool

    def __post_init__(self) -> None:
        if (self.value is None) != (self.value_from is None):
            raise LocalProtocolError("a lookup result has a value exactly when it has value_from")
        if min(self.queried, self.failed, self.hops) < 0 or self.failed > self.queried:
            raise LocalProtocolError(
                f"inconsistent lookup counts: queried={self.queried} failed={self.failed} "
                f"hops={self.hops}"
            )


class _Candidates(NodeHeap):  # type: ignore[misc]  # kademlia is untyped: NodeHeap is Any
    """``NodeHeap`` with a membership index: the package's ``__contains__`` scans the heap,
    which makes every push O(n)."""

    def __init__(self, target: bytes, maxsize: int) -> None:
        super().__init__(target_node(target), maxsize)
        self.by_id: dict[bytes, Contact] = {}

    def push(self, nodes: Contact | list[Contact]) -> None:
        batch: list[Contact] = nodes if isinstance(nodes, list) else [nodes]
        for node in batch:
            if node.id not in self.by_id:
                self.by_id[node.id] = node
                heapq.heappush(self.heap, (self.node.distance_to(node), node))

    def remove(self, peers: Iterable[bytes]) -> None:
        gone = [peer for peer in peers if peer in self.by_id]
        for peer in gone:
            del self.by_id[peer]
        super().remove(gone)

    def __contains__(self, node: object) -> bool:
        return getattr(node, "id", None) in self.by_id

    def get_node(self, node_id: bytes) -> Contact | None:
        return self.by_id.get(node_id)

    def visible(self) -> list[Contact]:
        """The ``maxsize`` nearest candidates, nearest first."""
        return list(self)


class Lookup:
    """One iterative lookup of ``target`` (FIND_NODE, or FIND_VALUE if ``find_value``).

    ``seeds`` are the local table's closest contacts; ``local_id`` is never queried or
    returned.  Raises :class:`LocalProtocolError` on bad parameters.
    """

    def __init__(
        self,
        target: bytes,
        seeds: Iterable[Contact],
        *,
        local_id: bytes,
        k: int = DEFAULT_K,
        alpha: int = DEFAULT_ALPHA,
        find_value: bool = False,
        max_queries: int | None = None,
    ) -> None:
        budget = QUERY_BUDGET_PER_K * k if max_queries is None else max_queries
        if k < 1 or alpha < 1 or budget < 1:
            raise LocalProtocolError(
                f"a lookup needs k, alpha and max_queries >= 1; got k={k}, alpha={alpha}, "
                f"max_queries={budget}"
            )
        self.target: NodeId = check_node_id(target, "a lookup target")
        self.local_id: NodeId = check_node_id(local_id, "the local id")
        self.k = k
        self.alpha = alpha
        self.find_value = find_value
        self.max_queries = budget
        self._candidates = _Candidates(self.target, k)
        self._depth: dict[bytes, int] = {}
        self._in_flight: dict[bytes, Contact] = {}
        self._answered: set[bytes] = set()
        self._failed: set[bytes] = set()
        self._queried = 0
        self._value: bytes | None = None
        self._value_from: Contact | None = None
        self._done = False
        self._learn(seeds, depth=0)
        self._check_done()

    # -- state ---------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the lookup has its result; later outcomes are ignored."""
        return self._done

    @property
    def in_flight(self) -> tuple[Contact, ...]:
        """Contacts queried whose outcome has not been reported yet."""
        return tuple(self._in_flight.values())

    def result(self) -> LookupResult:
        """The result; raises :class:`LocalProtocolError` if the lookup is not done."""
        if not self._done:
            raise LocalProtocolError(
                f"lookup of {short_id(self.target)} is not done: keep feeding it outcomes"
            )
        ranked = [node for _, node in sorted(self._candidates.heap)]
        answered = [node for node in ranked if node.id in self._answered][: self.k]
        if self._value_from is not None:
            hops = self._depth[self._value_from.id] + 1
        else:
            hops = 1 + max((self._depth[node.id] for node in answered), default=-1)
        return LookupResult(
            target=self.target,
            closest=tuple(answered),
            value=self._value,
            value_from=self._value_from,
            queried=self._queried,
            failed=len(self._failed),
            hops=hops,
            complete=self._value_from is not None or self._top_answered(),
        )

    # -- driver interface ----------------------------------------------------------------------

    def next_queries(self) -> list[Contact]:
        """Contacts to query now (each at most once, at most ``alpha`` in flight); they count as
        in flight until their outcome is reported.  Empty when done or waiting for replies."""
        if self._done:
            return []
        slots = min(self.alpha - len(self._in_flight), self.max_queries - self._queried)
        chosen: list[Contact] = []
        for node in self._candidates.visible():
            if len(chosen) >= slots:
                break
            if node.id not in self._candidates.contacted:
                chosen.append(node)
        for node in chosen:
            self._candidates.mark_contacted(node)
            self._in_flight[node.id] = node
        self._queried += len(chosen)
        return chosen

    def on_reply(self, node_id: bytes, contacts: Sequence[Contact]) -> None:
        """``node_id`` answered with ``contacts`` (at most the k nearest the target are used;
        the local id, failed nodes and known ids are skipped)."""
        node = self._settle(node_id)
        if node is None:
            return
        self._answered.add(node_id)
        nearest = heapq.nsmallest(
            self.k,
            {contact.id: contact for contact in contacts}.values(),
            key=self._candidates.node.distance_to,
        )
        self._learn(nearest, depth=self._depth[node_id] + 1)
        self._check_done()

    def on_value(self, node_id: bytes, value: bytes) -> None:
        """``node_id`` returned the value (already verified by the driver): the lookup is done.

        Raises :class:`LocalProtocolError` if this is not a FIND_VALUE lookup."""
        if not self.find_value:
            raise LocalProtocolError("on_value() on a FIND_NODE lookup; use on_reply()")
        node = self._settle(node_id)
        if node is None:
            return
        self._value = value
        self._value_from = node
        self._done = True

    def on_failure(self, node_id: bytes) -> None:
        """The query to ``node_id`` timed out or failed; the next closest candidate replaces it."""
        if self._settle(node_id) is None:
            return
        self._failed.add(node_id)
        self._candidates.remove([node_id])
        self._check_done()

    # -- internals -----------------------------------------------------------------------------

    def _settle(self, node_id: bytes) -> Contact | None:
        node = self._in_flight.pop(node_id, None)
        if node is None and not self._done:
            raise LocalProtocolError(
                f"lookup of {short_id(self.target)} has no query in flight to {node_id!r:.50}: "
                "report each contact from next_queries() exactly once"
            )
        return None if self._done else node

    def _learn(self, contacts: Iterable[Contact], depth: int) -> None:
        fresh: list[Contact] = []
        for contact in contacts:
            if not isinstance(contact, Contact):
                raise LocalProtocolError(f"lookups take Contacts, got {type(contact).__name__}")
            known = contact.id in self._candidates.by_id or contact.id in self._failed
            if contact.id == self.local_id or known:
                continue
            self._depth[contact.id] = depth
            fresh.append(contact)
        self._candidates.push(fresh)

    def _top_answered(self) -> bool:
        return all(node.id in self._answered for node in self._candidates.visible())

    def _check_done(self) -> None:
        exhausted = self._queried >= self.max_queries and not self._in_flight
        self._done = self._done or exhausted or self._top_answered()
