"""Layer 3: the protocol's decisions as pure state machines: inputs and ``now`` in, actions out."""

from p2pstore.core.contact import Contact, xor_distance
from p2pstore.core.lookup import Lookup, LookupResult
from p2pstore.core.routing import Liveness, RoutingTable, Update, UpdateKind

__all__ = [
    "Contact",
    "Liveness",
    "Lookup",
    "LookupResult",
    "RoutingTable",
    "Update",
    "UpdateKind",
    "xor_distance",
]
