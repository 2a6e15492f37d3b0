"""Contacts: what the core knows about another peer, and the XOR metric between ids.

Why a subclass of ``kademlia.node.Node``: the package's structures (``KBucket``, ``NodeHeap``)
read ``id``, ``long_id`` and ``distance_to`` from whatever they hold, so a ``Contact`` *is* a
``Node`` and they keep working unchanged.  Unlike ``Node`` it is an immutable value (a frozen,
slotted dataclass): the routing table and a lookup can share one ``Contact`` without either
mutating it, and everything that changes about a peer over time (failures, when it was last seen)
lives in the table, not on the contact.  ``Node`` itself has no ``__slots__``, so instances still
carry an (empty) ``__dict__``; freezing is what matters.

The datacenter and region come from the peer's verified certificate (the net layer reads them);
the core only carries them so that placement can use lookup results directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from kademlia.node import Node

from p2pstore.errors import LocalProtocolError
from p2pstore.identity.nodeid import NODE_ID_BYTES, NodeId, short_id

ID_BITS = 8 * NODE_ID_BYTES
"""Bits in a node id: the Kademlia id space is ``[0, 2**ID_BITS)``."""

ID_SPACE = 1 << ID_BITS

MAX_ADDRESS_CHARS = 255
"""Longest address a contact may carry ("host:port" or an in-memory transport name)."""


def check_node_id(node_id: bytes, what: str = "node id") -> NodeId:
    """Return ``node_id`` typed as a :data:`NodeId`.

    Raises :class:`LocalProtocolError` unless it is ``bytes`` of exactly 20 bytes (ids reaching
    the core were already checked by the identity or wire layer, so a bad one is a bug here).
    """
    if not isinstance(node_id, bytes) or len(node_id) != NODE_ID_BYTES:
        raise LocalProtocolError(
            f"{what} must be {NODE_ID_BYTES} bytes, got {type(node_id).__name__} "
            f"{node_id!r:.60}; build ids with p2pstore.identity.nodeid"
        )
    return NodeId(node_id)


def long_id(node_id: bytes) -> int:
    """A node id as the unsigned integer the XOR metric works on (big-endian)."""
    return int.from_bytes(node_id, "big")


def id_from_long(value: int) -> NodeId:
    """The inverse of :func:`long_id`; raises :class:`LocalProtocolError` outside the id space."""
    if not 0 <= value < ID_SPACE:
        raise LocalProtocolError(f"{value} is outside the {ID_BITS}-bit id space")
    return NodeId(value.to_bytes(NODE_ID_BYTES, "big"))


def xor_distance(a: bytes, b: bytes) -> int:
    """The Kademlia distance between two ids."""
    return long_id(a) ^ long_id(b)


@dataclasses.dataclass(frozen=True, slots=True)
class Contact(Node):  # type: ignore[misc]  # kademlia is untyped: Node is Any to mypy
    """A peer as the routing table and lookups see it: id, address, datacenter, region.

    Two contacts are equal when all four fields are; tables and lookups key them by ``id``.
    Raises :class:`LocalProtocolError` when a field is malformed.
    """

    id: NodeId
    address: str
    datacenter: str
    region: str
    long_id: int = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_node_id(self.id, "a contact's id")
        for name in ("address", "datacenter", "region"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > MAX_ADDRESS_CHARS:
                raise LocalProtocolError(
                    f"a contact's {name} must be a non-empty string of at most "
                    f"{MAX_ADDRESS_CHARS} characters, got {value!r:.80}"
                )
        object.__setattr__(self, "long_id", long_id(self.id))

    def distance_to(self, node: Node) -> int:
        """XOR distance to another ``Node`` (a contact, or a bare target ``Node``)."""
        return int(self.long_id ^ node.long_id)

    def same_home_as(self, node: Node) -> bool:
        """True when ``node`` is a contact with the same address (replaces ``Node``'s ip/port)."""
        return isinstance(node, Contact) and node.address == self.address

    def __iter__(self) -> Iterator[str | bytes]:
        return iter((self.id, self.address, self.datacenter, self.region))

    def __str__(self) -> str:
        return f"{short_id(self.id)}@{self.address}"


def target_node(target: bytes) -> Node:
    """A bare ``kademlia.node.Node`` for a target id (what ``NodeHeap`` measures from)."""
    return Node(check_node_id(target, "a lookup target"))
